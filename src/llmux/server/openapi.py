"""``/openapi.json`` that describes what the server does.

Routes parse their own bodies (``server/body.py``: strict JSON, errors as 400 in the
API's shape), so FastAPI cannot see them: :func:`request_body` declares a route's body
model for the document, and :func:`openapi` adds the models' schemas and documents 400
where FastAPI would say 422.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel

REF = "#/components/schemas/{model}"


def schema_name(model: type[BaseModel]) -> str:
    """Unique across the wire modules: ``ollama.wire.ChatBody``, ``conversations.CreateBody``."""
    tail = ".".join(model.__module__.split(".")[-2:]).removeprefix("protocols.")
    return f"{tail}.{model.__name__}"


def request_body(model: type[BaseModel], required: bool = True) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads a JSON body of ``model``."""
    ref = {"$ref": REF.format(model=schema_name(model))}
    content = {"application/json": {"schema": ref}}
    return {"requestBody": {"required": required, "content": content}}


def openapi(app: FastAPI, models: list[type[BaseModel]]) -> dict[str, Any]:
    """The document, built once: the body models' schemas in ``components``, 400 (never
    422) for a bad request, and an operation id per method."""
    if app.openapi_schema:
        return app.openapi_schema
    routes = [r for r in app.routes if not isinstance(r, APIRoute) or r.include_in_schema]
    doc = get_openapi(title=app.title, version=app.version, routes=routes)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for model in models:
        schema = model.model_json_schema(ref_template=REF)
        for name, sub in schema.pop("$defs", {}).items():
            schemas.setdefault(name, sub)
        schemas[schema_name(model)] = schema
    for path, operations in doc.get("paths", {}).items():
        for method, operation in operations.items():
            operation["operationId"] = (
                f"{method}_{path}".replace("/", "_").replace("{", "").replace("}", "")
            )
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)  # the server answers 400, in the API's own shape
            responses.setdefault(
                "400", {"description": "Invalid request, in the API's error shape"}
            )
    app.openapi_schema = doc
    return doc

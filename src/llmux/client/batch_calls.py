"""What the Batch API's SDK calls send (``/v1/files``, ``/v1/batches``; docs/batch.md),
shared by the sync and async clients, as ``calls.py`` is for the native API."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, Literal
from urllib.parse import quote

from llmux.client.calls import Call, _model
from llmux.client.types import Batch, BatchList, FileDeleted, FileList, FileObject

FILES = "/v1/files"
BATCHES = "/v1/batches"
Endpoint = Literal["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/moderations"]
ENDPOINTS: tuple[str, ...] = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/moderations",
)
Order = Literal["asc", "desc"]
FileSource = str | os.PathLike[str] | bytes | IO[bytes]
DEFAULT_POLL_S = 2.0


def _params(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def _id(prefix: str, id: str, what: str, tail: str = "") -> str:
    if not id:
        raise ValueError(f"a {what} id is required; `llmux batch list` shows them")
    return f"{prefix}/{quote(id, safe='')}{tail}"


def file_upload(source: bytes | IO[bytes], filename: str, purpose: str) -> Call[FileObject]:
    """``source`` is the bytes, or an open binary file (read as the request is sent)."""
    files = {"file": (filename, source, "application/jsonl")}
    return Call("POST", FILES, _model(FileObject), files=files, data={"purpose": purpose})


def upload_name(source: FileSource, filename: str | None) -> str:
    if filename:
        return filename
    if isinstance(source, str | os.PathLike):
        return Path(os.fspath(source)).name
    name = getattr(source, "name", None)
    return Path(name).name if isinstance(name, str) else "batch.jsonl"


def file_list(
    purpose: str | None, after: str | None, limit: int | None, order: Order | None
) -> Call[FileList]:
    params = _params(purpose=purpose, after=after, limit=limit, order=order)
    return Call("GET", FILES, _model(FileList), params=params)


def file_get(id: str) -> Call[FileObject]:
    return Call("GET", _id(FILES, id, "file"), _model(FileObject))


def file_delete(id: str) -> Call[FileDeleted]:
    return Call("DELETE", _id(FILES, id, "file"), _model(FileDeleted))


def file_content(id: str) -> Call[None]:
    """The raw bytes; the clients read them themselves (whole, or to a path)."""
    return Call("GET", _id(FILES, id, "file", "/content"), lambda _: None)


def batch_create(
    input_file_id: str,
    endpoint: str,
    completion_window: str,
    metadata: Mapping[str, str] | None,
) -> Call[Batch]:
    if not input_file_id:
        raise ValueError("input_file_id is required: upload the requests with files.create")
    body: dict[str, Any] = {
        "input_file_id": input_file_id,
        "endpoint": endpoint,
        "completion_window": completion_window,
    }
    if metadata:
        body["metadata"] = dict(metadata)
    return Call("POST", BATCHES, _model(Batch), body)


def batch_get(id: str) -> Call[Batch]:
    return Call("GET", _id(BATCHES, id, "batch"), _model(Batch))


def batch_list(after: str | None, limit: int | None) -> Call[BatchList]:
    return Call("GET", BATCHES, _model(BatchList), params=_params(after=after, limit=limit))


def batch_cancel(id: str) -> Call[Batch]:
    return Call("POST", _id(BATCHES, id, "batch", "/cancel"), _model(Batch))

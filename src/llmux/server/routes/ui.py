"""The web chat UI at ``/ui``: build-free static assets shipped in the package.

``/ui`` redirects to ``/ui/`` so that the page's relative URLs (its assets and the
``../api/...`` calls) resolve under any path prefix a reverse proxy adds. Files come
from ``server/ui/`` through Starlette's :class:`StaticFiles`, which refuses paths
outside that folder and answers ``ETag``/``Last-Modified`` revalidation with 304;
every answer carries ``Cache-Control: no-cache`` (always revalidate, so an upgrade is
picked up at once) and a strict Content-Security-Policy: the page loads nothing from
other origins and runs no inline script.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from starlette.exceptions import HTTPException
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles

UI_DIR = Path(__file__).resolve().parent.parent / "ui"

SECURITY_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'; "
        "form-action 'self'"
    ),
}

router = APIRouter(include_in_schema=False)
# check_dir=False: a missing folder (a broken install) answers 404 per request
# instead of failing the whole app at import time.
_files = StaticFiles(directory=UI_DIR, check_dir=False)


@router.api_route("/ui", methods=["GET", "HEAD"])
async def ui_redirect(request: Request) -> Response:
    target = request.url.replace(path=request.url.path + "/")
    return RedirectResponse(str(target), status_code=308)


@router.api_route("/ui/", methods=["GET", "HEAD"])
async def ui_index(request: Request) -> Response:
    return await _serve("index.html", request)


@router.api_route("/ui/{path:path}", methods=["GET", "HEAD"])
async def ui_asset(path: str, request: Request) -> Response:
    if not path or path.endswith("/"):
        raise HTTPException(404)
    return await _serve(path, request)


async def _serve(path: str, request: Request) -> Response:
    # StaticFiles raises HTTPException(404) for unknown names and names that
    # resolve outside UI_DIR; the app's error handlers render it.
    response = await _files.get_response(path, request.scope)
    response.headers.update(SECURITY_HEADERS)
    return response

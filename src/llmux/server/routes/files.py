"""``/v1/files``: upload, list, show, download and delete the Batch API's files, in the
OpenAI API's shapes (docs/batch.md)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse

from llmux.batch.files import Files, file_object
from llmux.errors import InvalidRequest, NotFound
from llmux.server.deps import context, services

router = APIRouter(prefix="/v1/files", tags=["files"])


def files(request: Request) -> Files:
    found = services(request).files
    if found is None:
        raise NotFound("this server has no file store (no database)")
    return found


@router.post("")
async def upload(request: Request) -> dict[str, Any]:
    try:
        form = await request.form(max_files=1, max_fields=8)
    except HTTPException as exc:  # a malformed multipart body
        raise InvalidRequest(f"the upload is not a valid multipart form: {exc.detail}") from None
    try:
        upload, purpose = form.get("file"), form.get("purpose")
        if not isinstance(upload, UploadFile):
            raise InvalidRequest("send the file as multipart form field 'file'", param="file")
        if not isinstance(purpose, str) or not purpose:
            raise InvalidRequest("the form field 'purpose' is required ('batch')", param="purpose")
        row = await files(request).upload(context(request), upload.file, upload.filename or "", purpose)  # fmt: skip
        return file_object(row)
    finally:
        await form.close()


@router.get("")
async def listing(
    request: Request,
    purpose: str | None = None,
    after: str | None = None,
    limit: int = Query(10_000),
    order: str = "desc",
) -> dict[str, Any]:
    rows, more = await files(request).list(
        context(request), purpose=purpose, after=after, limit=limit, order=order
    )
    data = [file_object(r) for r in rows]
    return {
        "object": "list", "data": data, "has_more": more,
        "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None,
    }  # fmt: skip


@router.get("/{file_id}")
async def show(request: Request, file_id: str) -> dict[str, Any]:
    return file_object(await files(request).get(context(request), file_id))


@router.get("/{file_id}/content")
async def content(request: Request, file_id: str) -> FileResponse:
    row, path = await files(request).content(context(request), file_id)
    return FileResponse(path, media_type="application/octet-stream", filename=row.filename)


@router.delete("/{file_id}")
async def delete(request: Request, file_id: str) -> dict[str, Any]:
    await files(request).delete(context(request), file_id)
    return {"id": file_id, "object": "file", "deleted": True}

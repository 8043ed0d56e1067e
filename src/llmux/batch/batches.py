"""Batches (``/v1/batches``), request-free: create, show, list and cancel, in the OpenAI
API's shapes. Making a batch only records it (status ``validating``); the worker
(``batch/worker.py``) of some replica validates and runs it. Every caller sees only its
own batches; the lines run with the rights of the caller that made the batch.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from llmux.batch.files import Files
from llmux.batch.lines import ENDPOINTS
from llmux.core.context import Principal, RequestContext, new_request_id
from llmux.errors import InvalidRequest, NotFound
from llmux.history import owner_of
from llmux.protocols.openai.wire import BatchBody
from llmux.storage.batches import STAMPS, BatchRow, SqlBatches, dumps

if TYPE_CHECKING:
    from llmux.batch.worker import BatchWorker

WINDOWS = {"24h": 24 * 3600}
MAX_METADATA = 16  # pairs; keys up to 64 characters, values up to 512, as OpenAI's
CANCELLABLE = ("validating", "in_progress")


def batch_object(row: BatchRow) -> dict[str, Any]:
    """A batch as the OpenAI API shows it."""
    errors = {"object": "list", "data": json.loads(row.errors)} if row.errors else None
    out: dict[str, Any] = {
        "id": row.id, "object": "batch", "endpoint": row.endpoint, "errors": errors,
        "input_file_id": row.input_file_id, "completion_window": row.completion_window,
        "status": row.status, "output_file_id": row.output_file_id,
        "error_file_id": row.error_file_id, "created_at": row.created_at,
        "expires_at": row.expires_at,
    }  # fmt: skip
    out.update({stamp: getattr(row, stamp) for stamp in STAMPS})
    out["request_counts"] = {"total": row.total, "completed": row.completed, "failed": row.failed}
    out["metadata"] = json.loads(row.metadata) if row.metadata else None
    out["usage"] = {
        "input_tokens": row.input_tokens, "output_tokens": row.output_tokens,
        "total_tokens": row.input_tokens + row.output_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 0},
    }  # fmt: skip
    return out


def principal_json(p: Principal) -> str:
    return dumps({
        "kind": p.kind, "id": p.id, "name": p.name, "scopes": sorted(p.scopes),
        "models": list(p.models), "user_id": p.user_id,
    })  # fmt: skip


def principal_from(text: str) -> Principal:
    v = json.loads(text)
    return Principal(
        kind=v["kind"], id=v["id"], name=v["name"], scopes=frozenset(v["scopes"]),
        models=tuple(v["models"]), user_id=v["user_id"],
    )  # fmt: skip


class Batches:
    def __init__(self, repo: SqlBatches, files: Files, worker: BatchWorker | None) -> None:
        self.repo = repo
        self.files = files
        self.worker = worker  # None: this replica runs no batches (``[batch] worker``)

    def start(self) -> None:
        if self.worker is not None:
            self.worker.start()

    async def aclose(self) -> None:
        if self.worker is not None:
            await self.worker.aclose()

    async def create(self, ctx: RequestContext, body: BatchBody) -> BatchRow:
        if body.endpoint not in ENDPOINTS:
            raise InvalidRequest(
                f"endpoint {body.endpoint!r} is not one a batch can run; use one of "
                + ", ".join(ENDPOINTS), param="endpoint",
            )  # fmt: skip
        window = WINDOWS.get(body.completion_window)
        if window is None:
            raise InvalidRequest("completion_window must be '24h'", param="completion_window")
        _check_metadata(body.metadata)
        source = await self.files.get(ctx, body.input_file_id)  # 404 unless the caller's
        if source.purpose != "batch":
            raise InvalidRequest(
                f"file {source.id!r} has purpose {source.purpose!r}; a batch's input file is"
                " uploaded with purpose 'batch'", param="input_file_id",
            )  # fmt: skip
        now = int(time.time())
        row = BatchRow(
            id=f"batch_{new_request_id()}", owner=owner_of(ctx.principal),
            principal=principal_json(ctx.principal), endpoint=body.endpoint,
            input_file_id=source.id, completion_window=body.completion_window,
            status="validating", created_at=now, expires_at=now + window,
            metadata=dumps(body.metadata) if body.metadata is not None else None,
        )  # fmt: skip
        await self.repo.add(row)
        if self.worker is not None:
            self.worker.wake()
        return row

    async def get(self, ctx: RequestContext, batch_id: str) -> BatchRow:
        row = await self.repo.get(batch_id)
        if row is None or owner_of(ctx.principal) not in (None, row.owner):
            raise NotFound(f"no batch with id {batch_id!r}", param="batch_id")
        return row

    async def list(self, ctx: RequestContext, *, after: str | None, limit: int) -> tuple[list[BatchRow], bool]:  # fmt: skip
        if not 1 <= limit <= 100:
            raise InvalidRequest("limit is 1 to 100", param="limit")
        rows = await self.repo.list(owner_of(ctx.principal), after=after, limit=limit + 1)
        return rows[:limit], len(rows) > limit

    async def cancel(self, ctx: RequestContext, batch_id: str) -> BatchRow:
        """Ask the batch to stop: ``cancelling`` now, ``cancelled`` once the lines that
        are running have stopped and what finished is in its files."""
        row = await self.get(ctx, batch_id)
        if row.status in ("cancelling", "cancelled"):
            return row
        if not await self.repo.set_status(row.id, "cancelling", only_from=CANCELLABLE):
            found = await self.get(ctx, batch_id)
            if found.status not in ("cancelling", "cancelled"):
                raise InvalidRequest(
                    f"batch {batch_id!r} is {found.status}; only a validating or in-progress"
                    " batch can be cancelled", param="batch_id", status=409,
                )  # fmt: skip
            return found
        if self.worker is not None:
            self.worker.notice(row.id)
        return await self.get(ctx, batch_id)


def _check_metadata(metadata: dict[str, str] | None) -> None:
    if metadata is None:
        return
    if len(metadata) > MAX_METADATA:
        raise InvalidRequest(f"metadata holds at most {MAX_METADATA} pairs", param="metadata")
    for key, value in metadata.items():
        if len(key) > 64 or len(value) > 512:
            raise InvalidRequest(
                "metadata keys are at most 64 characters and values at most 512",
                param="metadata",
            )

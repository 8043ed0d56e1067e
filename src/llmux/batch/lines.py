"""A batch's lines: read from its input file, checked, and written back as output and
error lines in the OpenAI API's format. Pure apart from reading the file.

A line is ``{"custom_id", "method": "POST", "url", "body"}``. Two kinds of problems:

* the file's: a line without a usable ``custom_id``, or one that repeats another's. The
  output is matched to the input by ``custom_id``, so such a file fails validation, with
  each problem's line number in ``errors.data``;
* a line's own: not JSON, not an object, another method or url than the batch's, no
  ``body``. Such a line goes to the error file (with its line number) and the rest run.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmux.errors import InvalidRequest
from llmux.protocols.body import loads
from llmux.storage.batches import LineResult, dumps

ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/moderations")
MAX_CUSTOM_ID = 512  # characters
MAX_ERRORS = 1000  # validation errors listed in a failed batch's errors.data


@dataclass(frozen=True, slots=True)
class Problem:
    code: str
    message: str
    param: str | None = None


@dataclass(frozen=True, slots=True)
class Line:
    number: int  # in the file, counting from 1 (blank lines count, as an editor shows)
    custom_id: str | None
    body: dict[str, Any] | None = None
    problem: Problem | None = None  # why it cannot run; None: it can


def numbered(path: Path) -> Generator[tuple[int, bytes]]:
    """The file's non-blank lines with their numbers."""
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if raw.strip():
                yield number, raw


def parse(number: int, raw: bytes, endpoint: str) -> Line:
    try:
        value = loads(raw)
    except InvalidRequest as exc:
        return Line(number, None, problem=Problem("invalid_json_line", f"line {number}: {exc.message}"))  # fmt: skip
    if not isinstance(value, dict):
        return Line(number, None, problem=Problem("invalid_request", f"line {number} is not a JSON object"))  # fmt: skip
    custom_id = value.get("custom_id")
    cid = custom_id if isinstance(custom_id, str) else None
    method, url, body = value.get("method", "POST"), value.get("url"), value.get("body")
    if not isinstance(method, str) or method.upper() != "POST":
        return Line(number, cid, problem=Problem("invalid_method", f"line {number}: method is {method!r}; batch requests use POST", "method"))  # fmt: skip
    if url != endpoint:
        return Line(number, cid, problem=Problem(
            "mismatched_endpoint",
            f"line {number}: url {url!r} is not this batch's endpoint {endpoint!r}; a batch"
            " runs one endpoint", "url",
        ))  # fmt: skip
    if not isinstance(body, dict):
        return Line(number, cid, problem=Problem("invalid_request", f"line {number}: 'body' must be the request's JSON object", "body"))  # fmt: skip
    return Line(number, cid, body=body)


def file_problem(line: Line, seen: set[str]) -> dict[str, Any] | None:
    """What is wrong with the line for the file as a whole (``errors.data``), or None."""
    if line.problem is not None and line.problem.code == "invalid_json_line":
        return None  # a line's own problem: it has no custom_id to check
    if line.custom_id is None or not line.custom_id:
        return _error("missing_custom_id", "custom_id is missing or not a non-empty string", line.number)  # fmt: skip
    if len(line.custom_id) > MAX_CUSTOM_ID:
        return _error("invalid_custom_id", f"custom_id is longer than {MAX_CUSTOM_ID} characters", line.number)  # fmt: skip
    if line.custom_id in seen:
        return _error("duplicate_custom_id", f"custom_id {line.custom_id!r} is used by an earlier line; each line needs its own", line.number)  # fmt: skip
    seen.add(line.custom_id)
    return None


def check_file(path: Path, endpoint: str) -> tuple[int, list[dict[str, Any]], int]:
    """Read the whole file: its request count, the file's problems (at most
    MAX_ERRORS of them) and how many there were in all."""
    seen: set[str] = set()
    total, count = 0, 0
    errors: list[dict[str, Any]] = []
    for number, raw in numbered(path):
        total += 1
        problem = file_problem(parse(number, raw, endpoint), seen)
        if problem is not None:
            count += 1
            if len(errors) < MAX_ERRORS:
                errors.append(problem)
    return total, errors, count


def _error(code: str, message: str, line: int | None, param: str | None = "custom_id") -> dict[str, Any]:  # fmt: skip
    return {"code": code, "message": message, "param": param, "line": line}


# -- output and error lines -------------------------------------------------------------
def answered(line: Line, request_id: str, status: int, body: dict[str, Any]) -> LineResult:
    """A line whose request ran: a 2xx goes to the output file, anything else to the
    error file, both with the response as OpenAI writes it."""
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    record = {
        "id": f"batch_req_{request_id}", "custom_id": line.custom_id,
        "response": {"status_code": status, "request_id": request_id, "body": body},
        "error": None,
    }  # fmt: skip
    return LineResult(
        line.number, line.custom_id, 200 <= status < 300, dumps(record),
        _tokens(usage, "prompt_tokens"), _tokens(usage, "completion_tokens"),
    )  # fmt: skip


def refused(line: Line, request_id: str, problem: Problem) -> LineResult:
    """A line that never ran (its own problem, or the batch expired or was cancelled
    first): an error line with no response, naming the line."""
    record = {
        "id": f"batch_req_{request_id}", "custom_id": line.custom_id, "response": None,
        "error": {"code": problem.code, "message": problem.message, "line": line.number},
    }  # fmt: skip
    return LineResult(line.number, line.custom_id, False, dumps(record))


def _tokens(usage: Any, key: str) -> int:
    value = usage.get(key) if isinstance(usage, dict) else None
    return value if isinstance(value, int) and value >= 0 else 0

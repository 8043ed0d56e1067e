"""What one request line costs, against a plain stdlib log line in the same run: the
access log's record (every field of docs/observability.md's request line) through the
text and the JSON formatter, with the secret mask, into memory.

    .venv/bin/python bench/logs.py [--lines 20000]
"""

from __future__ import annotations

import argparse
import io
import logging
import time

from llmux.core.context import RequestContext
from llmux.observability.logs import FIELDS, JsonFormatter, TextFormatter, install
from llmux.policies import Operation, Outcome, Usage
from llmux.policies.access_log import request_fields


def per_line(formatter: logging.Formatter, fields: bool, lines: int) -> float:
    log = logging.Logger("bench.logs", logging.INFO)
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(formatter)
    log.addHandler(handler)
    ctx = RequestContext(api="openai", route="/v1/chat/completions", client="127.0.0.1")
    op = Operation("chat", "smollm2:135m", stream=True, backend="local")
    outcome = Outcome(Usage(120, 64, 96), "stop", 1.9, 0.2, served="smollm2:135m")
    began = time.perf_counter()
    for _ in range(lines):
        if fields:
            extra = {FIELDS: request_fields(ctx, op, outcome)}
            log.info("%s %s %d", "chat", op.model, 200, extra=extra)
        else:
            log.info("chat %s 200 prompt=%d completion=%d", op.model, 120, 64)
    return (time.perf_counter() - began) / lines * 1e6


def main(lines: int) -> None:
    install()  # every record carries the request id, as in `llmux serve`
    plain = per_line(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"), False, lines)  # fmt: skip
    print(f"plain stdlib line (baseline)      {plain:6.1f} µs")
    for name, formatter in (("text", TextFormatter()), ("json", JsonFormatter())):
        us = per_line(formatter, True, lines)
        print(f"request line, {name:4s} formatter      {us:6.1f} µs  ({us / plain:4.1f}x)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=20000)
    main(parser.parse_args().lines)

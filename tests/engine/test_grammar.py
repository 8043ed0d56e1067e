"""Schema grammars: output always parses and validates, whatever the model prefers.

The model test pushes the sampler hard toward raw control characters (every vocabulary
token holding one gets a large logit bias), so a grammar that admits them shows it on
nearly every run, however the model would word its reply."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from llmux.core.request import Tool
from llmux.core.tools import call_schema
from llmux.engine.batch import BatchLoop, Request
from llmux.engine.grammar import safe_classes, schema_gbnf
from llmux.engine.jobs import DoneEvent, Event, Job, ResolvedSampling, TextEvent
from tests.engine.test_scheduler import make_loop


def text(max_length: int = 8) -> dict[str, Any]:
    return {"type": "string", "maxLength": max_length}


RUN_TOOL = Tool(
    "run",
    "Run a shell script",
    {"type": "object", "properties": {"script": text()}, "required": ["script"]},
)
SCHEMAS: list[dict[str, Any]] = [
    {  # the reproduction: a title and a piece of code
        "type": "object",
        "properties": {"title": text(6), "code": text()},
        "required": ["title", "code"],
    },
    {
        "type": "object",
        "properties": {"lines": {"type": "array", "items": text(6), "minItems": 1, "maxItems": 2}},
        "required": ["lines"],
    },
    {
        "type": "object",
        "properties": {
            "quote": {
                "type": "object",
                "properties": {"said": text(), "by": text(4)},
                "required": ["said", "by"],
            }
        },
        "required": ["quote"],
    },
    {  # a pattern: its negated class and its dot
        "type": "object",
        "properties": {"tag": {"type": "string", "pattern": "^[^,]{1,6}.$"}},
        "required": ["tag"],
    },
    call_schema((RUN_TOOL,)),  # a forced tool call
]


def test_no_string_rule_admits_control_characters() -> None:
    for schema in SCHEMAS:
        grammar = schema_gbnf(schema)
        assert r'[^"\\]' not in grammar
        for line in grammar.splitlines():
            if line.startswith(("char ::=", "dot ::=")):
                assert r"\x00-\x1F" in line, line


def test_negated_pattern_classes_exclude_quotes_and_controls() -> None:
    assert safe_classes(r'"[^a]" [^a] [0-9]') == r'"[^a]" [^"\\\x7F\x00-\x1Fa] [0-9]'


@pytest.fixture(scope="module")
def loop() -> Iterator[BatchLoop]:
    batch = make_loop(8)
    yield batch
    batch.close()


@pytest.mark.model
@pytest.mark.timeout(600)  # about a minute on a quiet machine; several on a busy one
def test_200_seeded_schema_runs_parse_and_validate(loop: BatchLoop) -> None:
    model = loop.model
    controls = [
        t
        for t in range(model.n_vocab())
        if any(b < 0x20 or b == 0x7F for b in model.token_get_text(t).encode("utf-8", "replace"))
        or any(b < 0x20 or b == 0x7F for b in model.detokenize([t]))
    ]
    assert controls, "the vocabulary has tokens with control characters"
    bias = tuple((t, 8.0) for t in controls)
    runs = [(schema, seed) for schema in SCHEMAS for seed in range(40)]
    replies: list[list[str]] = [[] for _ in runs]
    ends: list[Event | None] = [None] * len(runs)
    done = threading.Semaphore(0)

    def emitter(i: int) -> Any:
        def emit(event: Event) -> None:
            if isinstance(event, TextEvent):
                replies[i].append(event.text)
            else:
                ends[i] = event
                done.release()

        return emit

    for i, (schema, seed) in enumerate(runs):
        job = Job(
            prompt="<|im_start|>user\nWrite a multi-line shell script with quotes and tabs."
            "<|im_end|>\n<|im_start|>assistant\n",
            sampling=ResolvedSampling(num_predict=96, temperature=1.0, seed=seed),
            format=schema,
            logit_bias=bias,
        )
        loop.submit(Request(job, emitter(i), threading.Event()))
    for _ in runs:
        assert done.acquire(timeout=600)
    bad = []
    for (schema, seed), parts, end in zip(runs, replies, ends, strict=True):
        assert isinstance(end, DoneEvent), end
        out = "".join(parts)
        try:
            jsonschema.validate(json.loads(out), schema)
        except (ValueError, jsonschema.ValidationError) as exc:
            bad.append((seed, end.reason, out, str(exc)[:80]))
    assert not bad, f"{len(bad)} of {len(runs)} replies failed: {bad[:3]}"

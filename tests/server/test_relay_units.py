"""Pieces of the relay fast path: usage read from relayed bytes, the usage chunk asked
for on the client's behalf taken out again, model fields renamed. No servers."""

from __future__ import annotations

import json

from llmux.policies.meter import TAIL_BYTES, RelayMeter
from llmux.server.relay import UsageFilter, renamed


def sse(obj: object) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def test_the_meter_reads_openai_usage_split_across_reads() -> None:
    text = sse({"choices": [{"delta": {"content": 'he said "prompt_tokens": 99'}}]})
    usage = {
        "prompt_tokens": 12,
        "completion_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 4},
    }
    tail = sse({"choices": [{"delta": {}, "finish_reason": "length"}]})
    tail += sse({"choices": [], "usage": usage})
    meter = RelayMeter()
    data = text + tail + b"data: [DONE]\n\n"
    for i in range(0, len(data), 7):
        meter.see(data[i : i + 7])
    meter.close()
    assert (meter.usage.prompt_tokens, meter.usage.completion_tokens) == (12, 5)
    assert meter.usage.cached_tokens == 4 and meter.finish == "length"


def test_the_meter_reads_ollama_final_lines_and_keeps_only_a_tail() -> None:
    meter = RelayMeter()
    line = {"message": {"content": "x" * 1000}, "done": False}
    for _ in range(3 * TAIL_BYTES // 1000):
        meter.see(json.dumps(line).encode() + b"\n")
    meter.see(b'{"done":true,"done_reason":"stop","prompt_eval_count":31,"eval_count":7}\n')
    assert sum(len(p) for p in meter._parts) < 2 * TAIL_BYTES
    meter.close()
    assert (meter.usage.prompt_tokens, meter.usage.completion_tokens, meter.finish) == (
        31,
        7,
        "stop",
    )


def test_the_usage_filter_drops_only_the_usage_only_event() -> None:
    events = [
        sse({"choices": [{"delta": {"content": "hi"}}]}),
        sse({"choices": [{"delta": {}, "finish_reason": "stop"}], "usage": None}),
        sse({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}),
        b"data: [DONE]\n\n",
    ]
    data = b"".join(events)
    f = UsageFilter()
    out = b"".join(f.feed(data[i : i + 5]) for i in range(0, len(data), 5)) + f.flush()
    assert out == events[0] + events[1] + events[3]


def test_model_fields_are_renamed_in_both_spellings() -> None:
    data = b'{"model":"up:1","x":1}\n{"model": "up:1"}\n{"content":"\\"model\\":\\"up:1\\""}'
    out = renamed(data, "up:1", "mine")
    assert out.count(b'"mine"') == 2 and b'\\"model\\":\\"up:1\\"' in out

"""Tool-call helpers: call schema, and finding calls in any model's output."""

from __future__ import annotations

import jsonschema
import pytest

from llmux.core.request import Tool
from llmux.core.tools import call_schema, parse_tool_calls, tools_prompt

WEATHER = Tool(
    "get_weather",
    "weather",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TIME = Tool("get_time", "time", {"type": "object", "properties": {"tz": {"type": "string"}}})


def test_call_schema_ties_arguments_to_each_tool() -> None:
    schema = call_schema((WEATHER, TIME))
    jsonschema.validate({"name": "get_weather", "arguments": {"city": "Oslo"}}, schema)
    jsonschema.validate({"name": "get_time", "arguments": {"tz": "UTC"}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "get_weather", "arguments": {}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "other", "arguments": {}}, schema)
    assert call_schema((WEATHER,))["properties"]["name"] == {"const": "get_weather"}


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "get_weather", "arguments": {"city": "Oslo"}}',
        '```json\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n```',
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>',
        '[{"name": "get_weather", "arguments": "{\\"city\\": \\"Oslo\\"}"}]',
        '{"function": {"name": "get_weather", "parameters": {"city": "Oslo"}}}',
    ],
)
def test_parse_formats(text: str) -> None:
    calls, rest = parse_tool_calls(text, (WEATHER, TIME))
    assert [(c.name, c.arguments) for c in calls] == [("get_weather", {"city": "Oslo"})]
    assert rest == "" and calls[0].id.startswith("call_")


def test_plain_text_and_unknown_names_are_not_calls() -> None:
    for text in (
        "It is sunny.",
        '{"name": "launch", "arguments": {}}',
        '{"a": 1}',
        "<tool_call>x</tool_call>",
    ):
        assert parse_tool_calls(text, (WEATHER,)) == ((), text)
    assert parse_tool_calls('{"name": "get_weather", "arguments": {}}', ()) == (
        (),
        '{"name": "get_weather", "arguments": {}}',
    )


def test_several_blocks_keep_order_and_surrounding_text() -> None:
    text = (
        'Checking. <tool_call>{"name": "get_time", "arguments": {"tz": "UTC"}}</tool_call>'
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}</tool_call>'
    )
    calls, rest = parse_tool_calls(text, (WEATHER, TIME))
    assert [c.name for c in calls] == ["get_time", "get_weather"] and [c.index for c in calls] == [
        0,
        1,
    ]
    assert rest == "Checking."


def test_tools_prompt_lists_tools_and_the_rule() -> None:
    text = tools_prompt((WEATHER, TIME), forced=True)
    assert "get_weather" in text and "get_time" in text and "nothing else" in text
    assert "Otherwise answer normally" in tools_prompt((WEATHER,), forced=False)

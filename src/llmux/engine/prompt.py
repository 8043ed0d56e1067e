"""Turn a request into the prompt text a model sees, and say how to read its reply.

Handles: the model's chat template (with its system layer and tools when the template
knows tools), tools described in a system message for templates that don't, a grammar
for forced tool calls, thinking on/off, Ollama ``template`` overrides, raw prompts,
fill-in-the-middle with the model's FIM tokens, and continuing an assistant prefix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from llmux.core.request import ChatRequest, Message, OutputFormat, Role, Tool, ToolCall
from llmux.core.tools import call_schema, tools_prompt
from llmux.engine.gotemplate import render_go_template
from llmux.engine.template import ChatTemplate
from llmux.errors import InvalidRequest
from llmux.models.capabilities import THINKING_MARKERS, template_mentions_tools
from llmux.models.modelfile import record_messages
from llmux.models.store import ModelRecord, ModelStore

OPEN_THINK, CLOSE_THINK = "<think>", "</think>"


@dataclass(frozen=True, slots=True)
class Prompt:
    text: str
    format: OutputFormat = None
    add_bos: bool = True
    return_context: bool = False
    reasoning: bool = False  # split <think> text out of the reply
    thinking_first: bool = False  # the prompt already opened the think block
    hide_thinking: bool = False
    tools: tuple[Tool, ...] = ()  # parse replies for calls to these
    forced_tools: bool = False


class PromptBuilder:
    def __init__(self, store: ModelStore) -> None:
        self.store = store
        self._templates: dict[str, ChatTemplate] = {}
        self._renders: dict[str, bool] = {}  # template layer -> llmux can execute it

    def template(self, record: ModelRecord) -> ChatTemplate:
        if record.digest not in self._templates:
            info = self.store.gguf(record)
            self._templates[record.digest] = ChatTemplate(
                info.chat_template,
                bos_token=info.token_text("bos_token_id"),
                eos_token=info.token_text("eos_token_id"),
            )
        return self._templates[record.digest]

    def layer_template(self, record: ModelRecord) -> str | None:
        """The template layer prompts render from: None when there is none, or when
        llmux cannot execute it (a Go feature it lacks) and the GGUF has a template of
        its own, which is then used instead."""
        layer = record.layers.get("template")
        if not layer or not self.store.gguf(record).chat_template:
            return layer or None
        if layer not in self._renders:
            self._renders[layer] = go_template_renders(layer)
        return layer if self._renders[layer] else None

    def source(self, record: ModelRecord) -> str:
        """The text of the template prompts render from; capabilities are read from it."""
        return self.layer_template(record) or self.template(record).source

    def build(self, record: ModelRecord, request: ChatRequest) -> Prompt:
        if request.suffix is not None:
            return self._fim(record, request)
        if request.prompt is not None and request.template is None and not request.messages:
            return Prompt(request.prompt, request.format, return_context=request.return_context)
        if request.template is not None:
            return self._go_template(record, request)
        return self._chat(record, request)

    def _fim(self, record: ModelRecord, request: ChatRequest) -> Prompt:
        info = self.store.gguf(record)
        pre, suf, mid = (info.token_text(f"fim_{k}_token_id") for k in ("pre", "suf", "mid"))
        return Prompt(f"{pre}{request.prompt or ''}{suf}{request.suffix}{mid}", request.format)

    def _go_template(self, record: ModelRecord, request: ChatRequest) -> Prompt:
        """A request's own ``template`` (Ollama's generate override)."""
        messages = with_layers(record, request.messages)
        values = go_values(messages, (), think=None)
        text = render_go_template(request.template or "", values)
        return Prompt(text, request.format, return_context=request.return_context)

    def _chat(self, record: ModelRecord, request: ChatRequest) -> Prompt:
        """Render with the model's template: its template layer (a Go template, as from
        ``/api/create`` or a registry pull) when it has one, else the GGUF's chat
        template. Capabilities are read from the same one (:meth:`source`)."""
        layer = self.layer_template(record)
        template = self.template(record)
        source = layer or template.source
        messages = with_layers(record, request.messages)
        tools, forced, fmt = self._tools(request)
        native_tools = bool(tools) and template_mentions_tools(source)
        if tools and not native_tools:
            messages = _with_system(messages, tools_prompt(tools, forced=forced))
        thinks = any(marker in source for marker in THINKING_MARKERS)
        thinking = thinks and not request.thinking_off
        if layer:
            values = go_values(
                messages, tools if native_tools else (), think=thinking, asked=request.think
            )
            text = render_go_template(layer, values)
            bos = ""
        else:
            text = template.render(
                messages, tools if native_tools else (), enable_thinking=thinking
            )
            bos = template.bos_token
        thinking_first = thinks and text.rstrip().endswith(OPEN_THINK)
        if request.prefix is not None:
            text += request.prefix
            # the prefix may open or close the think block the reply continues in
            if thinks and (OPEN_THINK in request.prefix or CLOSE_THINK in request.prefix):
                thinking_first = text.rfind(OPEN_THINK) > text.rfind(CLOSE_THINK)
        return Prompt(
            text,
            fmt,
            add_bos=not (bos and text.startswith(bos)),
            return_context=request.return_context,
            reasoning=thinks,
            thinking_first=thinking_first,
            hide_thinking=request.thinking_off,
            tools=tools,
            forced_tools=forced,
        )

    @staticmethod
    def _tools(request: ChatRequest) -> tuple[tuple[Tool, ...], bool, OutputFormat]:
        """Active tools, whether a call is forced, and the output format to enforce."""
        choice = request.tool_choice
        if not request.tools or choice == "none":
            return (), False, request.format
        if choice in (None, "auto"):
            return request.tools, False, request.format
        tools = request.tools
        if choice != "required":
            tools = tuple(t for t in request.tools if t.name == choice)
            if not tools:
                raise InvalidRequest(
                    f"tool_choice names {choice!r}, which is not in tools", param="tool_choice"
                )
        return tools, True, call_schema(tools)


def with_layers(record: ModelRecord, messages: tuple[Message, ...]) -> tuple[Message, ...]:
    """The request's messages after the model's messages layer, with its system layer
    first unless the request brings its own system message."""
    head: tuple[Message, ...] = ()
    if messages and messages[0].role == "system":
        head, messages = messages[:1], messages[1:]
    elif "system" in record.layers and not any(m.role == "system" for m in messages):
        head = (Message(role="system", content=record.layers["system"]),)
    layer = tuple(
        Message(role=_role(m.get("role")), content=str(m.get("content", "")))
        for m in record_messages(record)
    )
    return (*head, *layer, *messages)


class GoValue(dict[str, Any]):
    """A struct for a Go template: fields by their Go names (``.Function.Name``), and
    printed as its JSON form (``{{ .Function }}``), as Ollama's types print."""

    def __init__(self, fields: dict[str, Any], shown: Any) -> None:
        super().__init__(fields)
        self.shown = shown

    def __str__(self) -> str:
        return json.dumps(self.shown, ensure_ascii=False)


def go_values(
    messages: tuple[Message, ...],
    tools: tuple[Tool, ...],
    *,
    think: bool | None,
    asked: bool | str | None = None,
) -> dict[str, Any]:
    """The values Ollama gives a template: ``.System``, ``.Prompt``, ``.Messages`` (with
    ``.ToolCalls``), ``.Tools``, ``.Think`` and ``.IsThinkSet``."""
    system = next((m.content for m in messages if m.role == "system"), "")
    prompt = next((m.content for m in reversed(messages) if m.role == "user"), "")
    return {
        "System": system,
        "Prompt": prompt,
        "Response": "",
        "Messages": [_go_message(m) for m in messages],
        "Tools": [_go_tool(t) for t in tools],
        "Think": bool(think),
        "IsThinkSet": asked is not None,
    }


def go_template_renders(source: str) -> bool:
    """Whether a Go template executes here, with a tool and a past tool call."""
    tool = Tool("f", "a function", {"type": "object", "properties": {}})
    messages = (
        Message(role="system", content="s"),
        Message(role="user", content="u"),
        Message(role="assistant", tool_calls=(ToolCall(name="f", arguments={}),)),
        Message(role="tool", content="r", tool_name="f"),
    )
    try:
        render_go_template(source, go_values(messages, (tool,), think=True, asked=True))
    except InvalidRequest:
        return False
    return True


def _go_message(m: Message) -> dict[str, Any]:
    calls = [
        GoValue(
            {"Function": GoValue({"Name": c.name, "Arguments": GoValue(c.arguments, c.arguments)},
                                 {"name": c.name, "arguments": c.arguments})},
            {"function": {"name": c.name, "arguments": c.arguments}},
        )
        for c in m.tool_calls
    ]  # fmt: skip
    return {
        "Role": m.role,
        "Content": m.content,
        "Thinking": m.thinking,
        "ToolCalls": calls,
        "ToolName": m.tool_name or "",
    }


def _go_tool(t: Tool) -> GoValue:
    shown = {"name": t.name, "description": t.description, "parameters": t.parameters}
    function = GoValue(
        {"Name": t.name, "Description": t.description, "Parameters": t.parameters}, shown
    )
    return GoValue({"Type": "function", "Function": function}, t.as_openai())


def _role(value: object) -> Role:
    roles: tuple[Role, ...] = ("system", "user", "assistant", "tool")
    return next((r for r in roles if r == value), "user")


def _with_system(messages: tuple[Message, ...], text: str) -> tuple[Message, ...]:
    if messages and messages[0].role == "system":
        first = messages[0]
        merged = Message(
            role="system", content=f"{first.content}\n\n{text}" if first.content else text
        )
        return (merged, *messages[1:])
    return (Message(role="system", content=text), *messages)

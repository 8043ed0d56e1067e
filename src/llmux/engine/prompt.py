"""Turn a request into the prompt text a model sees, and say how to read its reply.

Handles: the model's chat template (with its system layer and tools when the template
knows tools), tools described in a system message for templates that don't, a grammar
for forced tool calls, thinking on/off, Ollama ``template`` overrides, raw prompts,
fill-in-the-middle with the model's FIM tokens, and continuing an assistant prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmux.core.request import ChatRequest, Message, OutputFormat, Role, Tool
from llmux.core.tools import call_schema, tools_prompt
from llmux.engine.gotemplate import render_go_template
from llmux.engine.template import ChatTemplate
from llmux.errors import InvalidRequest
from llmux.models.capabilities import THINKING_MARKERS
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

    def template(self, record: ModelRecord) -> ChatTemplate:
        if record.digest not in self._templates:
            info = self.store.gguf(record)
            self._templates[record.digest] = ChatTemplate(
                info.chat_template,
                bos_token=info.token_text("bos_token_id"),
                eos_token=info.token_text("eos_token_id"),
            )
        return self._templates[record.digest]

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

    def _go_template(
        self, record: ModelRecord, request: ChatRequest, source: str | None = None
    ) -> Prompt:
        messages = with_layers(record, request.messages)
        system = next((m.content for m in messages if m.role == "system"), "")
        prompt = next((m.content for m in reversed(messages) if m.role == "user"), "")
        values = {
            "System": system,
            "Prompt": prompt,
            "Response": "",
            "Messages": [{"Role": m.role, "Content": m.content} for m in messages],
            "Tools": [],
        }
        text = render_go_template(source or request.template or "", values)
        return Prompt(text, request.format, return_context=request.return_context)

    def _chat(self, record: ModelRecord, request: ChatRequest) -> Prompt:
        layer_template = record.layers.get("template")
        if layer_template and not self.store.gguf(record).chat_template:
            return self._go_template(record, request, layer_template)  # the GGUF has none
        template = self.template(record)
        messages = with_layers(record, request.messages)
        tools, forced, fmt = self._tools(request)
        native_tools = tools and template.mentions_tools
        if tools and not native_tools:
            messages = _with_system(messages, tools_prompt(tools, forced=forced))
        thinks = any(marker in template.source for marker in THINKING_MARKERS)
        text = template.render(
            messages,
            tools if native_tools else (),
            enable_thinking=thinks and not request.thinking_off,
        )
        thinking_first = thinks and text.rstrip().endswith(OPEN_THINK)
        if request.prefix is not None:
            text += request.prefix
            # the prefix may open or close the think block the reply continues in
            if thinks and (OPEN_THINK in request.prefix or CLOSE_THINK in request.prefix):
                thinking_first = text.rfind(OPEN_THINK) > text.rfind(CLOSE_THINK)
        return Prompt(
            text,
            fmt,
            add_bos=not (template.bos_token and text.startswith(template.bos_token)),
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

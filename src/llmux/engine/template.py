"""Render chat messages into a prompt with the model's own template.

GGUF files carry a Jinja chat template (``tokenizer.chat_template``); it is rendered in
a sandbox with the variables Hugging Face templates expect. A model without one gets
ChatML, the most common format.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from llmux.core.request import Message, Tool
from llmux.errors import InvalidRequest

CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _raise(message: str) -> None:
    raise InvalidRequest(f"chat template: {message}")


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class ChatTemplate:
    def __init__(self, source: str | None, *, bos_token: str = "", eos_token: str = "") -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals.update(raise_exception=_raise, strftime_now=_strftime_now)
        env.filters["tojson"] = lambda v, indent=None, **_: json.dumps(
            v, ensure_ascii=False, indent=indent
        )
        self.source = source or CHATML
        try:
            self._template = env.from_string(self.source)
        except jinja2.TemplateError as exc:
            raise InvalidRequest(f"the model's chat template does not parse: {exc}") from exc
        self.bos_token = bos_token
        self.eos_token = eos_token

    @property
    def mentions_tools(self) -> bool:
        return "tools" in self.source

    def render(
        self,
        messages: tuple[Message, ...],
        tools: tuple[Tool, ...] = (),
        add_generation_prompt: bool = True,
        **extra: object,
    ) -> str:
        context: dict[str, Any] = {
            "messages": [message_dict(m) for m in messages],
            "add_generation_prompt": add_generation_prompt,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            **extra,
        }
        if tools:
            context["tools"] = [t.as_openai() for t in tools]
        try:
            return self._template.render(**context)
        except jinja2.TemplateError as exc:
            raise InvalidRequest(f"chat template failed to render these messages: {exc}") from exc


def message_dict(m: Message) -> dict[str, Any]:
    d: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        d["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in m.tool_calls
        ]
    if m.tool_name:
        d["name"] = m.tool_name
    if m.tool_call_id:
        d["tool_call_id"] = m.tool_call_id
    return d

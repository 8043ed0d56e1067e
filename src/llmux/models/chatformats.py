"""Go templates for the chat formats llmux recognises in a GGUF's Jinja template.

Ollama clients read ``/api/show``'s ``template`` and ``parameters`` as Ollama writes
them: a Go template and the format's stop sequences. A GGUF carries a Jinja template
instead (``tokenizer.chat_template``); when it is one of the common formats below, the
card shows the equivalent Go template and the stops, so ``llmux show --modelfile``
piped into ``llmux create`` (or ``ollama create``) makes a model that prompts the same.
Prompts of the model itself still render from the Jinja template, which knows the
model's quirks best; capabilities are read from it too.

Recognition looks for the format's special tokens. A ChatML template's built-in
default system prompt (SmolLM2's, Qwen 2.5's) is carried over, so the Go template
renders the same prompt for the same messages; tool blocks are shown only for a Jinja
template that takes tools.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The parts every format's template shares: the messages (chat), else the prompt
# (generate), then the reply being continued. ``{turns}`` is the body of a range over
# .Messages, with ``$i`` the index. No ``{{-`` trims outside the tool blocks: every
# newline in a piece is one the prompt has.
_SHAPE = (
    "{{{{ if .Messages }}}}{head}{{{{ range $i, $_ := .Messages }}}}{turns}{{{{ end }}}}{reply}"
    "{{{{ else }}}}{prompt}{{{{ end }}}}{{{{ .Response }}}}{{{{ if .Response }}}}{end}{{{{ end }}}}"
)

CHATML_TOOLS = """
{{- if .Tools }}

You can call functions to help with the request. Their definitions, one JSON object per line:
<tools>
{{- range .Tools }}
{{ . }}
{{- end }}
</tools>

To call a function, answer with nothing but one block per call:
<tool_call>
{"name": "<function name>", "arguments": <the arguments as a JSON object>}
</tool_call>
{{- end }}"""

CHATML_CALLS = """
{{- range .ToolCalls }}<tool_call>
{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
</tool_call>
{{- end }}"""


def _if(cond: str, then: str, otherwise: str | None = None) -> str:
    tail = "" if otherwise is None else f"{{{{ else }}}}{otherwise}"
    return f"{{{{ if {cond} }}}}{then}{tail}{{{{ end }}}}"


def chatml(default_system: str = "", tools: bool = False) -> str:
    """ChatML (``<|im_start|>role ... <|im_end|>``). With ``tools``, the tools are
    described in the system turn and calls written as ``<tool_call>`` blocks."""
    described = CHATML_TOOLS if tools else ""
    if default_system:
        system = _if(".System", "{{ .System }}", default_system)
        head = f"<|im_start|>system\n{system}{described}<|im_end|>\n"
        prompt_system = f"<|im_start|>system\n{system}<|im_end|>\n"
    else:
        cond = "or .System .Tools" if tools else ".System"
        head = _if(cond, f"<|im_start|>system\n{{{{ .System }}}}{described}<|im_end|>\n")
        prompt_system = _if(".System", "<|im_start|>system\n{{ .System }}<|im_end|>\n")
    tool_turn = (
        "user\n<tool_response>\n{{ .Content }}\n</tool_response>"
        if tools
        else "tool\n{{ .Content }}"
    )
    turns = (
        '{{ if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n'
        '{{ else if eq .Role "assistant" }}<|im_start|>assistant\n{{ .Content }}'
        f"{CHATML_CALLS if tools else ''}<|im_end|>\n"
        f'{{{{ else if eq .Role "tool" }}}}<|im_start|>{tool_turn}<|im_end|>\n{{{{ end }}}}'
    )
    user = _if(".Prompt", "<|im_start|>user\n{{ .Prompt }}<|im_end|>\n")
    return _SHAPE.format(
        head=head,
        turns=turns,
        reply="<|im_start|>assistant\n",
        prompt=f"{prompt_system}{user}<|im_start|>assistant\n",
        end="<|im_end|>",
    )


def llama3() -> str:
    """Llama 3: ``<|start_header_id|>role<|end_header_id|>`` headers, ``<|eot_id|>``."""

    def header(role: str) -> str:
        return f"<|start_header_id|>{role}<|end_header_id|>\n\n"

    system = _if(".System", header("system") + "{{ .System }}<|eot_id|>")
    role = _if('eq .Role "tool"', "ipython", "{{ .Role }}")
    turns = _if('ne .Role "system"', header(role) + "{{ .Content }}<|eot_id|>")
    user = _if(".Prompt", header("user") + "{{ .Prompt }}<|eot_id|>")
    return _SHAPE.format(
        head=system, turns=turns, reply=header("assistant"),
        prompt=system + user + header("assistant"), end="<|eot_id|>",
    )  # fmt: skip


def _first_user_with_system(user: str, model: str) -> tuple[str, str]:
    """Turns and prompt of a format with no system role, whose system text opens the
    first user turn (Gemma, Mistral)."""
    system = _if("and $.System (eq $i 1)", "{{ $.System }}\n\n")
    turns = (
        f'{{{{ if eq .Role "user" }}}}{user.format(system + "{{ .Content }}")}'
        f'{{{{ else if eq .Role "assistant" }}}}{model.format("{{ .Content }}")}{{{{ end }}}}'
    )
    prompt = user.format(_if(".System", "{{ .System }}\n\n") + "{{ .Prompt }}")
    return turns, prompt


def gemma() -> str:
    """Gemma: ``<start_of_turn>user`` and ``<start_of_turn>model`` turns."""
    turns, prompt = _first_user_with_system(
        "<start_of_turn>user\n{}<end_of_turn>\n", "<start_of_turn>model\n{}<end_of_turn>\n"
    )
    reply = "<start_of_turn>model\n"
    return _SHAPE.format(
        head="", turns=turns, reply=reply, prompt=prompt + reply, end="<end_of_turn>"
    )


def mistral() -> str:
    """Mistral's ``[INST] ... [/INST]``, each reply ended by ``</s>``."""
    turns, prompt = _first_user_with_system("[INST] {} [/INST]", "{}</s>")
    return _SHAPE.format(head="", turns=turns, reply="", prompt=prompt, end="</s>")


def phi3() -> str:
    """Phi-3: ``<|system|>``, ``<|user|>`` and ``<|assistant|>`` turns ended by ``<|end|>``."""
    system = _if(".System", "<|system|>\n{{ .System }}<|end|>\n")
    user = _if(".Prompt", "<|user|>\n{{ .Prompt }}<|end|>\n")
    return _SHAPE.format(
        head="", turns="<|{{ .Role }}|>\n{{ .Content }}<|end|>\n", reply="<|assistant|>\n",
        prompt=system + user + "<|assistant|>\n", end="<|end|>",
    )  # fmt: skip


def deepseek(think: bool = False) -> str:
    """DeepSeek V3 and R1: the system text first, then ``<｜User｜>`` and
    ``<｜Assistant｜>`` turns; R1's prompt opens the think block."""
    reply = "<｜Assistant｜>" + ("<think>\n" if think else "")
    system = _if(".System", "{{ .System }}")
    turns = (
        '{{ if eq .Role "user" }}<｜User｜>{{ .Content }}'
        '{{ else if eq .Role "assistant" }}<｜Assistant｜>{{ .Content }}<｜end▁of▁sentence｜>'
        "{{ end }}"
    )
    return _SHAPE.format(
        head=system, turns=turns, reply=reply,
        prompt=system + "<｜User｜>{{ .Prompt }}" + reply, end="<｜end▁of▁sentence｜>",
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class ChatFormat:
    name: str
    template: str  # Go syntax
    stop: tuple[str, ...]


_DEFAULT_SYSTEM = re.compile(r"<\|im_start\|>system(?:\\n|\n)([^'\"{}+\\<]+)<\|im_end\|>")


def recognise(jinja: str | None) -> ChatFormat | None:
    """The chat format a Jinja template writes, or None for one llmux doesn't know."""
    if not jinja:
        return None
    if "<｜User｜>" in jinja and "<｜Assistant｜>" in jinja:
        think = "<think>" in jinja
        ends = ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>")
        return ChatFormat("deepseek", deepseek(think), ends)
    if "<|start_header_id|>" in jinja and "<|eot_id|>" in jinja:
        headers = ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
        return ChatFormat("llama3", llama3(), headers)
    if "<start_of_turn>" in jinja and "<end_of_turn>" in jinja:
        return ChatFormat("gemma", gemma(), ("<end_of_turn>",))
    if "<|im_start|>" in jinja and "<|im_end|>" in jinja:
        found = _DEFAULT_SYSTEM.search(jinja)
        tools = "tools" in jinja and "<tool_call>" in jinja
        template = chatml(found.group(1) if found else "", tools=tools)
        return ChatFormat("chatml", template, ("<|im_start|>", "<|im_end|>"))
    if "<|user|>" in jinja and "<|assistant|>" in jinja and "<|end|>" in jinja:
        return ChatFormat("phi3", phi3(), ("<|end|>", "<|user|>", "<|assistant|>"))
    if "[INST]" in jinja and "[/INST]" in jinja:
        return ChatFormat("mistral", mistral(), ("[INST]", "[/INST]"))
    return None

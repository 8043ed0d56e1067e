"""The Go templates ``show`` reports for GGUFs whose only template is Jinja: each one
renders, through llmux's Go template engine, the very prompt the Jinja template renders
for the same messages (issue 21, item 5)."""

from __future__ import annotations

import pytest

from llmux.core.request import Message
from llmux.engine.gotemplate import render_go_template
from llmux.engine.prompt import go_values
from llmux.engine.template import ChatTemplate
from llmux.models.bundled import bundled_gguf
from llmux.models.chatformats import recognise
from llmux.models.gguf import read_gguf

# One Jinja template per format, written the way Hugging Face chat templates write them.
JINJA = {
    "chatml": (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + "
        "'<|im_end|>' + '\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    ),
    "llama3": (
        "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + "
        "'<|end_header_id|>\\n\\n' + m['content'] | trim + '<|eot_id|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
        "{% endif %}"
    ),
    "gemma": (
        "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
        "{% set prefix = messages[0]['content'] + '\\n\\n' %}{% set turns = messages[1:] %}"
        "{% else %}{% set prefix = '' %}{% set turns = messages %}{% endif %}"
        "{% for m in turns %}{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
        "{{ '<start_of_turn>' + role + '\\n' + (prefix if loop.first else '') + m['content'] "
        "+ '<end_of_turn>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
    ),
    "mistral": (
        "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
        "{% set prefix = messages[0]['content'] + '\\n\\n' %}{% set turns = messages[1:] %}"
        "{% else %}{% set prefix = '' %}{% set turns = messages %}{% endif %}"
        "{% for m in turns %}{% if m['role'] == 'user' %}"
        "{{ '[INST] ' + (prefix if loop.first else '') + m['content'] + ' [/INST]' }}"
        "{% else %}{{ m['content'] + eos_token }}{% endif %}{% endfor %}"
    ),
    "phi3": (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ '<|system|>\\n' }}"
        "{% elif m['role'] == 'user' %}{{ '<|user|>\\n' }}{% else %}{{ '<|assistant|>\\n' }}"
        "{% endif %}{{ m['content'] + '<|end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
    ),
    "deepseek": (
        "{{ bos_token }}{% set ns = namespace(system='') %}{% for m in messages %}"
        "{% if m['role'] == 'system' %}{% set ns.system = m['content'] %}{% endif %}{% endfor %}"
        "{{ ns.system }}{% for m in messages %}{% if m['role'] == 'user' %}"
        "{{ '<｜User｜>' + m['content'] }}{% elif m['role'] == 'assistant' %}"
        "{{ '<｜Assistant｜>' + m['content'] + '<｜end▁of▁sentence｜>' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<｜Assistant｜><think>\\n' }}{% endif %}"
    ),
}
BOS = {
    "llama3": "<|begin_of_text|>",
    "gemma": "<bos>",
    "mistral": "<s>",
    "deepseek": "<｜begin▁of▁sentence｜>",
}
EOS = {"mistral": "</s>"}

CONVERSATIONS = {
    "one question": [Message(role="user", content="What is 2+2?")],
    "with a system turn": [
        Message(role="system", content="Answer in one word."),
        Message(role="user", content="Sky colour?"),
    ],
    "several turns": [
        Message(role="system", content="Be brief."),
        Message(role="user", content="Hi"),
        Message(role="assistant", content="Hello! How can I help?"),
        Message(role="user", content="Name a prime."),
    ],
    "no system, two turns": [
        Message(role="user", content="Hi"),
        Message(role="assistant", content="Hello."),
        Message(role="user", content="Bye"),
    ],
}


def jinja_prompt(source: str, fmt: str, messages: list[Message]) -> str:
    bos = BOS.get(fmt, "")
    template = ChatTemplate(source, bos_token=bos, eos_token=EOS.get(fmt, ""))
    return template.render(tuple(messages)).removeprefix(bos)


def go_prompt(source: str, messages: list[Message]) -> str:
    return render_go_template(source, go_values(tuple(messages), (), think=None))


@pytest.mark.parametrize("conversation", CONVERSATIONS)
@pytest.mark.parametrize("fmt", JINJA)
def test_the_go_template_renders_the_jinja_prompt(fmt: str, conversation: str) -> None:
    found = recognise(JINJA[fmt])
    assert found is not None and found.name == fmt
    messages = CONVERSATIONS[conversation]
    assert go_prompt(found.template, messages) == jinja_prompt(JINJA[fmt], fmt, messages)
    assert found.stop and all(s in JINJA[fmt] or s in BOS.get(fmt, "") or s in found.template
                              for s in found.stop)  # fmt: skip


@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_smollm2s_own_template_keeps_its_default_system_prompt(conversation: str) -> None:
    path = bundled_gguf()
    assert path is not None
    jinja = read_gguf(path).chat_template
    assert jinja is not None
    found = recognise(jinja)
    assert found is not None and found.name == "chatml"
    assert "SmolLM" in found.template and ".Tools" not in found.template  # it takes no tools
    messages = CONVERSATIONS[conversation]
    assert go_prompt(found.template, messages) == jinja_prompt(jinja, "chatml", messages)


def test_a_chatml_template_that_takes_tools_gets_tool_blocks() -> None:
    jinja = JINJA["chatml"] + "{% if tools %}<tools>{{ tools }}</tools> <tool_call>{% endif %}"
    found = recognise(jinja)
    assert found is not None and ".Tools" in found.template and ".ToolCalls" in found.template


def test_the_generate_path_renders_the_prompt_too() -> None:
    """Ollama gives a template ``.Prompt`` without ``.Messages`` for a raw generate
    with a template override; every format answers it."""
    for fmt, source in JINJA.items():
        found = recognise(source)
        assert found is not None
        values = {**go_values((), (), think=None), "Prompt": "Why?", "System": "Be kind."}
        text = render_go_template(found.template, values)
        assert "Why?" in text and "Be kind." in text, fmt


@pytest.mark.parametrize("source", [None, "", "{{ messages }}", "### User: {{ m }} ### Bot:"])
def test_an_unknown_format_is_shown_as_it_is(source: str | None) -> None:
    assert recognise(source) is None

"""What a model can do, read from its GGUF header, template and layers."""

from __future__ import annotations

from llmux.models.gguf import GGUFInfo

EMBEDDING_ARCHITECTURES = {
    "bert",
    "nomic-bert",
    "nomic-bert-moe",
    "jina-bert-v2",
    "t5encoder",
    "modern-bert",
}
THINKING_MARKERS = ("<think>", "enable_thinking", "reasoning_content", "<|channel|>analysis")


def template_mentions_tools(template: str) -> bool:
    """A Jinja template's ``tools`` or a Go template's ``.Tools``."""
    return "tools" in template or ".Tools" in template


def capabilities(info: GGUFInfo, template: str | None, *, has_projector: bool = False) -> list[str]:
    if info.architecture in EMBEDDING_ARCHITECTURES or info.get("general.type") == "embedding":
        return ["embedding"]
    caps = ["completion"]
    text = template or ""
    if template_mentions_tools(text):
        caps.append("tools")
    if info.has_fim_tokens:
        caps.append("insert")
    if has_projector:
        caps.append("vision")
    if any(marker in text for marker in THINKING_MARKERS):
        caps.append("thinking")
    return caps

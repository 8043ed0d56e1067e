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


def capabilities(info: GGUFInfo, template: str | None, *, has_projector: bool = False) -> list[str]:
    if info.architecture in EMBEDDING_ARCHITECTURES or info.get("general.type") == "embedding":
        return ["embedding"]
    caps = ["completion"]
    text = template or ""
    if "tools" in text:
        caps.append("tools")
    if info.has_fim_tokens:
        caps.append("insert")
    if has_projector:
        caps.append("vision")
    if any(marker in text for marker in THINKING_MARKERS):
        caps.append("thinking")
    return caps

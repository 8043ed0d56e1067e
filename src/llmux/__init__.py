"""llmux: one self-hosted server for the Ollama, OpenAI and DeepSeek APIs."""

__version__ = "0.1.0"

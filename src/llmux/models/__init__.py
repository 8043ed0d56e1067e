"""The model store (Ollama layout), GGUF headers, capabilities."""

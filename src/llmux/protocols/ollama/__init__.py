"""Ollama's native API: wire models, conversion to core, rendering of chunks."""

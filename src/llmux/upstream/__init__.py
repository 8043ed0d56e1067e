"""Upstream servers as backends: Ollama-type and OpenAI-compatible (DeepSeek, vLLM,
llama.cpp server, another llmux), with retries, circuit breakers, load balancing and
failover. ``settings`` holds the configuration models; nothing here imports the server.
"""

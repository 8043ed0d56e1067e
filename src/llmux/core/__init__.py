"""The normalised language of llmux: requests, messages, chunks, names, durations.

Imports nothing from server, storage or backends.
"""

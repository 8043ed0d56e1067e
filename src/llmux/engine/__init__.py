"""Embedded llama.cpp engine."""

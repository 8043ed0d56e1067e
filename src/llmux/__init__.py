"""llmux: one self-hosted server for the Ollama, OpenAI and DeepSeek APIs.

``from llmux import Client, AsyncClient`` gives the Python SDK (``llmux.client``); it is
imported on first use, so ``import llmux`` stays light for the server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from llmux.client import AsyncClient, AuthenticationError, Client, ResponseError

__all__ = ["AsyncClient", "AuthenticationError", "Client", "ResponseError", "__version__"]

_SDK = {"AsyncClient", "AuthenticationError", "Client", "ResponseError"}


def __getattr__(name: str) -> Any:
    if name in _SDK:
        from llmux import client

        return getattr(client, name)
    raise AttributeError(f"module 'llmux' has no attribute {name!r}")

"""Model names the Ollama way: ``[host/][namespace/]model[:tag]``.

``m``, ``m:latest``, ``library/m`` and ``registry.ollama.ai/library/m:latest`` are the
same model. ``display`` is the short form used in responses; ``full`` is what
capability errors name.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from llmux.errors import InvalidRequest

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

_MODEL = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,79}$")
_NAMESPACE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]{0,79}$")
_HOST = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-:]{0,349}$")


@dataclass(frozen=True, slots=True)
class ModelName:
    host: str
    namespace: str
    model: str
    tag: str

    @classmethod
    def parse(cls, text: str) -> ModelName:
        """``[host/][namespace/]model[:tag]``, case-insensitive; InvalidRequest if not a
        name. Names repeat on every request, so valid ones are remembered."""
        return _parse(text)

    @classmethod
    def _parse_uncached(cls, text: str) -> ModelName:
        raw = text.strip()
        if not raw:
            raise InvalidRequest("model is required", param="model")
        name = raw.split("@", 1)[0]
        for scheme in ("https://", "http://"):
            if name.startswith(scheme):
                name = name[len(scheme) :]
        tag = DEFAULT_TAG
        last_slash = name.rfind("/")
        colon = name.rfind(":")
        if colon > last_slash:
            name, tag = name[:colon], name[colon + 1 :]
        parts = name.split("/")
        if len(parts) == 1:
            host, namespace, model = DEFAULT_HOST, DEFAULT_NAMESPACE, parts[0]
        elif len(parts) == 2:
            host, (namespace, model) = DEFAULT_HOST, parts
        elif len(parts) == 3:
            host, namespace, model = parts
        else:
            raise InvalidRequest(f'name "{raw}" is invalid', param="model")
        ok = (
            _MODEL.match(model)
            and _MODEL.match(tag)
            and _NAMESPACE.match(namespace)
            and _HOST.match(host)
        )
        if not ok:
            raise InvalidRequest(f'name "{raw}" is invalid', param="model")
        return cls(
            host=host.lower(), namespace=namespace.lower(), model=model.lower(), tag=tag.lower()
        )

    @property
    def display(self) -> str:
        """Short form: ``m:tag``, ``ns/m:tag`` or ``host/ns/m:tag`` as needed."""
        if self.host != DEFAULT_HOST:
            return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"
        if self.namespace != DEFAULT_NAMESPACE:
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.model}:{self.tag}"

    @property
    def full(self) -> str:
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    def path_parts(self) -> tuple[str, str, str, str]:
        return (self.host, self.namespace, self.model, self.tag)

    def __str__(self) -> str:
        return self.display


@functools.lru_cache(maxsize=4096)
def _parse(text: str) -> ModelName:
    return ModelName._parse_uncached(text)

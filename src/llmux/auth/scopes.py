"""Scopes, the scope each route requires, and model patterns.

Every route the app registers is in :data:`ROUTE_SCOPES` (a test walks the app's routes
and fails on one that is not): ``PUBLIC`` routes need no credential, ``ANY`` needs a
principal and no particular scope, any other value is the scope required. A route that
is missing anyway requires ``admin``: deny by default.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from functools import lru_cache

INFERENCE = "inference"
MODELS_READ = "models:read"
MODELS_WRITE = "models:write"
CONVERSATIONS = "conversations"
BATCH = "batch"
METRICS = "metrics"
ADMIN = "admin"
SCOPES = (INFERENCE, MODELS_READ, MODELS_WRITE, CONVERSATIONS, BATCH, METRICS, ADMIN)
USER_SCOPES = frozenset((INFERENCE, MODELS_READ, CONVERSATIONS, BATCH))  # role "user"
ADMIN_SCOPES = frozenset(SCOPES)  # role "admin"

PUBLIC = "public"
ANY = "any"

_BY_PATH: dict[str, str] = {
    # no credential: liveness and readiness, the version clients probe, the token
    # endpoint, the API description, the web UI's pages and assets (the UI's own calls
    # are API calls)
    **dict.fromkeys(
        ("/", "/healthz", "/readyz", "/api/version", "/oauth2/token", "/openapi.json", "/docs",
         "/docs/oauth2-redirect", "/ui", "/ui/", "/ui/{path:path}", "/auth/setup", "/auth/login"),
        PUBLIC,
    ),
    **dict.fromkeys(
        ("/api/generate", "/api/chat", "/api/embed", "/api/embeddings", "/api/chat/ws",
         "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/chat/completions/ws",
         "/chat/completions", "/completions", "/embeddings", "/beta/completions",
         "/beta/chat/completions", "/v1/text/completion", "/text/completion", "/user/balance", "/v1/moderations",
         "/v1/moderation", "/moderations", "/moderation"),
        INFERENCE,
    ),
    **dict.fromkeys(
        ("/api/tags", "/api/ps", "/api/show", "/v1/models", "/v1/models/{model_id:path}",
         "/models", "/models/{model_id:path}"),
        MODELS_READ,
    ),
    **dict.fromkeys(
        ("/api/pull", "/api/push", "/api/create", "/api/copy", "/api/delete",
         "/api/blobs/{digest}"),
        MODELS_WRITE,
    ),
    **dict.fromkeys(
        ("/api/conversations", "/api/conversations/{conversation_id}",
         "/api/conversations/{conversation_id}/messages",
         "/api/conversations/{conversation_id}/reply",
         "/api/conversations/{conversation_id}/regenerate",
         "/api/conversations/{conversation_id}/export"),
        CONVERSATIONS,
    ),
    **dict.fromkeys(
        ("/v1/files", "/v1/files/{file_id}", "/v1/files/{file_id}/content", "/v1/batches",
         "/v1/batches/{batch_id}", "/v1/batches/{batch_id}/cancel"),
        BATCH,
    ),
    "/metrics": METRICS,  # or the [metrics] token (server/access.py)
    "/v1/audit": ADMIN,  # the audit trail under the tutorials' name (/admin/audit)
    # a caller's own identity and keys
    **dict.fromkeys(
        ("/auth/me", "/auth/logout", "/api/keys", "/api/keys/{key_id}", "/api/usage"), ANY
    ),
}  # fmt: skip


def route_scope(path_template: str) -> str:
    """The scope a route (by its path template) requires; ``/admin/*`` and anything
    not listed require ``admin``."""
    return _BY_PATH.get(path_template, ADMIN)


def routes_with(scope: str) -> frozenset[str]:
    """The route templates that require ``scope``."""
    return frozenset(path for path, required in _BY_PATH.items() if required == scope)


def listed(path_template: str) -> bool:
    return path_template in _BY_PATH or path_template.startswith("/admin/")


def role_scopes(role: str) -> frozenset[str]:
    return ADMIN_SCOPES if role == "admin" else USER_SCOPES


def parse_scopes(text: str | list[str] | tuple[str, ...] | None) -> frozenset[str]:
    """Space- or comma-separated scope names (or a list); an unknown name is a
    ValueError naming the known ones."""
    if text is None:
        return frozenset()
    items = text.replace(",", " ").split() if isinstance(text, str) else list(text)
    unknown = sorted(set(items) - set(SCOPES))
    if unknown:
        raise ValueError(
            f"unknown scope(s) {', '.join(unknown)}; the scopes are {', '.join(SCOPES)}"
        )
    return frozenset(items)


def scope_text(scopes: frozenset[str]) -> str:
    return " ".join(s for s in SCOPES if s in scopes)


@lru_cache(maxsize=4096)
def model_allowed(patterns: tuple[str, ...], model: str) -> bool:
    """Whether ``model`` matches one of ``patterns`` (shell-style ``*``, ``?``; a
    pattern without a tag also matches every tag: ``qwen3`` allows ``qwen3:8b``).
    No patterns: every model."""
    if not patterns:
        return True
    name = model.lower()
    base = name.split(":", 1)[0] if ":" in name else name
    for pattern in patterns:
        p = pattern.lower()
        if fnmatchcase(name, p) or (":" not in p and fnmatchcase(base, p)):
            return True
    return False

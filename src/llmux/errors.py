"""One exception tree for all of llmux.

Everything inside raises these; each protocol adapter turns them into its own wire
error in exactly one place (``server/errors.py``). Each class has an HTTP status and a
stable machine-readable ``code``::

    LlmuxError (500 internal_error)
    ├── InvalidRequest (400 invalid_request)
    │   ├── CapabilityNotSupported (400 unsupported_capability)
    │   └── ContentRefused (400 content_filter / pii_detected)  a content policy said no
    ├── Unauthorized (401 invalid_api_key, carries WWW-Authenticate)
    ├── PaymentRequired (402 insufficient_balance)  DeepSeek's "Insufficient Balance"
    ├── Forbidden (403 forbidden)
    │   └── InsufficientScope (403 insufficient_scope)  the credential lacks a scope
    ├── NotFound (404 not_found)
    │   └── ModelNotFound (404 model_not_found)
    ├── MethodNotAllowed (405 method_not_allowed)
    ├── PayloadTooLarge (413 payload_too_large)
    ├── RateLimited (429 rate_limited, carries Retry-After and limit headers)
    ├── ServerBusy (503 server_busy, carries Retry-After)
    ├── PolicyFailed (503 policy_failed)   a content policy broke: fail closed
    ├── Timeout (504 timeout)              a deadline passed before the reply was done
    ├── BackendError (500 backend_error)   a model or upstream failed while serving
    └── UpstreamError (502 upstream_error) an upstream server failed or is unreachable

Messages say what to do next where there is something to do. An error is built with
its status (a class's own, or ``status=`` for one passed through from another server)
and may carry response headers; ``retry_after`` becomes ``Retry-After``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping


class LlmuxError(Exception):
    status: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        retry_after: float | None = None,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after = retry_after
        if status is not None:
            self.status = status
        self.headers: dict[str, str] = dict(headers or {})

    def response_headers(self) -> dict[str, str]:
        out = dict(self.headers)
        if self.retry_after is not None:  # whole seconds, rounded up: waiting it is enough
            out.setdefault("Retry-After", str(max(1, math.ceil(self.retry_after))))
        return out


class InvalidRequest(LlmuxError):
    status = 400
    code = "invalid_request"


class CapabilityNotSupported(InvalidRequest):
    code = "unsupported_capability"


class ContentRefused(InvalidRequest):
    """A content policy refused the request: moderation (``content_filter``, ``param``
    the category) or PII redaction set to block (``pii_detected``, ``param`` the entity
    type). The message names what was found, never the text itself."""

    code = "content_filter"

    def __init__(self, message: str, *, code: str = "content_filter", param: str) -> None:
        super().__init__(message, param=param)
        self.code = code


class Unauthorized(LlmuxError):
    """No credential, or one that is not valid; says how to authenticate."""

    status = 401
    code = "invalid_api_key"  # OpenAI's code for a missing or wrong key

    def __init__(
        self, message: str, *, scheme: str = "Bearer", realm: str = "llmux", error: str = ""
    ) -> None:
        challenge = f'{scheme} realm="{realm}"' + (f', error="{error}"' if error else "")
        super().__init__(message, headers={"WWW-Authenticate": challenge})


class PaymentRequired(LlmuxError):
    status = 402
    code = "insufficient_balance"


class Forbidden(LlmuxError):
    status = 403
    code = "forbidden"


class InsufficientScope(Forbidden):
    code = "insufficient_scope"

    def __init__(self, scope: str, message: str | None = None) -> None:
        super().__init__(
            message or f"this credential lacks the '{scope}' scope",
            param=scope,
            headers={
                "WWW-Authenticate": f'Bearer realm="llmux", error="insufficient_scope", '
                f'scope="{scope}"'
            },
        )
        self.scope = scope


class NotFound(LlmuxError):
    status = 404
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"

    def __init__(self, name: str, hint: str | None = None) -> None:
        message = f"model '{name}' not found"
        if hint:
            message += f", {hint}"
        super().__init__(message, param="model")
        self.name = name


class MethodNotAllowed(LlmuxError):
    status = 405
    code = "method_not_allowed"


class PayloadTooLarge(LlmuxError):
    status = 413
    code = "payload_too_large"


class RateLimited(LlmuxError):
    status = 429
    code = "rate_limited"
    reason = "rate_limit"  # or "concurrency": what the metrics count the refusal as


class ServerBusy(LlmuxError):
    status = 503
    code = "server_busy"

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message, retry_after=retry_after)


class PolicyFailed(LlmuxError):
    """A content policy (redaction, moderation) failed, so the request was not served:
    they fail closed, never letting unchecked text through."""

    status = 503
    code = "policy_failed"


class Timeout(LlmuxError):
    status = 504
    code = "timeout"


class BackendError(LlmuxError):
    status = 500
    code = "backend_error"


class UpstreamError(LlmuxError):
    status = 502
    code = "upstream_error"

"""Which limits and budgets apply to a request.

Scopes, each with up to three limits (requests per minute ``rpm:``, tokens per minute
``tpm:``, requests at once ``conc:``):

* the **caller**: its API key, OAuth2 client, external token or user (a UI session);
  the client address while access control is off. ``[limits]`` sets the default for
  every caller; a row for the caller's own scope (``key:ID``...) replaces it field by
  field.
* the caller's **user**, when a row ``user:ID`` exists: every key and client of that user
  together.
* the **model**: ``[limits.models.NAME]`` or a row ``model:NAME``; all callers together.
* **global**: ``[limits] global_*``.

Budgets apply for the caller's scope, its user's and its user's team.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmux.config import LimitsSettings, QuotaSettings
from llmux.core.context import RequestContext
from llmux.errors import NotFound
from llmux.limits.book import QuotaBook
from llmux.limits.gcra import Limit
from llmux.policies import Operation
from llmux.protocols.quotas import check_scope
from llmux.storage.usage import BudgetRow, QuotaRow

if TYPE_CHECKING:
    from llmux.auth.control import AccessControl


def short(model: str) -> str:
    """A model's name as limits and prices are keyed: lower case, ``:latest`` dropped."""
    return model.lower().removesuffix(":latest")


def caller(ctx: RequestContext) -> str:
    p = ctx.principal
    if p.anonymous:
        return f"addr:{ctx.client or 'unknown'}"
    return f"{p.kind}:{p.id}"


@dataclass(frozen=True, slots=True)
class Quota:
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    concurrent_requests: int | None = None

    def over(self, row: QuotaRow | QuotaSettings | None) -> Quota:
        """This quota with ``row``'s fields put over it (unset fields keep ours)."""
        if row is None:
            return self
        return Quota(
            row.requests_per_minute or self.requests_per_minute,
            row.tokens_per_minute or self.tokens_per_minute,
            row.concurrent_requests or self.concurrent_requests,
        )

    def limits(self, scope: str, lease_s: float) -> list[Limit]:
        out = []
        if self.requests_per_minute:
            out.append(Limit(f"rpm:{scope}", self.requests_per_minute))
        if self.tokens_per_minute:
            out.append(Limit(f"tpm:{scope}", self.tokens_per_minute, tally=True))
        if self.concurrent_requests:
            out.append(Limit(f"conc:{scope}", self.concurrent_requests, lease_s, kind="lease"))
        return out


def defaults(settings: LimitsSettings) -> tuple[Quota, Quota]:
    """The per-caller and the global quota from the settings."""
    s = settings
    return (
        Quota(s.requests_per_minute, s.tokens_per_minute, s.concurrent_requests),
        Quota(
            s.global_requests_per_minute,
            s.global_tokens_per_minute,
            s.global_concurrent_requests,
        ),
    )


def configured(settings: LimitsSettings, book: QuotaBook) -> bool:
    """Whether any limit is set at all (else no limiter is needed)."""
    each, whole = defaults(settings)
    return bool(each != Quota() or whole != Quota() or settings.models or book.quotas)


def limits(
    ctx: RequestContext, op: Operation, book: QuotaBook, settings: LimitsSettings
) -> list[Limit]:
    """The limits of one request (unit costs; token costs are the policy's). The same
    caller, user and model give the same limits until the book is reread: cached."""
    who = caller(ctx)
    key = (who, ctx.principal.user_id, op.model)
    cache = book.memo
    found = cache.get(key)
    if found is None:
        if len(cache) > 10_000:
            cache.clear()
        found = cache[key] = _limits(who, ctx.principal.user_id, op.model, book, settings)
    return list(found)


def _limits(
    who: str, user: str | None, model_name: str, book: QuotaBook, settings: LimitsSettings
) -> tuple[Limit, ...]:
    each, whole = defaults(settings)
    out = each.over(book.quotas.get(who)).limits(who, settings.lease_s)
    if user and who != f"user:{user}":
        row = book.quotas.get(f"user:{user}")
        if row is not None:
            out += Quota().over(row).limits(f"user:{user}", settings.lease_s)
    model = short(model_name)
    configured_for = {short(k): v for k, v in settings.models.items()}.get(model)
    per_model = Quota().over(configured_for).over(book.quotas.get(f"model:{model}"))
    out += per_model.limits(f"model:{model}", settings.lease_s)
    out += whole.limits("global", settings.lease_s)
    return tuple(out)


def budgets(ctx: RequestContext, book: QuotaBook) -> list[BudgetRow]:
    if not book.budgets:
        return []
    p = ctx.principal
    scopes = [caller(ctx)]
    user = p.user_id or (p.id if p.kind == "user" else None)
    if user:
        scopes.append(f"user:{user}")
        team = book.teams.get(user)
        if team:
            scopes.append(f"team:{team}")
    seen = dict.fromkeys(scopes)
    return [b for scope in seen for b in book.budgets.get(scope, [])]


async def resolve_scope(text: str, kinds: tuple[str, ...], access: AccessControl | None) -> str:
    """A scope as limits and budgets store it: checked (``KIND:ID``; a ValueError
    otherwise), a model's name as limits key it, a user's name turned into the user's
    id; a user, key or client that does not exist is NotFound (where ``access`` keeps
    principals). The admin API and the CLI both take scopes through here."""
    scope = check_scope(text, kinds)
    kind, _, value = scope.partition(":")
    if kind == "model":
        return f"model:{short(value)}"
    if access is None or kind not in ("user", "key", "client"):
        return scope
    if kind == "user":
        return f"user:{(await access.user(value)).id}"
    found = await (access.repo.key(value) if kind == "key" else access.repo.client(value))
    if found is None:
        raise NotFound(f"no {kind} {value!r}")
    return scope


def describe(limit: Limit) -> str:
    kind, _, scope = limit.key.partition(":")
    what = {"rpm": "requests per minute", "tpm": "tokens per minute", "conc": "at once"}
    return f"{limit.count} {what.get(kind, kind)} for {scope}"

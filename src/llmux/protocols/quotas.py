"""The quota admin API's request bodies (docs/quotas.md). Pure pydantic models."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llmux.limits.budgets import parse_money

LIMIT_SCOPES = ("key", "user", "client", "model")
BUDGET_SCOPES = ("key", "user", "client", "team")


def check_scope(scope: str, kinds: tuple[str, ...]) -> str:
    kind, colon, value = scope.strip().partition(":")
    if not colon or kind not in kinds or not value.strip() or len(scope) > 300:
        raise ValueError(f"a scope is KIND:ID with KIND one of {', '.join(kinds)}")
    return f"{kind}:{value.strip()}"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LimitBody(Strict):
    requests_per_minute: int | None = Field(None, ge=1, le=10**9)
    tokens_per_minute: int | None = Field(None, ge=1, le=10**12)
    concurrent_requests: int | None = Field(None, ge=1, le=10**6)


class BudgetBody(Strict):
    scope: str = Field(description="key:ID, user:ID or user:NAME, client:ID, team:NAME")
    period: Literal["day", "month", "total"] = "month"
    amount: str | float | int = Field(description="in the configured currency, e.g. '25.00'")

    @field_validator("scope")
    @classmethod
    def _scope(cls, v: str) -> str:
        return check_scope(v, BUDGET_SCOPES)

    @field_validator("amount")
    @classmethod
    def _amount(cls, v: str | float | int) -> str | float | int:
        _micros(v)
        return v

    def micros(self) -> int:
        return _micros(self.amount)


def _micros(amount: str | float | int) -> int:
    """Micro-units of an amount given as text or a number (a float to six places)."""
    return parse_money(f"{amount:.6f}" if isinstance(amount, float) else str(amount))

"""Access control's wire: the admin API's and a user's own request bodies, and the
objects they answer with. Pure pydantic models and functions. Documented in
docs/security.md."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llmux.auth.scopes import parse_scopes

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_PATTERNS = 64


def parse_expiry(value: str | float | int | None) -> float | None:
    """Seconds from a number or ``30d`` / ``12h`` / ``90m`` / ``2w``; None: never."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        found = _DURATION.match(str(value))
        if not found:
            raise ValueError("a duration is a number of seconds or like 30d, 12h, 90m, 2w")
        seconds = float(found.group(1)) * _UNITS[found.group(2)]
    if not 0 < seconds <= 10 * 365 * 86400:
        raise ValueError("a duration is positive and at most 10 years")
    return seconds


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Grant(Strict):
    name: str = Field("", max_length=100)
    scopes: list[str] | str | None = None
    models: list[str] = Field(default_factory=list, max_length=MAX_PATTERNS)

    @field_validator("scopes")
    @classmethod
    def _known(cls, v: Any) -> Any:
        parse_scopes(v)
        return v

    @field_validator("models")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        if any(not p.strip() or len(p) > 200 or " " in p.strip() for p in v):
            raise ValueError("a model pattern is 1 to 200 characters without spaces")
        return [p.strip() for p in v]

    def scope_set(self) -> frozenset[str] | None:
        return None if self.scopes is None else parse_scopes(self.scopes)


class KeyBody(_Grant):
    expires_in: str | float | None = None
    user: str | None = Field(None, description="admin API: the owner's id or name")

    @field_validator("expires_in")
    @classmethod
    def _expiry(cls, v: Any) -> Any:
        parse_expiry(v)
        return v


class ClientBody(_Grant):
    user: str | None = None
    secret: str | None = Field(None, max_length=512)


class UserBody(Strict):
    name: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=1, max_length=1024)
    role: Literal["admin", "user"] = "user"


class UserPatch(Strict):
    password: str | None = Field(None, max_length=1024)
    role: Literal["admin", "user"] | None = None
    disabled: bool | None = None
    team: str | None = Field(None, max_length=100, description="budgets per team; '' for none")


class LoginBody(Strict):
    name: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=1, max_length=1024)


class SetupBody(Strict):
    token: str = Field(max_length=200)
    name: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=1, max_length=1024)


class RevokeTokenBody(Strict):
    token: str | None = Field(None, max_length=8192)
    jti: str | None = Field(None, max_length=200)

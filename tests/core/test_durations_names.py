"""keep_alive durations and Ollama model names."""

from __future__ import annotations

import math

import pytest

from llmux.core.durations import parse_go_duration, parse_keep_alive, parse_setting_duration
from llmux.core.names import ModelName
from llmux.errors import InvalidRequest


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("5m", 300),
        ("1h30m", 5400),
        ("1.5s", 1.5),
        ("300ms", 0.3),
        ("0", 0),
        (3600, 3600),
        (0, 0),
        (-1, math.inf),
        ("-1m", math.inf),
        (None, None),
    ],
)
def test_keep_alive(value: object, seconds: float | None) -> None:
    assert parse_keep_alive(value) == (
        pytest.approx(seconds) if seconds not in (None, math.inf) else seconds
    )


@pytest.mark.parametrize("value", ["3600", "5 minutes", "m", "", True, [1]])
def test_bad_keep_alive(value: object) -> None:
    with pytest.raises(InvalidRequest):
        parse_keep_alive(value)


def test_settings_accept_plain_seconds_strings() -> None:
    assert parse_setting_duration("3600") == 3600 and parse_setting_duration("-1") == math.inf
    assert parse_go_duration("2h") == 7200


@pytest.mark.parametrize(
    "text",
    [
        "smollm2",
        "smollm2:latest",
        "library/smollm2",
        "registry.ollama.ai/library/smollm2:latest",
        "SmolLM2:Latest",
        "https://registry.ollama.ai/library/smollm2",
    ],
)
def test_name_forms_are_one_model(text: str) -> None:
    name = ModelName.parse(text)
    assert (
        name.full == "registry.ollama.ai/library/smollm2:latest"
        and name.display == "smollm2:latest"
    )


def test_display_keeps_what_differs() -> None:
    assert ModelName.parse("me/m:1b").display == "me/m:1b"
    assert (
        ModelName.parse("hub.example.com:5000/me/m").display == "hub.example.com:5000/me/m:latest"
    )


@pytest.mark.parametrize("text", ["", " ", "a/b/c/d", "bad name", "m:", "-m", "m:tag!"])
def test_invalid_names(text: str) -> None:
    with pytest.raises(InvalidRequest):
        ModelName.parse(text)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(1e12, math.inf), (10**400, math.inf), (9.3e9, math.inf), (-1e300, math.inf), (9e9, 9e9)],
)
def test_keep_alive_numbers_past_a_go_duration_mean_forever(value: object, seconds: float) -> None:
    assert parse_keep_alive(value) == seconds


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "3000000h", "9" * 400 + "s"])
def test_keep_alive_nan_infinite_and_overlong_strings_are_400(value: object) -> None:
    with pytest.raises(InvalidRequest, match=r"keep_alive|duration"):
        parse_keep_alive(value)

"""A bounded schemathesis run over the app's own /openapi.json (issue 21 item 20): cases
generated from the documented bodies and parameters, sent to the app assembled
in-process around a fake backend, must never get a 5xx. Derandomized, so a run is the
same every time; a few examples per operation keep it to seconds."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case

from tests.support.inprocess import BASE, App, in_process

_home = Path(tempfile.mkdtemp(prefix="llmux-schemathesis-"))
with in_process(_home / "schema") as _probe:
    SCHEMA = schemathesis.openapi.from_dict(_probe.client.get("/openapi.json").json())


@pytest.fixture(scope="module")
def app() -> Iterator[App]:
    with in_process(_home / "app") as a:
        yield a


@SCHEMA.parametrize()
@settings(
    max_examples=6,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_no_generated_request_gets_a_5xx(case: Case, app: App) -> None:
    kwargs: dict[str, Any] = case.as_transport_kwargs(base_url=BASE)
    kwargs.pop("verify", None)
    kwargs.pop("allow_redirects", None)
    kwargs.pop("timeout", None)
    for jar in ("cookies",):
        if not kwargs.get(jar):
            kwargs.pop(jar, None)
    body = kwargs.pop("data", None)
    if body is not None:
        kwargs["content"] = body
    response = app.client.request(**kwargs)
    assert response.status_code < 500, (case.method, case.path, kwargs, response.text[:500])

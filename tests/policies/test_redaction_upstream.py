"""Placeholders round trip through a real upstream, and a real judge model: a front
llmux pseudonymises the prompt, a second llmux process (the real engine and the bundled model, logging its
prompts: [server] log_bodies) sees only placeholders, and the client gets its own values
back. The reply's placeholder is forced by a JSON schema, so no test depends on how the
model words its reply."""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Iterator

import pytest
from openai import OpenAI

from tests.conftest import MODEL, Server, start_server

pytestmark = pytest.mark.model

PHONE = "13800138000"
EMAIL = "li.lei@example.com"
SCHEMA = {
    "type": "object",
    "properties": {"phone": {"type": "string", "enum": ["[PHONE_1]"]}},
    "required": ["phone"],
}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    upstream = start_server(
        tmp_path_factory.mktemp("pii-up"),
        extra_env={"LLMUX_SERVER__LOG_LEVEL": "debug", "LLMUX_SERVER__LOG_BODIES": "true"},
    )
    home = tmp_path_factory.mktemp("pii-front")
    config = home / "llmux.toml"
    config.write_text(
        textwrap.dedent(f"""
        [redaction]
        enabled = true
        action = "pseudonymize"
        [moderation]
        judge_model = "{MODEL}"
        judge_categories = ["violence", "harassment"]
        [[upstreams]]
        name = "up"
        type = "openai"
        url = "{upstream.url}/v1"
        models = {{ "remote" = "{MODEL}" }}
    """)
    )
    front = start_server(
        home, extra_env={"LLMUX_CONFIG": str(config), "LLMUX_SERVER__LOG_LEVEL": "debug"}
    )
    yield front, upstream
    front.stop()
    upstream.stop()


def test_the_upstream_sees_placeholders_and_the_client_its_values(
    servers: tuple[Server, Server],
) -> None:
    front, upstream = servers
    client = OpenAI(base_url=front.url + "/v1", api_key="unused", max_retries=0)
    messages = [
        {"role": "user", "content": f"我的手机号是{PHONE}, email {EMAIL}. Which is my phone?"}
    ]
    fmt: dict = {"type": "json_schema", "json_schema": {"name": "phone", "schema": SCHEMA}}
    whole = client.chat.completions.create(
        model="remote",
        messages=messages,
        response_format=fmt,
        temperature=0,
        max_tokens=30,  # type: ignore[arg-type]
    )
    assert json.loads(whole.choices[0].message.content or "") == {"phone": PHONE}
    stream = client.chat.completions.create(
        model="remote", messages=messages, response_format=fmt, temperature=0,  # type: ignore[arg-type]
        max_tokens=30, stream=True,
    )  # fmt: skip
    parts = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert json.loads("".join(parts)) == {"phone": PHONE}
    seen = upstream.log.read_text()
    assert "prompt" in seen and "[PHONE_1]" in seen and "[EMAIL_1]" in seen
    assert PHONE not in seen and EMAIL not in seen
    # the front's own log lines are scrubbed: the request line of a request for a model
    # named like the value is logged masked
    with pytest.raises(Exception, match="not found"):
        client.chat.completions.create(model=f"x{PHONE}", messages=messages)
    deadline = time.monotonic() + 10
    while "x[PHONE]" not in front.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    own = front.log.read_text()
    assert "x[PHONE]" in own and PHONE not in own


def test_a_real_model_judges_for_the_moderations_endpoint(servers: tuple[Server, Server]) -> None:
    """The bundled model answers the judge's question within its schema (what it decides
    is the model's business; that a verdict comes back, parsed, is llmux's)."""
    front, _ = servers
    client = OpenAI(base_url=front.url + "/v1", api_key="unused", max_retries=0)
    got = client.moderations.create(input="I will find you and hurt you.")
    result = got.results[0]
    assert result.flagged == (result.categories.violence or result.categories.harassment)
    flagged = {k for k, v in result.categories.model_dump(by_alias=True).items() if v}
    assert flagged <= {"violence", "harassment"}

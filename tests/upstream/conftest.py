"""Two real llmux processes, the upstream (with the bundled model) and the gateway in
front of it (no local model), plus the scripted fault server on a thread. The gateway's
one configuration holds every upstream the tests need, so only two servers start."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Server, free_port, start_server
from tests.upstream.scripted import Scripted

FAST_RETRY = """
[upstreams.retry.429]
base_s = 0.05
[upstreams.retry.500]
retries = 1
base_s = 0.01
[upstreams.retry.502]
base_s = 0.01
[upstreams.retry.connect]
base_s = 0.01
"""

QUIET_BREAKER = """
[upstreams.breaker]
window = 1000
min_calls = 1000
"""


def gateway_config(real: str, scripted: str, dead: str) -> str:
    return f"""
[store]
bundled_model = ""

[gateway]
keepalive_s = 0.4

[[upstreams]]
name = "real-ollama"
type = "ollama"
url = "{real}"

[[upstreams]]
name = "real-ollama2"
type = "ollama"
url = "{real}"
models = {{ "ol-smol" = "smollm2:135m" }}

[[upstreams]]
name = "real-openai"
type = "openai"
url = "{real}/v1"
models = {{ "oa-smol" = "smollm2:135m" }}
api_key = "sk-test-not-logged"

[[upstreams]]
name = "s-ollama"
type = "ollama"
url = "{scripted}"
models = ["think-ol", "flaky-ol", "tool-ol"]
fast_path = false
{FAST_RETRY}

[[upstreams]]
name = "s-openai"
type = "openai"
url = "{scripted}/v1"
models = ["think-oa", "flaky-oa", "tool-oa"]
fast_path = false
{FAST_RETRY}

[[upstreams]]
name = "s-faulty"
type = "openai"
url = "{scripted}/v1"
models = ["fail", "reset", "broke", "busy", "tired", "cut", "nochunk", "comments"]
{FAST_RETRY}
{QUIET_BREAKER}

[[upstreams]]
name = "s-faulty-ol"
type = "ollama"
url = "{scripted}"
models = ["garbage", "drop"]
fast_path = false  # the fast path relays whatever bytes come, garbage included
{QUIET_BREAKER}

[[upstreams]]
name = "s-slow"
type = "ollama"
url = "{scripted}"
models = ["slow"]
first_byte_timeout_s = 1.0
timeout_s = 5
[upstreams.retry.504]
retries = 0

[[upstreams]]
name = "s-lazy"
type = "ollama"
url = "{scripted}"
models = ["lazy", "nochunk-ol"]

[[upstreams]]
name = "dead"
type = "ollama"
url = "{dead}"
models = ["pool"]
weight = 5
health_interval_s = 0

[[upstreams]]
name = "s-reset"
type = "ollama"
url = "{scripted}"
models = {{ "pool" = "reset" }}
weight = 5

[[upstreams]]
name = "s-pool"
type = "ollama"
url = "{scripted}"
models = ["pool"]

[[upstreams]]
name = "s-drop"
type = "ollama"
url = "{scripted}"
models = {{ "midfail" = "drop" }}
weight = 100
fast_path = false
{QUIET_BREAKER}

[[upstreams]]
name = "s-fine"
type = "ollama"
url = "{scripted}"
models = {{ "midfail" = "midfail-ok" }}
fast_path = false

[[upstreams]]
name = "s-brk"
type = "openai"
url = "{scripted}"
models = ["brk"]
health_interval_s = 0
[upstreams.breaker]
window = 4
min_calls = 2
open_s = 1.0
half_open_calls = 2
[upstreams.retry.500]
retries = 0
"""


@pytest.fixture(scope="session")
def scripted() -> Iterator[Scripted]:
    srv = Scripted().start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def real_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("upstream"),
        extra_env={"LLMUX_ENGINE__KEEP_ALIVE": "30m", "LLMUX_ENGINE__NUM_PARALLEL": "2"},
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, real_upstream: Server, scripted: Scripted
) -> Iterator[Server]:
    home: Path = tmp_path_factory.mktemp("gateway")
    config = home / "llmux.toml"
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config.write_text(gateway_config(real_upstream.url, scripted.url, dead))
    srv = start_server(home, extra_env={"LLMUX_CONFIG": str(config)})
    yield srv
    srv.stop()

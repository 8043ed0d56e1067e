"""The container image and the compose stack, without a Docker engine: the Dockerfile's
promises (portable engine flags, non-root, volumes, health check), the image's entry
point and health check run here as plain programs, the compose file and HAProxy's
configuration read as data. The real build and stack: ``scripts/deploy-check``, run by
the last test only when LLMUX_DEPLOY_CHECK=1 (it needs dockerd and about 10 minutes)."""

from __future__ import annotations

import http.server
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
ENTRYPOINT = ROOT / "deploy/images/llmux/entrypoint.sh"
HEALTHCHECK = ROOT / "deploy/images/llmux/healthcheck.py"
COMPOSE = ROOT / "deploy/compose.yaml"
HAPROXY = (ROOT / "deploy/compose/haproxy.cfg").read_text()


def arg_default(name: str) -> str:
    found = re.search(rf'^ARG {name}="?(.*?)"?$', DOCKERFILE, re.M)
    assert found, f"ARG {name} missing"
    return found.group(1)


# -- the Dockerfile ------------------------------------------------------------------------


def test_engine_flags_are_install_engines_portable_ones() -> None:
    script = (ROOT / "scripts/install-engine.sh").read_text()
    default = re.search(r'^DEFAULT_ARGS="(.*)"$', script, re.M)
    version = re.search(r"LLMUX_LLAMA_CPP_VERSION:-([0-9.]+)", script)
    assert default and version
    assert arg_default("CMAKE_ARGS") == default.group(1)
    assert arg_default("LLAMA_CPP_VERSION") == version.group(1)
    assert "-DGGML_NATIVE=OFF" in default.group(1)
    code = "\n".join(line for line in DOCKERFILE.splitlines() if not line.startswith("#"))
    assert "march=native" not in code and "GGML_NATIVE=ON" not in code


def test_base_is_a_build_argument_defaulting_to_python_slim() -> None:
    assert arg_default("BASE") == "python:3.11-slim-bookworm"
    assert re.search(r"^FROM \$\{BASE\} AS builder$", DOCKERFILE, re.M)
    assert re.search(r"^FROM \$\{RUNTIME_BASE\} AS runtime$", DOCKERFILE, re.M)


def test_runtime_stage_is_non_root_with_volumes_port_and_health() -> None:
    runtime = DOCKERFILE.split("AS runtime", 1)[1]
    assert "build-essential" not in runtime and "cmake" not in runtime
    assert re.search(r"^USER 10001:10001$", runtime, re.M)
    assert 'VOLUME ["/models", "/data"]' in runtime
    assert re.search(r"^EXPOSE 11434$", runtime, re.M)
    assert "HEALTHCHECK" in runtime and "llmux-healthcheck.py" in runtime
    for env in (
        "LLMUX_HOME=/data",
        "LLMUX_STORE__PATH=/models",
        "LLMUX_HOST=0.0.0.0:11434",
        "LLMUX_AUTH__MODE=on",
    ):
        assert env in runtime
    assert 'CMD ["llmux", "serve"]' in runtime


def test_extras_exist_in_pyproject() -> None:
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for extra in arg_default("EXTRAS").split(","):
        assert extra in extras, extra


def test_dockerignore_keeps_local_state_out() -> None:
    lines = (ROOT / ".dockerignore").read_text().split()
    assert lines[lines.index("*")] == "*"  # an allow list
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "src", "deploy/images/llmux"}


# -- the entry point and the health check, run here ---------------------------------------


def run_entrypoint(env: dict[str, str], *cmd: str) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ["PATH"]}
    return subprocess.run(["sh", str(ENTRYPOINT), *cmd], env={**base, **env},
                          capture_output=True, text=True, timeout=10)  # fmt: skip


def test_entrypoint_turns_file_variables_into_values(tmp_path: Path) -> None:
    secret = tmp_path / "admin_password"
    secret.write_text("s3cret with spaces\n")
    done = run_entrypoint(
        {"LLMUX_AUTH__ADMIN_PASSWORD_FILE": str(secret), "OTHER_FILE": "/nowhere"},
        "sh", "-c", 'printf "%s|%s|%s" "$LLMUX_AUTH__ADMIN_PASSWORD" '
        '"${LLMUX_AUTH__ADMIN_PASSWORD_FILE-unset}" "$OTHER_FILE"',
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "s3cret with spaces|unset|/nowhere"


def test_entrypoint_refuses_both_forms_and_unreadable_files(tmp_path: Path) -> None:
    secret = tmp_path / "s"
    secret.write_text("x")
    both = run_entrypoint({"LLMUX_METRICS__TOKEN": "a", "LLMUX_METRICS__TOKEN_FILE": str(secret)},
                          "true")  # fmt: skip
    assert both.returncode == 1 and "set one" in both.stderr
    missing = run_entrypoint({"LLMUX_METRICS__TOKEN_FILE": str(tmp_path / "none")}, "true")
    assert missing.returncode == 1 and "cannot be read" in missing.stderr


@pytest.fixture
def health_server() -> Iterator[tuple[int, list[int]]]:
    status = [200]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status[0] if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], status
    server.shutdown()


def test_healthcheck_asks_healthz_on_the_served_port(health_server: tuple[int, list[int]]) -> None:
    port, status = health_server

    def probe() -> int:
        env = {"PATH": os.environ["PATH"], "LLMUX_HOST": f"0.0.0.0:{port}"}
        return subprocess.run(["python3", str(HEALTHCHECK)], env=env, capture_output=True,
                              timeout=10).returncode  # fmt: skip

    assert probe() == 0
    status[0] = 503
    assert probe() == 1


# -- the compose stack and the load balancer -----------------------------------------------


@pytest.fixture(scope="module")
def stack() -> dict[str, object]:
    loaded: dict[str, object] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def test_compose_has_the_stack_and_profiles(stack: dict[str, object]) -> None:
    services = stack["services"]
    assert isinstance(services, dict)
    assert {"llmux1", "llmux2", "lb", "postgres", "redis", "prometheus"} <= set(services)
    assert services["grafana"]["profiles"] == ["grafana"]
    assert services["upstream"]["profiles"] == ["upstream"]
    assert "version" not in stack  # the Compose Specification: v2 and docker-compose 1.28+
    for name, service in services.items():
        build = service.get("build")
        if build and build["context"] != "..":
            assert (COMPOSE.parent / build["context"] / "Dockerfile").is_file(), name


def test_compose_secrets_are_files_and_all_defined(stack: dict[str, object]) -> None:
    defined = stack["secrets"]
    assert isinstance(defined, dict)
    used = {s for svc in stack["services"].values() for s in svc.get("secrets", [])}
    assert used <= set(defined)
    for spec in defined.values():
        assert spec["file"].startswith("./compose/secrets/")
    replica = stack["services"]["llmux1"]["environment"]
    assert all(v.startswith("/run/secrets/") for k, v in replica.items() if k.endswith("_FILE"))
    text = COMPOSE.read_text()
    assert "PASSWORD:" not in text.replace("PASSWORD_FILE:", "").replace("PASSWORD__FILE:", "")


def test_compose_publishes_on_loopback_by_default(stack: dict[str, object]) -> None:
    for name, service in stack["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("${LLMUX_STACK_BIND:-127.0.0.1}:"), (name, port)
    assert "ports" not in stack["services"]["llmux1"]  # only through the load balancer
    assert stack["networks"]["data"]["internal"] is True


def haproxy_seconds(name: str) -> int:
    found = re.search(rf"^\s*timeout {name} (\d+)([smh])\b", HAPROXY, re.M)
    assert found, f"timeout {name} missing"
    return int(found.group(1)) * {"s": 1, "m": 60, "h": 3600}[found.group(2)]


def test_load_balancer_is_streaming_safe_and_checks_readiness() -> None:
    assert haproxy_seconds("server") >= 600  # silence between two tokens
    assert haproxy_seconds("client") >= 600
    assert haproxy_seconds("tunnel") >= 600  # WebSocket
    assert "option http-buffer-request" not in HAPROXY
    assert "http-reuse safe" in HAPROXY  # keep-alive to the replicas
    assert "option httpchk" in HAPROXY and "uri /readyz" in HAPROXY
    assert "resolvers docker" in HAPROXY  # a recreated replica's new address is found
    assert re.search(r"^\s*server llmux1 llmux1:11434$", HAPROXY, re.M)
    assert re.search(r"^\s*server llmux2 llmux2:11434$", HAPROXY, re.M)
    # the edge replaces a client's X-Forwarded-For (llmux trusts the stack's subnet)
    assert "http-request set-header X-Forwarded-For %[src]" in HAPROXY
    assert not re.search(r"^\s*option forwardfor", HAPROXY, re.M)


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_docker_compose_v1_accepts_the_file() -> None:
    done = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "-q"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.skipif(
    os.environ.get("LLMUX_DEPLOY_CHECK") != "1",
    reason="LLMUX_DEPLOY_CHECK=1 runs scripts/deploy-check (dockerd, ~10 min)",
)
@pytest.mark.timeout(3600)
def test_deploy_check() -> None:
    done = subprocess.run([str(ROOT / "scripts/deploy-check")], capture_output=True, text=True,
                          timeout=3600)  # fmt: skip
    assert done.returncode == 0, (done.stdout[-4000:], done.stderr[-4000:])


def test_stop_grace_period_covers_the_drain(stack: dict[str, object]) -> None:
    import tomllib

    drain = tomllib.loads((ROOT / "deploy/compose/llmux.toml").read_text())["server"]["drain_s"]
    grace = stack["services"]["llmux1"]["stop_grace_period"]
    assert grace.endswith("m")
    assert int(grace[:-1]) * 60 >= drain + 30  # and time to flush usage and audit
    assert haproxy_seconds("server") >= drain

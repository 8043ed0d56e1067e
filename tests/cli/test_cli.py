"""The ``llmux`` command as a user runs it: real processes, real HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import MODEL, Server, free_port, start_server


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmux", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_list_ps_version_use_llmux_host(server: Server) -> None:
    result = run_cli("list", env=server.env)
    assert result.returncode == 0 and MODEL in result.stdout
    httpx.post(server.url + "/api/generate", json={"model": MODEL, "keep_alive": "5m"}, timeout=60)
    result = run_cli("ps", env=server.env)
    assert result.returncode == 0 and MODEL in result.stdout
    result = run_cli("version", env=server.env)
    assert "server version is" in result.stdout and server.url in result.stdout


def test_no_server_gives_one_line_error(tmp_path: Path) -> None:
    env = {**os.environ, "LLMUX_HOST": f"127.0.0.1:{free_port()}", "LLMUX_HOME": str(tmp_path)}
    result = run_cli("list", env=env)
    assert result.returncode == 1
    assert "could not reach llmux" in result.stderr and "llmux serve" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    env = {**os.environ, "LLMUX_HOME": str(tmp_path)}
    result = run_cli("serve", "--config", str(tmp_path / "nope.toml"), env=env)
    assert (
        result.returncode == 1
        and "does not exist" in result.stderr
        and "Traceback" not in result.stderr
    )


@pytest.mark.model
def test_config_file_and_flags(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "llmux.toml"
    config.write_text(
        f'host = "127.0.0.1:{free_port()}"\nbundled_model = "tiny:v1"\nkeep_alive = "-1"\n'
    )
    srv = start_server(
        tmp_path / "home",
        args=["--config", str(config), "--port", str(port)],
        port=port,
        host_env=False,
    )
    try:
        url = srv.url  # --port wins over the TOML file's host
        names = [m["name"] for m in httpx.get(url + "/api/tags").json()["models"]]
        assert names == ["tiny:v1"], "bundled_model from the TOML file"
        httpx.post(url + "/api/generate", json={"model": "tiny:v1"}, timeout=60)
        assert httpx.get(url + "/api/ps").json()["models"][0]["expires_at"].startswith("2318"), (
            "keep_alive -1 from TOML"
        )
    finally:
        srv.stop()


def test_host_flag_takes_host_and_port(tmp_path: Path) -> None:
    port = free_port()
    srv = start_server(tmp_path, args=["--host", f"127.0.0.1:{port}"], port=port, host_env=False)
    try:
        assert httpx.get(srv.url + "/").status_code == 200
    finally:
        srv.stop()


def test_unreachable_history_database_is_one_line(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "LLMUX_HOME": str(tmp_path),
        "LLMUX_HOST": f"127.0.0.1:{free_port()}",
        "LLMUX_STORAGE__DATABASE_URL": f"postgresql://llmux:s3cret@127.0.0.1:{free_port()}/llmux",
    }
    result = run_cli("serve", env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr + result.stdout
    assert "could not open the database" in result.stderr and "s3cret" not in result.stderr


def test_bad_host_flag_is_one_line(tmp_path: Path) -> None:
    result = run_cli("serve", "--host", "127.0.0.1:notaport", env={"LLMUX_HOME": str(tmp_path)})
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "invalid port" in result.stderr


@pytest.mark.model
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_graceful_shutdown(tmp_path: Path, sig: int) -> None:
    srv = start_server(tmp_path)
    httpx.post(srv.url + "/api/generate", json={"model": MODEL, "keep_alive": "5m"}, timeout=60)
    # uvicorn re-raises the signal once shutdown is complete, so the exit status
    # reports it; what matters is that shutdown ran to its end.
    assert srv.stop(sig) in (0, -sig, 128 + sig)
    log = srv.log.read_text()
    assert "Application shutdown complete" in log and "Traceback" not in log

"""``llmux serve --tls-cert/--tls-key`` terminates TLS itself: 1.3 when the client can,
1.2 accepted, anything older refused; a cert without its key is a one-line error."""

from __future__ import annotations

import datetime as dt
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import ARTIFACTS, free_port


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def env_for(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMUX_")}
    env.update(LLMUX_HOME=str(home), LLMUX_STORE__BUNDLED_MODEL="")
    return env


@pytest.fixture(scope="module")
def https(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    home = tmp_path_factory.mktemp("tls")
    cert, key = self_signed(home)
    port = free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    log = ARTIFACTS / f"server-tls-{port}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmux", "serve", "--host", f"127.0.0.1:{port}",
         "--tls-cert", str(cert), "--tls-key", str(key)],
        env=env_for(home), stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"https://localhost:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            httpx.get(url + "/", verify=ssl.create_default_context(cafile=str(cert)), timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.2)
    yield url, cert
    proc.terminate()
    proc.wait(timeout=30)


def handshake(url: str, cert: Path, low: ssl.TLSVersion, high: ssl.TLSVersion) -> str:
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.minimum_version, ctx.maximum_version = low, high
    if low < ssl.TLSVersion.TLSv1_2:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with httpx.Client(verify=ctx) as client:
        r = client.get(url + "/")
        assert r.status_code == 200 and r.text == "Ollama is running"
        stream = r.extensions["network_stream"]
        return str(stream.get_extra_info("ssl_object").version())


def test_tls_13_is_preferred_and_12_accepted(https: tuple[str, Path]) -> None:
    url, cert = https
    assert (
        handshake(url, cert, ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.MAXIMUM_SUPPORTED) == "TLSv1.3"
    )
    assert handshake(url, cert, ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_older_tls_and_plain_http_are_refused(https: tuple[str, Path]) -> None:
    url, cert = https
    with pytest.raises((httpx.ConnectError, ssl.SSLError)):
        handshake(url, cert, ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1)
    with pytest.raises(httpx.HTTPError):
        httpx.get(url.replace("https://", "http://") + "/", timeout=5)


def test_a_cert_without_its_key_is_one_line(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "llmux", "serve", "--host", f"127.0.0.1:{free_port()}",
         "--tls-cert", str(cert)], env=env_for(tmp_path), capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert "--tls-key" in done.stderr.strip().splitlines()[-1]

"""The image's HEALTHCHECK: GET /healthz on the port llmux serves (LLMUX_HOST), over
HTTPS when [server] tls_cert is set. Exit 0 when it answers 200, else 1; stdlib only."""

import os
import ssl
import sys
import urllib.request

host = os.environ.get("LLMUX_HOST", "0.0.0.0:11434").rsplit("//", 1)[-1]
port = host.rsplit(":", 1)[-1] if ":" in host else "11434"
tls = bool(os.environ.get("LLMUX_SERVER__TLS_CERT"))
url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/healthz"
context = ssl._create_unverified_context() if tls else None  # the local hop only
try:
    with urllib.request.urlopen(url, timeout=3, context=context) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception as exc:  # noqa: BLE001 - any failure means unhealthy
    print(f"unhealthy: {url}: {exc}", file=sys.stderr)
    sys.exit(1)

"""A scripted HTTP server on loopback that injects faults (429, 503, dropped streams,
error lines) which the real llmux server cannot be made to produce on demand."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = (
        None  # an object (sent as JSON), or a list of lines (sent as a chunked NDJSON stream)
    )
    drop: bool = False  # stop a chunked stream without its last chunk (a dropped connection)
    pause: float = 0.0  # seconds between streamed lines


def ok(body: Any) -> Reply:
    return Reply(200, body=body)


class FaultServer:
    """Answers request n with ``script[n]`` (the last entry repeats). ``seen`` records
    ``(method, path, time)`` of every request."""

    def __init__(self, script: list[Reply]) -> None:
        self.script = script
        self.seen: list[tuple[str, str, float]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                server._reply(self)

            do_GET = do_POST = do_DELETE = do_PATCH = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def _reply(self, h: BaseHTTPRequestHandler) -> None:
        with self._lock:
            index = len(self.seen)
            self.seen.append((h.command, h.path, time.monotonic()))
        reply = self.script[min(index, len(self.script) - 1)]
        h.send_response(reply.status)
        for key, value in reply.headers.items():
            h.send_header(key, value)
        if isinstance(reply.body, list):
            h.send_header("Content-Type", "application/x-ndjson")
            h.send_header("Transfer-Encoding", "chunked")
            h.send_header("Connection", "close")
            h.end_headers()
            for line in reply.body:
                data = (json.dumps(line) + "\n").encode()
                h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                h.wfile.flush()
                time.sleep(reply.pause)
            if not reply.drop:
                h.wfile.write(b"0\r\n\r\n")
            h.close_connection = True
            return
        data = b"" if reply.body is None else json.dumps(reply.body).encode()
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def __enter__(self) -> FaultServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

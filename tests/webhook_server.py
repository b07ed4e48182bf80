"""Test helper: a real HTTP server on loopback that records every request it receives (a webhook receiver)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


@dataclass
class WebhookServer:
    """Answers each request with the next scripted (status, headers) and records it; 200 when the script is done."""

    port: int
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    delay_s: float = 0.0

    def url(self, path: str = "/hooks/T000/B000/XXXXSECRETXXXX") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@contextmanager
def webhook_server(script: list[tuple[int, dict[str, str]]] | None = None, delay_s: float = 0.0
                   ) -> Iterator[WebhookServer]:  # fmt: skip
    """A running recording server; stopped when the block ends."""
    state = WebhookServer(port=0, script=list(script or []), delay_s=delay_s)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            with lock:
                state.received.append(Received("POST", self.path, dict(self.headers.items()), body))
                status, headers = state.script.pop(0) if state.script else (200, {})
            if state.delay_s:
                threading.Event().wait(state.delay_s)
            answer = b"ok" if status < 300 else b"no"
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()

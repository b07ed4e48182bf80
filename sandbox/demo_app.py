"""The demo app: one small HTTP service, run twice (stable v1, canary v2), with switchable faults.

`POST /control` with JSON `{"error_rate": 0.5, "latency_ms": 700}` changes its behaviour at run
time (`{}` = healthy); `GET /control` shows it; `GET /healthz` is for the supervisor. Every other
GET answers 200 with a small JSON body, or 500 at `error_rate`, after `latency_ms` of extra delay.
With `--grpc-port` it also serves a gRPC method (`grpc_service`) that fails with UNAVAILABLE at
`error_rate`, after the same delay.

    python -m rollguard.sandbox.demo_app --port 8081 --version v2 --seed 7 [--grpc-port 9081]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Behaviour:
    """How the app answers: the fraction of requests that get HTTP 500, and added latency."""

    error_rate: float = 0.0
    latency_ms: float = 0.0

    @classmethod
    def from_json(cls, payload: object) -> Behaviour:
        """Validate a /control body; ValueError names the bad field and the allowed range."""
        if not isinstance(payload, dict):
            raise ValueError('body must be a JSON object like {"error_rate": 0.5, "latency_ms": 0}')
        unknown = set(payload) - {"error_rate", "latency_ms"}
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))}; allowed: error_rate, latency_ms")
        error_rate = payload.get("error_rate", 0.0)
        latency_ms = payload.get("latency_ms", 0.0)
        if not isinstance(error_rate, (int, float)) or not 0.0 <= error_rate <= 1.0:
            raise ValueError(f"error_rate must be a number from 0 to 1, got {error_rate!r}")
        if not isinstance(latency_ms, (int, float)) or not 0.0 <= latency_ms <= 60_000:
            raise ValueError(f"latency_ms must be a number from 0 to 60000, got {latency_ms!r}")
        return cls(float(error_rate), float(latency_ms))


def describe(behaviour: Behaviour, protocol: str = "http") -> str:
    """The behaviour in words: `HTTP 500 on 50 % of requests, +700 ms`, or `healthy`."""
    parts = []
    if behaviour.error_rate > 0:
        failure = "gRPC UNAVAILABLE (HTTP 200)" if protocol == "grpc" else "HTTP 500"
        parts.append(f"{failure} on {behaviour.error_rate:.0%} of requests")
    if behaviour.latency_ms > 0:
        parts.append(f"+{behaviour.latency_ms:g} ms on every request")
    return ", ".join(parts) or "healthy"


class DemoApp:
    """State shared by the request threads: the current behaviour and a seeded random source."""

    def __init__(self, version: str, seed: int | None) -> None:
        self.version = version
        self.behaviour = Behaviour()
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def decide(self) -> tuple[int, float]:
        """(status code, added delay in seconds) for the next request."""
        with self._lock:
            behaviour = self.behaviour
            failing = self._random.random() < behaviour.error_rate
        return (500 if failing else 200), behaviour.latency_ms / 1000.0


class LoopbackServer(ThreadingHTTPServer):
    """A threading HTTP server with a listen backlog deep enough for the demo's bursts."""

    request_queue_size = 128
    daemon_threads = True


def make_handler(app: DemoApp) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to `app`."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms Nagle/delayed-ACK stall

        def _send(self, status: int, payload: object) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/healthz":
                self._send(200, {"ok": True, "version": app.version})
                return
            if self.path == "/control":
                self._send(200, asdict(app.behaviour))
                return
            status, delay_s = app.decide()
            if delay_s > 0:
                time.sleep(delay_s)
            message = "internal error (injected)" if status == 500 else "hello from podinfo"
            self._send(status, {"version": app.version, "message": message})

        def do_POST(self) -> None:
            if self.path != "/control":
                self._send(404, {"error": "POST only on /control"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            try:
                behaviour = Behaviour.from_json(json.loads(self.rfile.read(length) or b"{}"))
            except ValueError as exc:  # json.JSONDecodeError is a ValueError too
                self._send(400, {"error": str(exc)})
                return
            app.behaviour = behaviour
            self._send(200, asdict(behaviour))

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def main(argv: list[str] | None = None) -> int:
    """Serve the demo app on 127.0.0.1 until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m rollguard.sandbox.demo_app", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--version", required=True, help="subset this process plays, e.g. v1 or v2")
    parser.add_argument("--seed", type=int, default=None, help="seed of the error draw (reproducible runs)")
    parser.add_argument("--grpc-port", type=int, default=None, help="also serve the gRPC method on this port")
    args = parser.parse_args(argv)
    app = DemoApp(args.version, args.seed)
    grpc_server = None
    try:
        server = LoopbackServer(("127.0.0.1", args.port), make_handler(app))
        if args.grpc_port:
            from rollguard.sandbox.grpc_service import AppService, start_server

            grpc_server = start_server(args.grpc_port, AppService(args.version, app.decide))
    except OSError as exc:
        print(f"demo app {args.version}: cannot listen on 127.0.0.1:{args.port}: {exc}", file=sys.stderr)
        return 4
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        if grpc_server is not None:
            grpc_server.stop(grace=1.0)
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The sandbox's stand-in for the Argo Workflows controller's /metrics endpoint: template metrics of local runs.

The local executor computes a node's template metrics when it completes (rollguard.sandbox.executor.
metrics) and sends them here (`POST /emit`, `run-local --metrics-url`, the demo by itself); this
process keeps them as the controller keeps custom metrics in memory and serves them on `/metrics`
(`argo_workflows_` prefix), which the sandbox's Prometheus scrapes as job `argo-workflows`.

    python -m rollguard.sandbox.workflow_metrics --port 9090
"""

from __future__ import annotations

import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler

from rollguard.sandbox.demo_app import LoopbackServer
from rollguard.sandbox.executor.metrics import Emission, MetricsRegistry

EMIT_PATH = "/emit"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def make_handler(registry: MetricsRegistry) -> type[BaseHTTPRequestHandler]:
    """Request handler over `registry`: GET /metrics, GET /healthz, POST /emit."""

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._send(200, registry.exposition().encode(), CONTENT_TYPE)
            elif self.path == "/healthz":
                self._send(200, b'{"ok": true}', "application/json")
            else:
                self._send(404, b'{"error": "GET /metrics or /healthz"}', "application/json")

        def do_POST(self) -> None:
            if self.path != EMIT_PATH:
                self._send(404, b'{"error": "POST only on /emit"}', "application/json")
                return
            length = int(self.headers.get("Content-Length") or 0)
            try:
                emissions = [Emission.from_json(item) for item in json.loads(self.rfile.read(length) or b"[]")]
            except (ValueError, KeyError, TypeError) as exc:
                self._send(400, json.dumps({"error": f"not a list of emissions: {exc}"}).encode(), "application/json")
                return
            problems = registry.record(emissions)
            self._send(200, json.dumps({"recorded": len(emissions) - len(problems), "problems": problems}).encode(),
                       "application/json")

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def main(argv: list[str] | None = None) -> int:
    """Serve the metrics endpoint on 127.0.0.1 until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m rollguard.sandbox.workflow_metrics", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    try:
        server = LoopbackServer(("127.0.0.1", args.port), make_handler(MetricsRegistry()))
    except OSError as exc:
        print(f"workflow metrics: cannot listen on 127.0.0.1:{args.port}: {exc}", file=sys.stderr)
        return 4
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

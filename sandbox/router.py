"""The sandbox's mesh router: the stand-in for Istio's data plane, with ArgoCD's sync in the same process.

It proxies every request to the stable or the canary app by the live split (rollguard.sandbox.
live_split), which the ArgoCD model (rollguard.sandbox.argocd_model) keeps at the VirtualService of
the GitOps remote's branch head (polled every `--poll-interval`, applied `--sync-delay` after it
is seen; PostSync hook, self-heal). It exports Istio's request metrics on `/metrics`, shows the
live weights, the log of every change (with its time and source) and the sync operation on
`/admin/weights`, and takes a live patch on `POST /admin/live` ({"stable": 100, "canary": 0}).
With `--grpc-port` it relays gRPC calls too (`grpc_service`), by the same weights.

It plays both proxies of a request: the caller's (`reporter="source"`) and the destination's
(`reporter="destination"`). An app that stops answering its health check every `--readiness-interval`
leaves its subset's endpoints, as a crashed pod leaves Kubernetes' endpoints: requests routed to that
subset then get 503 with Envoy's flag UH (no healthy upstream) from the caller's proxy, and those
between the crash and the next probe 503 UF (connection refused). Only the caller reports them.

    python -m rollguard.sandbox.router --port 8080 --git-dir /tmp/remote.git \
        --stable-url http://127.0.0.1:8081 --canary-url http://127.0.0.1:8082
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import random
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rollguard.sandbox.argocd_model import ArgoCdModel, ArgoCdSettings
from rollguard.sandbox.demo_app import LoopbackServer
from rollguard.sandbox.git_remote import MANIFEST_PATH, GitRemote, GitRemoteError
from rollguard.sandbox.istio_metrics import CONTENT_TYPE, IstioMetrics, PeerView
from rollguard.sandbox.live_split import RouteSettings, TrafficTable, WeightChange, read_weights
from rollguard.sandbox.upstreams import Readiness, Upstreams
from rollguard.steps import logs

if TYPE_CHECKING:
    from rollguard.sandbox.grpc_service import Relayed

log = logging.getLogger("rollguard.sandbox.router")

ADMIN_PATH = "/admin/weights"
LIVE_PATH = "/admin/live"
VERSION_HEADER = "x-rollguard-version"




class Router:
    """Routes requests by the table's weights and records Istio metrics for each one."""

    def __init__(self, settings: RouteSettings, table: TrafficTable, seed: int | None = None,
                 readiness: Readiness | None = None) -> None:
        self.settings = settings
        self.table = table
        self.metrics = IstioMetrics(settings.namespace, settings.service)
        self.upstreams = Upstreams(settings.stable_url, settings.canary_url)
        self.readiness = readiness
        self._random = random.Random(seed)
        self._random_lock = threading.Lock()

    def choose(self) -> str:
        """"stable" or "canary" for the next request, by the current weights."""
        with self._random_lock:
            draw = self._random.random() * 100
        return "canary" if draw < self.table.canary_share() else "stable"

    def subset_of(self, role: str) -> str:
        """The subset name of "stable" or "canary"."""
        return self.settings.canary_subset if role == "canary" else self.settings.stable_subset

    def is_ready(self, role: str) -> bool:
        """Whether `role` has a ready endpoint (always, without a readiness prober)."""
        return self.readiness is None or self.readiness.ready.get(role, True)

    def forward(self, method: str, path: str, headers: dict[str, str], body: bytes | None) -> tuple[int, bytes, str]:
        """Send the request to the chosen upstream; (status, body, subset). 503 UH/UF when it cannot be reached."""
        role = self.choose()
        subset = self.subset_of(role)
        workload = f"{self.settings.service}-{subset}"
        started = time.perf_counter()
        if not self.is_ready(role):
            self.metrics.record(subset, workload, 503, (time.perf_counter() - started) * 1000.0, reporter="source",
                                flags="UH", peer=PeerView.NONE)
            return 503, b'{"error": "no healthy upstream"}', subset
        status, payload, flags = 503, b'{"error": "upstream connect error"}', "UF"
        for attempt in range(2):  # a kept-alive connection may have been closed by the app: retry once
            connection = self.upstreams.connection(role, fresh=attempt > 0)
            try:
                connection.request(method, path, body=body, headers=headers)
                response = connection.getresponse()
                status, payload, flags = response.status, response.read(), "-"
                break
            except (OSError, http.client.HTTPException):
                connection.close()
        duration_ms = (time.perf_counter() - started) * 1000.0
        if flags == "UF":  # never reached the app: only the caller's proxy knows of it
            self.metrics.record(subset, workload, status, duration_ms, reporter="source", flags="UF",
                                peer=PeerView.ENDPOINT)
        else:
            self.metrics.record(subset, workload, status, duration_ms)
            self.metrics.record(subset, workload, status, duration_ms, reporter="source")
        return status, payload, subset

    def record_grpc(self, subset: str, relayed: Relayed, duration_ms: float) -> None:
        """Istio's metrics for one relayed gRPC call: HTTP 200 and its gRPC status."""
        workload = f"{self.settings.service}-{subset}"
        if not relayed.reached:
            peer = PeerView.NONE if relayed.flags == "UH" else PeerView.ENDPOINT
            self.metrics.record(subset, workload, 200, duration_ms, reporter="source", protocol="grpc",
                                grpc_status=relayed.status, flags=relayed.flags, peer=peer)
            return
        for reporter in ("destination", "source"):
            self.metrics.record(subset, workload, 200, duration_ms, reporter=reporter, protocol="grpc",
                                grpc_status=relayed.status)


def make_handler(router: Router, argocd: ArgoCdModel | None = None) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to `router` (and the ArgoCD model shown on the admin endpoint)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms Nagle/delayed-ACK stall

        def _reply(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def _proxy(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {"Content-Type": self.headers.get("Content-Type", "application/octet-stream")} if body else {}
            status, payload, subset = router.forward(method, self.path, headers, body)
            self._reply(status, payload, "application/json", {VERSION_HEADER: subset})

        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._reply(200, router.metrics.exposition(), CONTENT_TYPE)
            elif self.path == ADMIN_PATH:
                view = {**router.table.snapshot(), **(argocd.snapshot() if argocd is not None else {})}
                self._reply(200, json.dumps(view).encode(), "application/json")
            elif self.path == "/healthz":
                self._reply(200, b'{"ok": true}', "application/json")
            else:
                self._proxy("GET")

        def do_POST(self) -> None:
            if self.path == LIVE_PATH:
                self._live_patch()
            else:
                self._proxy("POST")

        def _live_patch(self) -> None:
            """The stand-in for `kubectl patch virtualservice`: set the live split now, Git untouched."""
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
                stable, canary = int(body["stable"]), int(body["canary"])
                if stable < 0 or canary < 0 or stable + canary != 100:
                    raise ValueError("stable and canary must be 0-100 and add up to 100")
            except (ValueError, KeyError, TypeError) as exc:
                message = json.dumps({"error": f'give {{"stable": S, "canary": C}} adding up to 100: {exc}'})
                self._reply(400, message.encode(), "application/json")
                return
            now = time.time()
            router.table.live_patch(WeightChange("live-patch", stable, canary, now, now, source="live-patch"))
            self._reply(200, json.dumps(router.table.snapshot()).encode(), "application/json")

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags of the router process."""
    parser = argparse.ArgumentParser(prog="python -m rollguard.sandbox.router", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--git-dir", type=Path, required=True, help="the bare GitOps repository")
    parser.add_argument("--branch", default="main")
    parser.add_argument("--path", default=MANIFEST_PATH, help="manifest file inside the repository")
    parser.add_argument("--virtual-service", default="podinfo")
    parser.add_argument("--stable-subset", default="v1")
    parser.add_argument("--canary-subset", default="v2")
    parser.add_argument("--stable-url", required=True)
    parser.add_argument("--canary-url", required=True)
    parser.add_argument("--namespace", default="demo")
    parser.add_argument("--service", default="podinfo")
    parser.add_argument("--poll-interval", type=float, default=0.2, help="seconds between reads of the branch head")
    parser.add_argument("--sync-delay", type=float, default=0.0,
                        help="seconds between seeing a commit and applying it (30 or 180 emulate ArgoCD)")
    parser.add_argument("--self-heal", type=float, default=5.0,
                        help="seconds after a live patch that Git does not hold until ArgoCD reverts it (negative: "
                             "self-heal off)")
    parser.add_argument("--post-sync-hook", type=json.loads, default=None, metavar="JSON_ARGV",
                        help='command run after each sync of a new revision, as a JSON list (["rollguard", ...]); '
                             "the sync stays open until it ends")
    parser.add_argument("--readiness-interval", type=float, default=0.5,
                        help="seconds between health probes of the apps (0: no probes, always ready)")
    parser.add_argument("--grpc-port", type=int, default=None, help="also relay gRPC calls on this port")
    parser.add_argument("--stable-grpc", default=None, help="host:port of the stable app's gRPC listener")
    parser.add_argument("--canary-grpc", default=None, help="host:port of the canary app's gRPC listener")
    parser.add_argument("--seed", type=int, default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Start routing by the head's weights; exit 4 when the remote or the port is unusable."""
    args = build_parser().parse_args(argv)
    logs.configure("router")
    settings = RouteSettings(
        remote=GitRemote(args.git_dir, args.branch), manifest_path=args.path, virtual_service=args.virtual_service,
        stable_subset=args.stable_subset, canary_subset=args.canary_subset, stable_url=args.stable_url,
        canary_url=args.canary_url, namespace=args.namespace, service=args.service,
        readiness_interval_s=args.readiness_interval, stable_grpc=args.stable_grpc, canary_grpc=args.canary_grpc,
    )
    argocd_settings = ArgoCdSettings(sync_delay_s=args.sync_delay, poll_interval_s=args.poll_interval,
                                     self_heal_s=args.self_heal if args.self_heal >= 0 else None,
                                     post_sync_hook=args.post_sync_hook)
    try:
        head = settings.remote.head()
        stable, canary = read_weights(settings, head)
    except (ValueError, GitRemoteError) as exc:
        log.error("cannot read the traffic split from %s (branch %s, %s): %s",
                  args.git_dir, args.branch, args.path, exc)
        return 4
    now = time.time()
    table = TrafficTable(stable, canary, head)
    table.apply(WeightChange(head, stable, canary, now, now))
    argocd = ArgoCdModel(settings, table, argocd_settings)
    readiness = None
    if settings.readiness_interval_s > 0:
        readiness = Readiness({"stable": settings.stable_url, "canary": settings.canary_url},
                              settings.readiness_interval_s)
    router = Router(settings, table, args.seed, readiness)
    try:
        server = LoopbackServer(("127.0.0.1", args.port), make_handler(router, argocd))
        grpc_server = _start_grpc(router, settings, args.grpc_port) if args.grpc_port else None
    except (OSError, ValueError) as exc:
        log.error("cannot listen on 127.0.0.1:%d: %s", args.port, exc)
        return 4
    argocd.start()
    if readiness is not None:
        readiness.start()
    log.info("routing %s on 127.0.0.1:%d: %d %% to %s, %d %% to %s", args.service, args.port, stable,
             args.stable_url, canary, args.canary_url)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        argocd.stopped.set()
        if readiness is not None:
            readiness.stopped.set()
        if grpc_server is not None:
            grpc_server.stop(grace=1.0)
        server.server_close()
    return 0


def _start_grpc(router: Router, settings: RouteSettings, port: int) -> Any:
    """The gRPC relay on `port` (grpcio is imported only when gRPC is asked for)."""
    from rollguard.sandbox.grpc_service import Relay, start_server

    if not settings.stable_grpc or not settings.canary_grpc:
        raise ValueError("--grpc-port needs --stable-grpc and --canary-grpc")
    relay = Relay(router, {"stable": settings.stable_grpc, "canary": settings.canary_grpc})
    log.info("relaying gRPC on 127.0.0.1:%d", port)
    return start_server(port, relay, workers=64)


if __name__ == "__main__":
    sys.exit(main())

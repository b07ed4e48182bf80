"""The sandbox's gRPC side, with grpcio: one unary method the demo app serves, the mesh router relays and the
load generator calls. Raw bytes, no generated stubs: the payload does not matter, the status does.

The router relays the upstream's gRPC status faithfully (and its own when the upstream is unreachable:
UNAVAILABLE over HTTP 200, as Envoy's gRPC local reply), so `istio_requests_total` carries
`request_protocol="grpc"` and `grpc_response_status` as a mesh's proxies would record them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

METHOD = "/podinfo.Greeter/Hello"
VERSION_KEY = "x-rollguard-version"

# Envoy's Grpc::Utility::grpcToHttpStatus: a user's gRPC call counts as failed where HTTP would be 5xx.
GRPC_TO_HTTP = {0: 200, 1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429, 9: 400, 10: 409, 11: 400,
                12: 501, 13: 500, 14: 503, 15: 500, 16: 401}

_CODES = {code.value[0]: code for code in grpc.StatusCode}


def status_code(number: int) -> grpc.StatusCode:
    """grpc.StatusCode of a status number (UNKNOWN for one outside the table)."""
    return _CODES.get(number, grpc.StatusCode.UNKNOWN)


def start_server(port: int, handler: grpc.GenericRpcHandler, workers: int = 32) -> grpc.Server:
    """A started insecure gRPC server on 127.0.0.1:`port` with `handler`; OSError when the port is taken."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
                         handlers=[handler])
    if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
        raise OSError(f"cannot listen on 127.0.0.1:{port} for gRPC")
    server.start()
    return server


class AppService(grpc.GenericRpcHandler):
    """The demo app's gRPC method: after the behaviour's delay, OK, or UNAVAILABLE when the fault hits."""

    def __init__(self, version: str, decide: Callable[[], tuple[int, float]]) -> None:
        self.version = version
        self.decide = decide  # () -> (HTTP-style status: 500 means fail this call, added delay in seconds)

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        if handler_call_details.method != METHOD:
            return None
        return grpc.unary_unary_rpc_method_handler(self._hello)

    def _hello(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        status, delay_s = self.decide()
        if delay_s > 0:
            time.sleep(delay_s)
        if status >= 500:
            context.abort(grpc.StatusCode.UNAVAILABLE, "injected fault")
        return f'{{"version": "{self.version}", "message": "hello from podinfo"}}'.encode()


@dataclass(frozen=True)
class Relayed:
    """One relayed call as the caller's proxy saw it: the gRPC status, and whether it reached the upstream."""

    status: int
    reached: bool  # False: the caller's proxy failed it (no ready endpoint, connection failed)
    flags: str  # Envoy response flags: "-", "UH", "UF"
    details: str = ""


class RelayRouter(Protocol):
    """What the gRPC relay needs from the mesh router."""

    def choose(self) -> str:
        """"stable" or "canary" by the current weights."""
        ...

    def subset_of(self, role: str) -> str:
        """The subset name of a role."""
        ...

    def is_ready(self, role: str) -> bool:
        """Whether the role has a ready endpoint."""
        ...

    def record_grpc(self, subset: str, relayed: Relayed, duration_ms: float) -> None:
        """Record Istio's metrics for one relayed call."""
        ...


class Relay(grpc.GenericRpcHandler):
    """The mesh router's gRPC listener: every call to any method goes to stable or canary by the weights."""

    def __init__(self, router: RelayRouter, upstreams: dict[str, str]) -> None:
        self.router = router
        self.channels = {role: grpc.insecure_channel(address) for role, address in upstreams.items()}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = str(handler_call_details.method)
        return grpc.unary_unary_rpc_method_handler(lambda request, context: self._relay(method, request, context))

    def _relay(self, method: str, request: bytes, context: grpc.ServicerContext) -> bytes:
        role = self.router.choose()
        subset = self.router.subset_of(role)
        context.send_initial_metadata(((VERSION_KEY, subset),))
        started = time.perf_counter()
        reply, relayed = self._call(role, method, request, context.time_remaining())
        self.router.record_grpc(subset, relayed, (time.perf_counter() - started) * 1000.0)
        if relayed.status != 0:
            context.abort(status_code(relayed.status), relayed.details or "upstream failed")
        return reply

    def _call(self, role: str, method: str, request: bytes, remaining_s: float | None) -> tuple[bytes, Relayed]:
        if not self.router.is_ready(role):
            return b"", Relayed(14, reached=False, flags="UH", details="no healthy upstream")
        call: Any = self.channels[role].unary_unary(method)
        timeout = min(30.0, remaining_s) if remaining_s is not None else 30.0
        try:
            reply = call(request, timeout=timeout)
        except grpc.RpcError as exc:
            code: grpc.StatusCode = exc.code()
            details = str(exc.details() or "")
            if code is grpc.StatusCode.UNAVAILABLE and "connect" in details.lower():
                return b"", Relayed(14, reached=False, flags="UF", details="upstream connect error")
            return b"", Relayed(code.value[0], reached=True, flags="-", details=details)
        return bytes(reply), Relayed(0, reached=True, flags="-")


def call_once(channel: grpc.Channel, timeout_s: float = 30.0) -> tuple[int, str]:
    """One call of the demo method: (gRPC status number, the version that answered or "-")."""
    method: Any = channel.unary_unary(METHOD)
    try:
        _reply, call = method.with_call(b"hello", timeout=timeout_s)
        return 0, _version(call.initial_metadata())
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        metadata = exc.initial_metadata() if hasattr(exc, "initial_metadata") else None
        return code.value[0], _version(metadata)


def _version(metadata: Any) -> str:
    for key, value in metadata or ():
        if key == VERSION_KEY:
            return str(value)
    return "-"

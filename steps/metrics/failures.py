"""What counts as a failed request or connection: one definition, rendered as PromQL label matchers for the
queries and applied to a series' labels for rollguard's own counter arithmetic, so the two cannot drift.

- HTTP: `response_code` 5xx, whatever the protocol (a proxy failing a gRPC call with 503 still counts).
- gRPC: `grpc_response_status` in the error set (default: the statuses Envoy maps to HTTP 5xx).
- A request the caller's proxy failed before any proxy of the destination saw it (`response_flags` UH, UF or
  UO): it exists only in `reporter="source"` series, so it is counted there, and only there.
- TCP: a connection closed with an upstream failure flag (UH, UF, UO, URX).

Why each set, with sources: `README.md` beside this file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# gRPC status codes, grpc/grpc doc/statuscodes.md (and grpc.StatusCode).
GRPC_STATUS_NAMES: dict[int, str] = {
    0: "OK", 1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED", 5: "NOT_FOUND",
    6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED", 9: "FAILED_PRECONDITION", 10: "ABORTED",
    11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED", 13: "INTERNAL", 14: "UNAVAILABLE", 15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}
_GRPC_CODES_BY_NAME = {name: code for code, name in GRPC_STATUS_NAMES.items()}

# Server-side failures: exactly the statuses Envoy's gRPC-to-HTTP mapping (Grpc::Utility::grpcToHttpStatus)
# turns into a 5xx. RESOURCE_EXHAUSTED maps to 429 (quota, rate limit, message too large: like HTTP 429,
# not counted); the rest are the caller's own doing (4xx, 499).
DEFAULT_GRPC_ERROR_CODES = frozenset({2, 4, 12, 13, 14, 15})

# Envoy response flags (access-log RESPONSE_FLAGS, Istio's `response_flags` label).
# A request with one of these failed in the caller's proxy before any proxy of the destination saw it:
# no healthy endpoint in the subset, the connection could not be made, the circuit breaker refused it.
# Such a request has no destination-reported twin, so counting it from the caller cannot count it twice.
NEVER_REACHED_FLAGS = ("UH", "UF", "UO")
# A TCP connection closed with one of these never carried the application's bytes (URX on TCP: the
# maximum connect attempts were reached, i.e. connecting kept failing).
TCP_FAILURE_FLAGS = ("UH", "UF", "UO", "URX")

FLAG_MEANINGS = {
    "UH": "no healthy upstream", "UF": "upstream connection failure", "UO": "upstream overflow (circuit breaker)",
    "URX": "connect attempts exhausted",
}

SERVER_ERRORS = 'response_code=~"5.."'


def grpc_status_text(code: int) -> str:
    """`UNAVAILABLE (14)`; a code outside the table is shown by number."""
    name = GRPC_STATUS_NAMES.get(code)
    return f"{name} ({code})" if name else f"status {code}"


def parse_grpc_codes(text: str) -> frozenset[int]:
    """`UNAVAILABLE,internal,4` -> {4, 13, 14}; `none` (or nothing) -> no gRPC status counts as an error.

    ValueError names the unknown entry and the valid names and numbers.
    """
    stripped = str(text).strip()
    if stripped.lower() in ("", "none"):
        return frozenset()
    codes: set[int] = set()
    for raw in stripped.split(","):
        entry = raw.strip()
        if not entry:
            continue
        code = int(entry) if entry.isdigit() else _GRPC_CODES_BY_NAME.get(entry.upper().replace("-", "_"))
        if code is None or code not in GRPC_STATUS_NAMES:
            valid = ", ".join(f"{name} ({number})" for number, name in GRPC_STATUS_NAMES.items() if number != 0)
            raise ValueError(f"{entry!r} is not a gRPC status; valid names and numbers: {valid}")
        if code == 0:
            raise ValueError("OK (0) is success and cannot count as an error")
        codes.add(code)
    return frozenset(codes)


def grpc_codes_text(codes: Iterable[int]) -> str:
    """The canonical flag value: names in numeric order (`UNKNOWN,DEADLINE_EXCEEDED,...`), or `none`."""
    ordered = sorted(set(codes))
    return ",".join(GRPC_STATUS_NAMES[code] for code in ordered) if ordered else "none"


def flags_matcher(flags: Iterable[str]) -> str:
    """`response_flags=~"(.*,)?(UH|UF|UO)(,.*)?"`: any of `flags` among Envoy's comma-separated flags."""
    return f'response_flags=~"(.*,)?({"|".join(flags)})(,.*)?"'


def flags_in(value: str, flags: Iterable[str]) -> list[str]:
    """The flags of a `response_flags` label value (`UF,URX`) that are in `flags`, in label order."""
    wanted = set(flags)
    return [flag for flag in value.split(",") if flag in wanted]


@dataclass(frozen=True)
class ErrorDefinition:
    """Which answers count as errors: HTTP 5xx always, plus these gRPC statuses."""

    grpc_error_codes: frozenset[int] = DEFAULT_GRPC_ERROR_CODES

    def grpc_matcher(self) -> str | None:
        """`grpc_response_status=~"2|4|12|13|14|15"`, or None when no gRPC status counts."""
        if not self.grpc_error_codes:
            return None
        return f'grpc_response_status=~"{"|".join(str(code) for code in sorted(self.grpc_error_codes))}"'

    def request_error_matchers(self) -> tuple[str, ...]:
        """Alternative matchers on `istio_requests_total`: a series matching any of them is a failed request.

        A series may match several (a gRPC call answered 503 with UNAVAILABLE); compose them with PromQL's
        `or`, which keeps such a series once.
        """
        grpc = self.grpc_matcher()
        return (SERVER_ERRORS,) if grpc is None else (SERVER_ERRORS, grpc)

    def request_failure(self, labels: Mapping[str, str]) -> str | None:
        """How a request series failed (`gRPC UNAVAILABLE (14)`, `HTTP 503`), or None when it did not.

        The gRPC status is named first: for a gRPC call it says more than the HTTP code, which is 200
        even when the call failed.
        """
        status = labels.get("grpc_response_status", "")
        if status.isdigit() and int(status) in self.grpc_error_codes:
            return f"gRPC {grpc_status_text(int(status))}"
        code = labels.get("response_code", "")
        if len(code) == 3 and code.startswith("5") and code.isdigit():
            return f"HTTP {code}"
        return None


def never_reached_failure(labels: Mapping[str, str], tcp: bool = False) -> str | None:
    """How a caller-reported request (or TCP connection) failed before reaching the destination, or None."""
    found = flags_in(labels.get("response_flags", ""), TCP_FAILURE_FLAGS if tcp else NEVER_REACHED_FLAGS)
    if not found:
        return None
    what = "TCP connection" if tcp else "request"
    return f"{what} {found[0]} at the caller ({FLAG_MEANINGS[found[0]]}, never reached it)"


def tcp_failure(labels: Mapping[str, str]) -> str | None:
    """How a destination-reported TCP connection failed (`TCP connection UF (...)`), or None."""
    found = flags_in(labels.get("response_flags", ""), TCP_FAILURE_FLAGS)
    return f"TCP connection {found[0]} ({FLAG_MEANINGS[found[0]]})" if found else None

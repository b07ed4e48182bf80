"""The alert rules a team would page on, for the sandbox's Prometheus: the manual baseline's start.

Same PromQL as `rollguard analyze` (rollguard.steps.metrics.istio_queries), compared with the same
thresholds. `for:` defaults to 1m, what teams commonly set so one bad scrape does not page anyone;
the time an alert starts firing is the moment a human would be paged (the experiment's baseline).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path

from ruamel.yaml import YAML

from rollguard.steps.metrics.failures import DEFAULT_GRPC_ERROR_CODES
from rollguard.steps.options import format_duration
from rollguard.steps.output_files import write_atomically

ERROR_ALERT = "CanaryHighErrorRate"
LATENCY_ALERT = "CanaryHighLatency"


@dataclass(frozen=True)
class AlertSettings:
    """Which service and canary version the alerts watch, their thresholds and their `for:`."""

    namespace: str = "demo"
    service: str = "podinfo"
    canary_version: str = "v2"
    window: str = "10s"
    max_error_rate: float = 0.01
    max_p99_ms: float = 500.0
    for_s: float = 60.0
    grpc_error_codes: frozenset[int] = field(default=DEFAULT_GRPC_ERROR_CODES)


def error_rate_expr(settings: AlertSettings) -> str:
    """The canary's failed-request share (the query analyze runs, the same definition of an error), without the
    comparison: HTTP 5xx, gRPC error statuses, requests that never reached it, failed TCP connections."""
    from rollguard.steps.metrics.failures import ErrorDefinition
    from rollguard.steps.metrics.istio_queries import error_rate_query

    return error_rate_query(settings.namespace, settings.service, settings.canary_version, settings.window,
                            ErrorDefinition(settings.grpc_error_codes))


def p99_expr(settings: AlertSettings) -> str:
    """The canary's p99 latency query in milliseconds (the one analyze runs)."""
    from rollguard.steps.metrics.istio_queries import p99_latency_query

    return p99_latency_query(settings.namespace, settings.service, settings.canary_version, settings.window)


def rules_text(settings: AlertSettings) -> str:
    """A Prometheus rules file with the canary error-rate and p99 alerts."""
    labels = {"severity": "page", "service": settings.service, "version": settings.canary_version}
    document = {
        "groups": [
            {
                "name": "rollguard-canary",
                "rules": [
                    {
                        "alert": ERROR_ALERT,
                        "expr": f"({error_rate_expr(settings)}) > {settings.max_error_rate!r}",
                        "for": format_duration(settings.for_s),
                        "labels": dict(labels),
                        "annotations": {
                            "summary": f"canary {settings.canary_version} of {settings.service} fails more than "
                            f"{settings.max_error_rate:.1%} of its requests",
                        },
                    },
                    {
                        "alert": LATENCY_ALERT,
                        "expr": f"({p99_expr(settings)}) > {settings.max_p99_ms!r}",
                        "for": format_duration(settings.for_s),
                        "labels": dict(labels),
                        "annotations": {
                            "summary": f"canary {settings.canary_version} of {settings.service} has p99 latency "
                            f"above {settings.max_p99_ms:.0f} ms",
                        },
                    },
                ],
            }
        ]
    }
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.width = 4096
    buffer = StringIO()
    yaml.dump(document, buffer)
    return buffer.getvalue()


def write_rules(path: Path, settings: AlertSettings) -> Path:
    """Write the rules file to `path` and return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, rules_text(settings))
    return path

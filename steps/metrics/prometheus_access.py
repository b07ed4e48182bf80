"""The flags every command that queries Prometheus shares (Thanos, Mimir/Cortex, VictoriaMetrics, Amazon and
Google managed Prometheus, OpenShift), and their checks before any query: headers, a bearer token file, TLS
files, AWS SigV4 — each problem a PrometheusAccessError (exit 2) that names the flag and never shows a secret.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from rollguard.steps.metrics.prometheus_connection import PrometheusConnection, tls_context
from rollguard.steps.metrics.prometheus_endpoint import (
    DEFAULT_SIGV4_SERVICE,
    REDACTED,
    HeaderSpec,
    PrometheusAccessError,
    PrometheusEndpoint,
    SigV4Options,
    TlsOptions,
    read_secret_file,
)
from rollguard.steps.metrics.prometheus_url import PrometheusUrlError, parse_prometheus_url
from rollguard.steps.options import add_flag, add_switch

# Header names the connection sets itself, or that would change the request's meaning.
_RESERVED_HEADERS = {"host", "content-length", "transfer-encoding", "connection"}


class _CollectHeaders(argparse._StoreAction):
    """--prometheus-header may be repeated: each use adds one; the first use replaces ROLLGUARD_PROMETHEUS_HEADER's."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: str | None = None
    ) -> None:
        current = getattr(namespace, self.dest, None)
        before = () if current is self.default else tuple(current or ())
        setattr(namespace, self.dest, before + tuple(values))


def header_lines(text: str) -> tuple[str, ...]:
    """argparse type: one `NAME=VALUE` per use; the environment variable may hold several, one a line."""
    return tuple(line.strip() for line in str(text).splitlines() if line.strip())


def add_prometheus_access_arguments(group: argparse._ArgumentGroup) -> None:
    """The flags after --prometheus-url that say how to authenticate and trust the server (analyze, experiment)."""
    add_flag(group, "--prometheus-header", type=header_lines, action=_CollectHeaders,
             help="extra HTTP header NAME=VALUE for every query (repeatable; one a line in the environment "
             "variable), e.g. X-Scope-OrgID=team-a for Mimir/Cortex; VALUE file:PATH reads a mounted secret "
             "(re-read when it changes), env:VARIABLE reads the environment")
    add_flag(group, "--prometheus-bearer-token-file",
             help="file holding a bearer token (sent as Authorization: Bearer); re-read when it changes, as a "
             "projected service-account token rotates")
    add_flag(group, "--prometheus-ca-file", help="PEM CA bundle that signed the server's certificate (OpenShift's "
             "service CA, a private CA); default: the system's")
    add_flag(group, "--prometheus-cert-file", help="PEM client certificate for mTLS (with --prometheus-key-file)")
    add_flag(group, "--prometheus-key-file", help="PEM private key of --prometheus-cert-file")
    add_switch(group, "--prometheus-insecure-skip-verify",
               help="do not verify the server's TLS certificate (logs a warning; prefer --prometheus-ca-file)")
    add_switch(group, "--prometheus-sigv4",
               help="sign queries with AWS SigV4 (Amazon Managed Service for Prometheus); credentials from the "
               "AWS sources a pod has (environment, web identity / IRSA, EKS Pod Identity)")
    add_flag(group, "--prometheus-sigv4-region",
             help="AWS region of the workspace (default: AWS_REGION, AWS_DEFAULT_REGION)")
    add_flag(group, "--prometheus-sigv4-service", default=DEFAULT_SIGV4_SERVICE, help="SigV4 service name")


def access_from_args(args: argparse.Namespace) -> PrometheusEndpoint:
    """Check the access flags before any query; PrometheusAccessError (exit 2) names the flag."""
    try:
        endpoint = parse_prometheus_url(args.prometheus_url)
    except PrometheusUrlError as exc:
        raise PrometheusAccessError(f"--prometheus-url {exc}") from None
    headers = tuple(_header(entry) for entry in getattr(args, "prometheus_header", None) or ())
    names = [header.name.lower() for header in headers]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise PrometheusAccessError(f"--prometheus-header {duplicated[0]} is given twice; give each header once")
    token_file = getattr(args, "prometheus_bearer_token_file", None) or None
    if token_file:
        read_secret_file(token_file, "--prometheus-bearer-token-file")
    tls = TlsOptions(getattr(args, "prometheus_ca_file", None) or None, getattr(args, "prometheus_cert_file", None)
                     or None, getattr(args, "prometheus_key_file", None) or None,
                     bool(getattr(args, "prometheus_insecure_skip_verify", False)))
    sigv4 = None
    if getattr(args, "prometheus_sigv4", False):
        region = (getattr(args, "prometheus_sigv4_region", None) or os.environ.get("AWS_REGION")
                  or os.environ.get("AWS_DEFAULT_REGION") or "").strip()
        if not region:
            raise PrometheusAccessError("--prometheus-sigv4 needs --prometheus-sigv4-region (or AWS_REGION): the "
                                        "region of the Amazon Managed Prometheus workspace, e.g. eu-west-1")
        service = (getattr(args, "prometheus_sigv4_service", None) or DEFAULT_SIGV4_SERVICE).strip()
        sigv4 = SigV4Options(region, service)
    elif getattr(args, "prometheus_sigv4_region", None):
        raise PrometheusAccessError("--prometheus-sigv4-region is set but --prometheus-sigv4 is not; add "
                                    "--prometheus-sigv4 to sign queries")
    access = PrometheusEndpoint(endpoint, headers, token_file, tls, sigv4)
    _check_one_authorization(access)
    if access.url.startswith("https://") or access.tls != TlsOptions():
        tls_context(access.tls, check_only=True)  # plain http with no TLS flag: nothing to check, ~50 ms saved
    if sigv4 is not None:
        from rollguard.steps.metrics.sigv4 import SigV4SetupError, SigV4Signer

        try:
            SigV4Signer(sigv4.region, sigv4.service)
        except SigV4SetupError as exc:
            raise PrometheusAccessError(f"--prometheus-sigv4: {exc}") from None
    PrometheusConnection(access).secrets()  # reads every header value now: a missing file or variable is exit 2
    return access


def _header(entry: str) -> HeaderSpec:
    name, equals, value = entry.partition("=")
    name = name.strip()
    if not equals or not name:
        raise PrometheusAccessError(f"--prometheus-header {_shown_entry(entry)!r} is not NAME=VALUE, e.g. "
                                    "X-Scope-OrgID=team-a or Authorization=file:/var/run/secrets/prometheus/auth")
    if not all(33 <= ord(character) <= 126 and character not in '()<>@,;:\\"/[]?={} ' for character in name):
        raise PrometheusAccessError(f"--prometheus-header {name!r} is not an HTTP header name")
    if name.lower() in _RESERVED_HEADERS:
        raise PrometheusAccessError(f"--prometheus-header {name}: rollguard sets this header itself")
    for prefix in ("file", "env"):
        if value.startswith(prefix + ":"):
            target = value[len(prefix) + 1:].strip()
            if not target:
                raise PrometheusAccessError(f"--prometheus-header {name}={prefix}: names no {prefix}")
            return HeaderSpec(name, prefix, target)
    return HeaderSpec(name, "value", value.strip())


def _shown_entry(entry: str) -> str:
    """An entry in an error message: its name part only, as the rest may be a secret."""
    return entry.partition("=")[0][:60] if "=" in entry else (entry[:3] + REDACTED if len(entry) > 3 else entry)


def _check_one_authorization(access: PrometheusEndpoint) -> None:
    """Basic auth in the URL, a bearer token, an Authorization header and SigV4 each set Authorization: one only."""
    sources = [flag for flag, present in (
        ("user:password@ in --prometheus-url", access.endpoint.auth is not None),
        ("--prometheus-bearer-token-file", access.bearer_token_file is not None),
        ("--prometheus-header Authorization", any(h.name.lower() == "authorization" for h in access.headers)),
        ("--prometheus-sigv4", access.sigv4 is not None),
    ) if present]
    if len(sources) > 1:
        raise PrometheusAccessError(f"{' and '.join(sources)} both set the Authorization header; give one")

"""What reaching a Prometheus-compatible API takes, once checked: the URL (and its basic auth), extra headers,
a bearer token file, TLS and AWS SigV4 options — and reading a mounted secret file, with every secret kept out
of messages. The flags that fill these in are rollguard.steps.metrics.prometheus_access; the requests they
shape are rollguard.steps.metrics.prometheus_connection.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rollguard.steps.metrics.prometheus_url import PrometheusUrl
from rollguard.steps.options import UsageError

MAX_SECRET_FILE_BYTES = 64 * 1024  # a token or a header value; a projected service-account token is ~1 KB
REDACTED = "***"
DEFAULT_SIGV4_SERVICE = "aps"  # Amazon Managed Service for Prometheus


class PrometheusAccessError(UsageError):
    """A Prometheus access flag cannot be used; the message names the flag and never shows a secret."""


@dataclass(frozen=True)
class HeaderSpec:
    """`--prometheus-header NAME=VALUE`: a literal value, `file:PATH` (re-read when it changes) or `env:VARIABLE`."""

    name: str
    source: str  # "value", "file" or "env"
    text: str = field(repr=False)  # the value, the path or the variable's name


@dataclass(frozen=True)
class TlsOptions:
    """Which server certificates to trust, and the client certificate, if any."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure_skip_verify: bool = False


@dataclass(frozen=True)
class SigV4Options:
    """AWS SigV4 signing: the workspace's region and the service name (aps)."""

    region: str
    service: str = DEFAULT_SIGV4_SERVICE


@dataclass(frozen=True)
class PrometheusEndpoint:
    """Everything needed to reach Prometheus, checked: the URL (and its basic auth), headers, token, TLS, SigV4."""

    endpoint: PrometheusUrl
    headers: tuple[HeaderSpec, ...] = ()
    bearer_token_file: str | None = None
    tls: TlsOptions = TlsOptions()
    sigv4: SigV4Options | None = None

    @property
    def url(self) -> str:
        """The URL without credentials: what logs and the verdict show."""
        return self.endpoint.url

    def as_json(self) -> dict[str, Any]:
        """What the verdict records about access: names and paths, never a value."""
        return {
            "prometheus_headers": [f"{h.name}=<{h.source}>" if h.source == "value" else f"{h.name}={h.source}:{h.text}"
                                   for h in self.headers],
            "prometheus_bearer_token_file": self.bearer_token_file,
            "prometheus_ca_file": self.tls.ca_file,
            "prometheus_cert_file": self.tls.cert_file,
            "prometheus_insecure_skip_verify": self.tls.insecure_skip_verify,
            "prometheus_sigv4": None if self.sigv4 is None else {"region": self.sigv4.region,
                                                                  "service": self.sigv4.service},
        }


def read_secret_file(path: str, flag: str) -> str:
    """The stripped text of a mounted secret; PrometheusAccessError when it is missing, empty or not text."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_SECRET_FILE_BYTES + 1)
    except FileNotFoundError:
        raise PrometheusAccessError(f"{flag} {path} does not exist (is the Secret mounted there?)") from None
    except IsADirectoryError:
        raise PrometheusAccessError(f"{flag} {path} is a directory; name the file of the key in it") from None
    except OSError as exc:
        raise PrometheusAccessError(f"{flag} {path} cannot be read: {exc.strerror}") from None
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise PrometheusAccessError(f"{flag} {path} is over {MAX_SECRET_FILE_BYTES // 1024} KiB; not a token")
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise PrometheusAccessError(f"{flag} {path} is not UTF-8 text") from None
    if not text:
        raise PrometheusAccessError(f"{flag} {path} is empty")
    if "\n" in text or "\r" in text:
        raise PrometheusAccessError(f"{flag} {path} holds several lines; a header value is one line")
    return text

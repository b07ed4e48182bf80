"""How to reach a Prometheus-compatible API as users run it (Thanos, Mimir/Cortex, VictoriaMetrics, Amazon and
Google managed Prometheus, OpenShift): the flags every command that queries Prometheus shares, checked before
any query, and the connection they make — headers, a bearer token re-read when it rotates, TLS (CA bundle,
client certificate, an explicit skip-verify), AWS SigV4 signing — with every secret kept out of messages.
"""

from __future__ import annotations

import argparse
import logging
import os
import ssl
from dataclasses import dataclass, field
from typing import Any

from rollguard.steps.metrics.prometheus_url import PrometheusUrl, PrometheusUrlError, parse_prometheus_url
from rollguard.steps.options import UsageError, add_flag, add_switch

log = logging.getLogger(__name__)

MAX_SECRET_FILE_BYTES = 64 * 1024  # a token or a header value; a projected service-account token is ~1 KB
REDACTED = "***"
DEFAULT_SIGV4_SERVICE = "aps"  # Amazon Managed Service for Prometheus
# Header names the connection sets itself, or that would change the request's meaning.
_RESERVED_HEADERS = {"host", "content-length", "transfer-encoding", "connection"}


class PrometheusAccessError(UsageError):
    """A Prometheus access flag cannot be used; the message names the flag and never shows a secret."""


@dataclass(frozen=True)
class HeaderSpec:
    """`--prometheus-header NAME=VALUE`: a literal value, `file:PATH` (re-read when it changes) or `env:VARIABLE`."""

    name: str
    source: str  # "value", "file" or "env"
    text: str = field(repr=False)  # the value, the path or the variable's name


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
    tls_context(access.tls, check_only=True)
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


def tls_context(tls: TlsOptions, *, check_only: bool = False) -> ssl.SSLContext:
    """The TLS context for https:// (also through a proxy's tunnel); PrometheusAccessError names a bad file."""
    if tls.insecure_skip_verify and not check_only:
        log.warning("TLS certificate verification of Prometheus is OFF (--prometheus-insecure-skip-verify): "
                    "anyone between rollguard and Prometheus can answer in its place; prefer --prometheus-ca-file")
    cafile = tls.ca_file or os.environ.get("REQUESTS_CA_BUNDLE") or None
    try:
        context = ssl.create_default_context()
        if tls.ca_file:
            context.load_verify_locations(cafile=tls.ca_file)
        elif cafile:
            context.load_verify_locations(cafile=cafile)
    except FileNotFoundError:
        raise PrometheusAccessError(f"--prometheus-ca-file {tls.ca_file} does not exist") from None
    except (ssl.SSLError, OSError, ValueError) as exc:
        flag = "--prometheus-ca-file" if tls.ca_file else "REQUESTS_CA_BUNDLE"
        raise PrometheusAccessError(f"{flag} {cafile} is not a PEM certificate bundle ({_ssl_reason(exc)})") from None
    if bool(tls.cert_file) != bool(tls.key_file):
        raise PrometheusAccessError("--prometheus-cert-file and --prometheus-key-file go together: give both")
    if tls.cert_file and tls.key_file:
        for flag, path in (("--prometheus-cert-file", tls.cert_file), ("--prometheus-key-file", tls.key_file)):
            if not os.path.isfile(path):
                raise PrometheusAccessError(f"{flag} {path} does not exist")
        try:
            context.load_cert_chain(tls.cert_file, tls.key_file)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise PrometheusAccessError(f"--prometheus-cert-file {tls.cert_file} with --prometheus-key-file "
                                        f"{tls.key_file}: not a PEM certificate and its key ({_ssl_reason(exc)})"
                                        ) from None
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _ssl_reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
    return str(reason)[:120]


class PrometheusConnection:
    """The headers and TLS context of every request to one Prometheus; secrets are read when needed.

    A file-backed value (the bearer token, a `file:` header) is re-read when the file's modification time,
    size or inode changes: Kubernetes swaps a projected token's symlink when it rotates it.
    """

    def __init__(self, access: PrometheusEndpoint) -> None:
        self.access = access
        self._files: dict[str, tuple[tuple[int, int, int], str]] = {}
        self._context: ssl.SSLContext | None = None
        self._signer: Any = None

    @property
    def url(self) -> str:
        """The URL without credentials."""
        return self.access.url

    def tls(self) -> ssl.SSLContext:
        """The TLS context, made once (the skip-verify warning is logged then)."""
        if self._context is None:
            self._context = tls_context(self.access.tls)
        return self._context

    def _file(self, path: str, flag: str) -> str:
        try:
            status = os.stat(path)
            key = (status.st_mtime_ns, status.st_size, status.st_ino)
        except OSError:
            key = (0, 0, 0)
        cached = self._files.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        value = read_secret_file(path, flag)
        self._files[path] = (key, value)
        return value

    def _header_value(self, header: HeaderSpec) -> str:
        if header.source == "file":
            return self._file(header.text, f"--prometheus-header {header.name}=file:")
        if header.source == "env":
            value = os.environ.get(header.text, "").strip()
            if not value:
                raise PrometheusAccessError(f"--prometheus-header {header.name}=env:{header.text}: the environment "
                                            f"variable {header.text} is not set or empty")
            return value
        if "\n" in header.text or "\r" in header.text:
            raise PrometheusAccessError(f"--prometheus-header {header.name}: a value is one line")
        return header.text

    def headers(self, method: str, url: str) -> dict[str, str]:
        """The headers of one request to `url` (with its query string): static, token, basic auth, then SigV4."""
        import base64

        headers = {header.name: self._header_value(header) for header in self.access.headers}
        auth = self.access.endpoint.auth
        if auth is not None:
            token = base64.b64encode(f"{auth.username}:{auth.password}".encode()).decode("ascii")
            headers["Authorization"] = f"Basic {token}"
        if self.access.bearer_token_file:
            token = self._file(self.access.bearer_token_file, "--prometheus-bearer-token-file")
            headers["Authorization"] = f"Bearer {token}"
        if self.access.sigv4 is not None:
            if self._signer is None:
                from rollguard.steps.metrics.sigv4 import SigV4Signer

                self._signer = SigV4Signer(self.access.sigv4.region, self.access.sigv4.service)
            headers.update(self._signer.sign(method, url, headers))
        return headers

    def secrets(self) -> list[str]:
        """Every secret value this connection sends (header values, token, password): what scrubbing removes."""
        values = [self._header_value(header) for header in self.access.headers]
        if self.access.bearer_token_file:
            values.append(self._file(self.access.bearer_token_file, "--prometheus-bearer-token-file"))
        auth = self.access.endpoint.auth
        if auth is not None and auth.password:
            values.append(auth.password)
        if self._signer is not None:
            values.extend(self._signer.secrets())
        return values

    def scrub(self, text: str) -> str:
        """`text` with every secret this connection sends replaced by ***: safe for logs, verdicts and commits."""
        try:
            secrets = self.secrets()
        except PrometheusAccessError:
            secrets = [value for _key, value in self._files.values()]
        for secret in sorted(secrets, key=len, reverse=True):
            if len(secret) >= 4:  # a 1-3 character value (an org ID like "1") would blank out unrelated text
                text = text.replace(secret, REDACTED)
        return text


def connection_for(access: PrometheusEndpoint | str | PrometheusUrl) -> PrometheusConnection:
    """A connection from checked access settings, or from a plain URL (tests, the sandbox)."""
    if isinstance(access, PrometheusEndpoint):
        return PrometheusConnection(access)
    endpoint = access if isinstance(access, PrometheusUrl) else parse_prometheus_url(access)
    return PrometheusConnection(PrometheusEndpoint(endpoint))


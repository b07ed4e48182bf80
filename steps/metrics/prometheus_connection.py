"""The connection to one Prometheus-compatible API: the headers of every request (static ones, a bearer token
re-read when it rotates, basic auth, AWS SigV4 signing), the TLS context (CA bundle, client certificate, an
explicit skip-verify), and scrubbing every secret it sends out of text.
"""

from __future__ import annotations

import functools
import logging
import os
import ssl
from typing import Any

from rollguard.steps.metrics.prometheus_endpoint import (
    REDACTED,
    HeaderSpec,
    PrometheusAccessError,
    PrometheusEndpoint,
    TlsOptions,
    read_secret_file,
)
from rollguard.steps.metrics.prometheus_url import PrometheusUrl, parse_prometheus_url

log = logging.getLogger(__name__)


def tls_context(tls: TlsOptions, *, check_only: bool = False) -> ssl.SSLContext:
    """The TLS context for https:// (also through a proxy's tunnel); PrometheusAccessError names a bad file.

    Built once per settings and CA bundle in a process: the start-up check and the connection then share it
    (loading a CA store costs ~30 ms of CPU). A refused file is not remembered: asked again, it is read again.
    """
    if tls.insecure_skip_verify and not check_only:
        log.warning("TLS certificate verification of Prometheus is OFF (--prometheus-insecure-skip-verify): "
                    "anyone between rollguard and Prometheus can answer in its place; prefer --prometheus-ca-file")
    return _built_context(tls, os.environ.get("REQUESTS_CA_BUNDLE") or None)


@functools.lru_cache(maxsize=8)
def _built_context(tls: TlsOptions, bundle: str | None) -> ssl.SSLContext:
    cafile = tls.ca_file or bundle
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

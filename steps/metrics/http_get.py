"""One HTTP(S) GET that ends by a deadline, however the server answers.

A socket timeout bounds each read, not the request: a server that sends a byte every 0.3 s never
trips it. Here a watchdog shuts the socket down when the deadline passes, so connecting, sending,
the headers and the body together take at most the time given. Proxies come from the environment
(HTTP_PROXY, HTTPS_PROXY, NO_PROXY) as for any HTTP client; certificates from the system store
(SSL_CERT_FILE, or REQUESTS_CA_BUNDLE as requests users set it) unless the caller passes its own TLS context
(--prometheus-ca-file, a client certificate); the deadline bounds the TLS handshake too.
"""

from __future__ import annotations

import functools
import http.client
import os
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlencode, urlsplit

MAX_BODY_BYTES = 64 * 1024 * 1024  # a counters answer of a busy service is a few MB


class HttpFailure(Exception):
    """No answer: the connection failed, was reset, or the deadline passed first."""


class UntrustedCertificate(HttpFailure):
    """The server's TLS certificate did not verify: asking again will not change that."""


class DeadlinePassed(HttpFailure):
    """The whole answer had not arrived when the deadline passed."""


@dataclass(frozen=True)
class HttpAnswer:
    """An HTTP status and the body that came with it."""

    status: int
    body: bytes


def request_url(url: str, params: Mapping[str, str]) -> str:
    """`url?params` exactly as http_get sends it (what a SigV4 signature must cover)."""
    # RFC 3986 escaping (%20, not +; only -_.~ left as they are): SigV4's canonical query string, so a signature
    # computed over the URL as sent is the one Amazon Managed Prometheus computes. Prometheus reads both forms.
    return f"{url}?{urlencode(params, quote_via=quote, safe='-_.~')}"


def http_get(
    url: str, params: Mapping[str, str], *, headers: Mapping[str, str] | None = None, deadline: float,
    tls: ssl.SSLContext | None = None,
) -> HttpAnswer:
    """GET `url?params` with `headers`, done by `deadline` (time.monotonic()) or DeadlinePassed; HttpFailure when
    no answer. `tls` verifies an https:// server (default: the system's CA store)."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise DeadlinePassed("no time left to ask")
    target = urlsplit(url)
    path = (target.path or "/") + "?" + request_url("", params)[1:]
    sent = {"Accept": "application/json", "User-Agent": "rollguard", **(headers or {})}
    # A TLS context only for https (loading the CA store costs ~30 ms of CPU), and the default one built once.
    context = (tls or default_tls_context()) if target.scheme == "https" else None
    connection, request_target = _connection(target.scheme, target.hostname or "", target.port, path, remaining,
                                             context)
    watchdog = _Watchdog(connection, remaining)
    try:
        connection.connect()  # bounded by the socket timeout; the watchdog may have fired meanwhile
        if watchdog.fired:
            raise DeadlinePassed("connecting took all the time")
        connection.request("GET", request_target, headers=sent)
        response = connection.getresponse()
        body = response.read(MAX_BODY_BYTES + 1)
        if len(body) > MAX_BODY_BYTES:
            raise HttpFailure(f"the answer is larger than {MAX_BODY_BYTES // (1024 * 1024)} MiB")
        return HttpAnswer(response.status, body)
    except (OSError, http.client.HTTPException) as exc:
        if watchdog.fired or isinstance(exc, TimeoutError):
            raise DeadlinePassed("the whole answer had not arrived") from None
        if isinstance(exc, ssl.SSLCertVerificationError):
            raise UntrustedCertificate(exc.verify_message or _describe(exc)) from None
        raise HttpFailure(_describe(exc)) from None
    finally:
        watchdog.cancel()
        connection.close()


def _connection(
    scheme: str, host: str, port: int | None, path: str, timeout_s: float, context: ssl.SSLContext | None
) -> tuple[http.client.HTTPConnection, str]:
    """A connection to the server or to the proxy the environment names for it, and the request target."""
    proxy = urllib.request.getproxies().get(scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        via = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if scheme == "https":
            tunnel = http.client.HTTPSConnection(via.hostname or "", via.port or 3128, timeout=timeout_s,
                                                 context=context)
            tunnel.set_tunnel(host, port or 443)
            return tunnel, path
        shown_host = f"[{host}]" if ":" in host else host
        absolute = f"http://{shown_host}{f':{port}' if port else ''}{path}"
        return http.client.HTTPConnection(via.hostname or "", via.port or 3128, timeout=timeout_s), absolute
    if scheme == "https":
        return http.client.HTTPSConnection(host, port, timeout=timeout_s, context=context), path
    return http.client.HTTPConnection(host, port, timeout=timeout_s), path


def default_tls_context() -> ssl.SSLContext:
    """The system's CA store (or REQUESTS_CA_BUNDLE), built once per bundle: a check sends several queries, and
    50 analyses on one node would otherwise spend most of their CPU re-reading the same certificates."""
    return _tls_context_for(os.environ.get("REQUESTS_CA_BUNDLE") or None)


@functools.lru_cache(maxsize=4)
def _tls_context_for(cafile: str | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cafile)


class _Watchdog:
    """Shuts the connection's socket down at the deadline: every blocked read or write returns at once."""

    def __init__(self, connection: http.client.HTTPConnection, after_s: float) -> None:
        self.connection = connection
        self.fired = False
        self._timer = threading.Timer(after_s, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        self.fired = True
        sock = self.connection.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed

    def cancel(self) -> None:
        """The exchange is over: the watchdog has nothing left to do."""
        self._timer.cancel()


def _describe(exc: BaseException) -> str:
    """The failure in a few words: `ConnectionRefusedError: Connection refused`."""
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return f"{type(exc).__name__}: {text[:200] or 'no details'}"

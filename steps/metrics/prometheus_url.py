"""`--prometheus-url` taken apart: the URL that may be shown, and the basic-auth credentials that may not.

Users paste passwords as they are, so the user:password part is everything between `scheme://` and
the LAST `@` — a password may hold `/`, `?`, `#`, `:` or `@` (RFC 3986 would end it at the first
`/`, `?` or `#`, and put the rest of the password into the path, where logs show it). Percent-escapes
in it are decoded. A base URL has no `@` of its own: a Prometheus path or query never needs one.
Every error message shows the URL with its credentials replaced by `***`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from rollguard.steps.options import is_utf8_text

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.DOTALL)
_PORT = re.compile(r"^[0-9]{1,5}$")
_EXAMPLE = "e.g. http://prometheus.monitoring:9090 or https://user:password@prometheus.example.com/prom"


class PrometheusUrlError(ValueError):
    """The URL cannot be used; the message says why and never shows the credentials."""


@dataclass(frozen=True)
class BasicAuth:
    """User and password for Prometheus (sent as basic auth, never shown)."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class PrometheusUrl:
    """A Prometheus base URL without credentials (safe to show), and the credentials it came with."""

    url: str  # scheme://host[:port][/path], no user:password, no trailing slash
    auth: BasicAuth | None  # None: the URL carried no user:password@


def parse_prometheus_url(text: str) -> PrometheusUrl:
    """Split `text` into the URL to show and basic-auth credentials; refuse what no HTTP client could use."""
    shown = redacted(text)
    if not is_utf8_text(text):
        raise PrometheusUrlError(f"{shown!r} contains bytes that are not UTF-8 text")
    match = _SCHEME.match(text.strip())
    if match is None or match.group(1).lower() not in ("http", "https"):
        raise PrometheusUrlError(f"{shown!r} must be an http:// or https:// URL with a host, {_EXAMPLE}")
    scheme, rest = match.group(1).lower(), match.group(2)
    auth = None
    if "@" in rest:
        userinfo, rest = rest.rsplit("@", 1)
        username, _, password = userinfo.partition(":")
        auth = BasicAuth(unquote(username), unquote(password))
    split = re.search(r"[/?#]", rest)
    authority, remainder = (rest[: split.start()], rest[split.start():]) if split else (rest, "")
    if "?" in remainder or "#" in remainder:
        raise PrometheusUrlError(f"{shown!r} is a base URL: leave out ?query and #fragment, {_EXAMPLE}")
    if any(character.isspace() for character in authority + remainder):
        raise PrometheusUrlError(f"{shown!r} contains white space")
    host = _host_and_port(authority, shown)
    return PrometheusUrl(f"{scheme}://{host}{remainder.rstrip('/')}", auth)


def redacted(text: str) -> str:
    """`text` with anything before its last `@` (after `scheme://`) replaced by `***`: safe in any message."""
    match = _SCHEME.match(text)
    scheme, rest = (match.group(1) + "://", match.group(2)) if match else ("", text)
    if "@" not in rest:
        return text
    return f"{scheme}***@{rest.rsplit('@', 1)[1]}"


def _host_and_port(authority: str, shown: str) -> str:
    """`host[:port]` checked: a host, a port from 1 to 65535, an IPv6 address only in brackets."""
    if authority.startswith("["):
        address, bracket, after = authority[1:].partition("]")
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            bracket = ""
        if not bracket or (after and not after.startswith(":")):
            raise PrometheusUrlError(f"{shown!r}: {authority!r} is not an IPv6 address in brackets, "
                                     "e.g. http://[fd00::1]:9090")
        host, port = f"[{address}]", after[1:] if after else None
    else:
        if authority.count(":") > 1:
            raise PrometheusUrlError(f"{shown!r}: an IPv6 address goes in brackets, e.g. http://[fd00::1]:9090")
        host, colon, port_text = authority.partition(":")
        port = port_text if colon else None
    if host in ("", "[]"):
        raise PrometheusUrlError(f"{shown!r} has no host, {_EXAMPLE}")
    if port is not None and (not _PORT.match(port) or not 1 <= int(port) <= 65535):
        raise PrometheusUrlError(f"{shown!r}: port {port!r} is not a number from 1 to 65535")
    return host if port is None else f"{host}:{int(port)}"


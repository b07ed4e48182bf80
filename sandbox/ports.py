"""Loopback ports: find a free one, check one is free, wait for a server to listen."""

from __future__ import annotations

import random
import socket
import time
from pathlib import Path

_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 10000  # below: well-known services' ports
_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, for a server started a moment later.

    Taken below the kernel's ephemeral range: a port the OS picks (bind to 0) is in that range, where any
    outgoing connection (a scrape, a query, the load) may take it as its source port before the server binds
    it, and the server then fails with "address in use" (seen in CI). Never the same port twice per process.
    """
    low = _ephemeral_low()
    candidates = range(_LOWEST, low)
    for _ in range(200 if len(candidates) > 1000 else 0):
        port = random.choice(candidates)
        if port not in _handed_out and port_is_free(port):
            _handed_out.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # no room below the range: let the OS pick
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ephemeral_low() -> int:
    """The lowest port of the kernel's ephemeral range (32768 when it cannot be read)."""
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def port_is_free(port: int) -> bool:
    """True when `port` on 127.0.0.1 can be bound now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_listening(port: int, deadline_s: float, host: str = "127.0.0.1") -> bool:
    """Poll until something accepts TCP connections on host:port, or the deadline passes."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False

"""The mesh router's upstreams: keep-alive connections to the stable and canary apps, and which of them has a
ready endpoint (the stand-in for Kubernetes readiness and Istio's endpoint discovery)."""

from __future__ import annotations

import http.client
import logging
import threading
from urllib.parse import urlsplit

log = logging.getLogger("rollguard.sandbox.router")


class Readiness(threading.Thread):
    """Which apps have a ready endpoint: each app's /healthz every interval, as a readiness probe.

    One failed probe takes the app out (a crashed container's pod is not ready at once); one success
    brings it back.
    """

    def __init__(self, health_urls: dict[str, str], interval_s: float) -> None:
        super().__init__(name="readiness", daemon=True)
        self.health_urls = health_urls
        self.interval_s = interval_s
        self.ready = dict.fromkeys(health_urls, True)
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval_s):
            for role, url in self.health_urls.items():
                was = self.ready[role]
                self.ready[role] = _healthy(url)
                if was != self.ready[role]:
                    log.info("%s is %s", role, "ready again" if self.ready[role] else
                             "not ready: its subset has no endpoint (callers get 503 UH)")


def _healthy(url: str) -> bool:
    host, port = _host_port(url)
    connection = http.client.HTTPConnection(host, port, timeout=0.5)
    try:
        connection.request("GET", "/healthz")
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


class Upstreams:
    """Keep-alive connections to the stable and canary apps, one per request thread."""

    def __init__(self, stable_url: str, canary_url: str) -> None:
        self.addresses = {"stable": _host_port(stable_url), "canary": _host_port(canary_url)}
        self._local = threading.local()

    def connection(self, role: str, fresh: bool = False) -> http.client.HTTPConnection:
        """This thread's connection to `role` ("stable"/"canary"), reopened when `fresh`."""
        pool: dict[str, http.client.HTTPConnection] = self._local.__dict__.setdefault("pool", {})
        if fresh and role in pool:
            pool.pop(role).close()
        if role not in pool:
            host, port = self.addresses[role]
            pool[role] = http.client.HTTPConnection(host, port, timeout=30)
        return pool[role]


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if not parts.hostname or not parts.port:
        raise ValueError(f"{url!r} is not a URL like http://127.0.0.1:8081")
    return parts.hostname, parts.port

"""The sandbox's load generator: steady requests per second to the router, every response recorded.

Open loop: a ticker schedules one request every 1/rps seconds and a pool of workers sends them over
keep-alive connections, so a slow canary does not slow the offered load. Each response becomes a
CSV line `sent_at,done_at,status,duration_ms,version[,grpc_status]` (Unix seconds; status 0 = no response).

With `--grpc HOST:PORT` the users make gRPC calls instead (`grpc_service`); a call's `status` is then
the HTTP status Envoy maps its gRPC status to (200 for OK, 503 for UNAVAILABLE, ...), so a failed call
is a failed request by the same rule, and `grpc_status` holds the gRPC status itself.

    python -m rollguard.sandbox.loadgen --url http://127.0.0.1:8080/ --rps 50 --out responses.csv
"""

from __future__ import annotations

import argparse
import http.client
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

VERSION_HEADER = "x-rollguard-version"


@dataclass(frozen=True)
class Response:
    """One request as the user saw it."""

    sent_at: float
    done_at: float
    status: int
    duration_ms: float
    version: str
    grpc_status: int | None = None  # a gRPC call's status; None for an HTTP request

    @property
    def failed(self) -> bool:
        """True for a 5xx (for a gRPC call: a status Envoy maps to 5xx) or no response: a failed user request."""
        return self.status == 0 or self.status >= 500


def read_responses(path: Path) -> list[Response]:
    """Every response the load generator recorded in `path` (a partial last line is skipped)."""
    responses: list[Response] = []
    if not path.exists():
        return responses
    for line in path.read_text().splitlines():
        parts = line.split(",")
        if len(parts) not in (5, 6) or parts[0] == "sent_at":
            continue
        try:
            grpc_status = int(parts[5]) if len(parts) == 6 and parts[5] else None
            responses.append(Response(float(parts[0]), float(parts[1]), int(parts[2]), float(parts[3]), parts[4],
                                      grpc_status))
        except ValueError:
            continue
    return responses


class LoadGenerator:
    """Sends `rps` GET requests per second to `url` and appends each outcome to `out`."""

    def __init__(self, url: str, rps: float, out: Path, workers: int, grpc_address: str | None = None) -> None:
        parts = urlsplit(url)
        if not parts.hostname or not parts.port:
            raise ValueError(f"--url {url!r} must look like http://127.0.0.1:8080/")
        self.host, self.port, self.path = parts.hostname, parts.port, parts.path or "/"
        self.grpc_address = grpc_address
        self.rps = rps
        self.workers = workers
        self.tickets: queue.Queue[float | None] = queue.Queue()
        self.stopped = threading.Event()
        self.out = out.open("a", buffering=1)
        self._write_lock = threading.Lock()

    def _grpc_worker(self) -> None:
        import grpc

        from rollguard.sandbox.grpc_service import GRPC_TO_HTTP, call_once

        assert self.grpc_address is not None
        with grpc.insecure_channel(self.grpc_address) as channel:
            while True:
                ticket = self.tickets.get()
                if ticket is None:
                    break
                sent_at = time.time()
                started = time.perf_counter()
                code, version = call_once(channel)
                duration_ms = (time.perf_counter() - started) * 1000.0
                with self._write_lock:
                    self.out.write(f"{sent_at:.6f},{time.time():.6f},{GRPC_TO_HTTP.get(code, 500)},{duration_ms:.3f},"
                                   f"{version},{code}\n")

    def _worker(self) -> None:
        connection: http.client.HTTPConnection | None = None
        while True:
            ticket = self.tickets.get()
            if ticket is None:
                break
            sent_at = time.time()
            started = time.perf_counter()
            status, version = 0, "-"
            for _attempt in range(2):  # a closed keep-alive connection is reopened once
                if connection is None:
                    connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
                try:
                    connection.request("GET", self.path)
                    response = connection.getresponse()
                    response.read()
                    status, version = response.status, response.getheader(VERSION_HEADER, "-")
                    break
                except (OSError, http.client.HTTPException):
                    connection.close()
                    connection = None
            duration_ms = (time.perf_counter() - started) * 1000.0
            with self._write_lock:
                self.out.write(f"{sent_at:.6f},{time.time():.6f},{status},{duration_ms:.3f},{version}\n")

    def run(self, duration_s: float | None) -> None:
        """Send load until stop() or `duration_s` elapses, then let in-flight requests finish."""
        work = self._grpc_worker if self.grpc_address else self._worker
        threads = [threading.Thread(target=work, daemon=True) for _ in range(self.workers)]
        for thread in threads:
            thread.start()
        interval = 1.0 / self.rps
        start = time.monotonic()
        count = 0
        while not self.stopped.is_set():
            due = start + count * interval
            if duration_s is not None and due - start >= duration_s:
                break
            delay = due - time.monotonic()
            if delay > 0 and self.stopped.wait(delay):
                break
            self.tickets.put(due)
            count += 1
        for _ in threads:
            self.tickets.put(None)
        for thread in threads:
            thread.join(timeout=5)
        self.out.close()

    def stop(self) -> None:
        """Stop sending; run() returns once in-flight requests are recorded."""
        self.stopped.set()


def main(argv: list[str] | None = None) -> int:
    """Run the load generator until SIGTERM/SIGINT or --duration."""
    parser = argparse.ArgumentParser(prog="python -m rollguard.sandbox.loadgen", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--rps", type=float, default=50.0, help="requests per second")
    parser.add_argument("--out", type=Path, required=True, help="CSV file that receives one line per response")
    parser.add_argument("--workers", type=int, default=64, help="concurrent requests at most")
    parser.add_argument("--duration", type=float, default=None, help="seconds to run (default: until stopped)")
    parser.add_argument("--grpc", default=None, metavar="HOST:PORT", help="make gRPC calls to this address instead")
    args = parser.parse_args(argv)
    if args.rps <= 0 or args.workers <= 0:
        parser.error("--rps and --workers must be greater than zero")
    generator = LoadGenerator(args.url, args.rps, args.out, args.workers, args.grpc)

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        generator.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    generator.run(args.duration)
    return 0


if __name__ == "__main__":
    sys.exit(main())

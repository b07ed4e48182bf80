"""The sandbox's load generator: steady requests per second to the router, every response recorded.

Open loop: a ticker schedules one request every 1/rps seconds and a pool of workers sends them over
keep-alive connections, so a slow canary does not slow the offered load. Each response becomes a
CSV line `sent_at,done_at,status,duration_ms,version` (Unix seconds; status 0 = no response).

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

    @property
    def failed(self) -> bool:
        """True for a 5xx or no response at all: a failed user request."""
        return self.status == 0 or self.status >= 500


def read_responses(path: Path) -> list[Response]:
    """Every response the load generator recorded in `path` (a partial last line is skipped)."""
    responses: list[Response] = []
    if not path.exists():
        return responses
    for line in path.read_text().splitlines():
        parts = line.split(",")
        if len(parts) != 5 or parts[0] == "sent_at":
            continue
        try:
            responses.append(Response(float(parts[0]), float(parts[1]), int(parts[2]), float(parts[3]), parts[4]))
        except ValueError:
            continue
    return responses


class LoadGenerator:
    """Sends `rps` GET requests per second to `url` and appends each outcome to `out`."""

    def __init__(self, url: str, rps: float, out: Path, workers: int) -> None:
        parts = urlsplit(url)
        if not parts.hostname or not parts.port:
            raise ValueError(f"--url {url!r} must look like http://127.0.0.1:8080/")
        self.host, self.port, self.path = parts.hostname, parts.port, parts.path or "/"
        self.rps = rps
        self.workers = workers
        self.tickets: queue.Queue[float | None] = queue.Queue()
        self.stopped = threading.Event()
        self.out = out.open("a", buffering=1)
        self._write_lock = threading.Lock()

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
        threads = [threading.Thread(target=self._worker, daemon=True) for _ in range(self.workers)]
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
    args = parser.parse_args(argv)
    if args.rps <= 0 or args.workers <= 0:
        parser.error("--rps and --workers must be greater than zero")
    generator = LoadGenerator(args.url, args.rps, args.out, args.workers)

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        generator.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    generator.run(args.duration)
    return 0


if __name__ == "__main__":
    sys.exit(main())

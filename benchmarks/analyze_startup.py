"""Benchmark: start-up of the analyze step, from spawning `rollguard analyze ...` (the console script, as the
step's container runs it) to its first query arriving at Prometheus's query API.

A tiny local HTTP server stands in for Prometheus: it records when each request arrives and answers an
empty vector. Over `--runs` runs (one at a time), prints p50 / p95 / max of spawn → first /api/v1/query
(goal ≤ 0.5 s) and the machine's load average, twice: as this environment runs the console script (where
PYTHONDONTWRITEBYTECODE=1 is set, every start compiles rollguard's modules anew), and with bytecode cached
(a PYTHONPYCACHEPREFIX in a temporary directory, written by a warm-up run), as the step image has it
(images/finish.sh compiles every module once).

    .venv/bin/python benchmarks/analyze_startup.py [--runs 20]
"""

from __future__ import annotations

import argparse
import http.server
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from rollguard.experiment.summary import percentile
from rollguard.sandbox.ports import free_port, wait_listening

ROLLGUARD = str(Path(sys.executable).parent / "rollguard")
EMPTY_VECTOR = b'{"status":"success","data":{"resultType":"vector","result":[]}}'
GOAL_S = 0.5


class QueryArrivals:
    """A stand-in for Prometheus's query API that notes the arrival time (time.monotonic()) of the first query."""

    def __init__(self) -> None:
        self.first_query: float | None = None
        self.arrived = threading.Event()
        self.port = free_port()
        arrivals = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                now = time.monotonic()
                if self.path.startswith("/api/v1/query") and arrivals.first_query is None:
                    arrivals.first_query = now
                    arrivals.arrived.set()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(EMPTY_VECTOR)))
                self.end_headers()
                try:
                    self.wfile.write(EMPTY_VECTOR)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # analyze was stopped right after its first query

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        if not wait_listening(self.port, 5.0):
            raise RuntimeError("the stand-in Prometheus did not listen")

    def reset(self) -> None:
        self.first_query = None
        self.arrived.clear()


def one_run(arrivals: QueryArrivals, verdict: Path, env: dict[str, str]) -> float:
    """Seconds from spawning analyze to its first query; the process is stopped right after."""
    arrivals.reset()
    command = [ROLLGUARD, "analyze", "--prometheus-url", f"http://127.0.0.1:{arrivals.port}", "--namespace", "bench",
               "--service", "startup", "--stable-version", "v1", "--canary-version", "v2", "--interval", "1s",
               "--duration", "10s", "--verdict-file", str(verdict)]
    spawned = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        if not arrivals.arrived.wait(timeout=30):
            raise RuntimeError("analyze sent no query within 30 s")
        assert arrivals.first_query is not None
        return arrivals.first_query - spawned
    finally:
        process.terminate()
        process.wait(timeout=30)


def measure(arrivals: QueryArrivals, runs: int, env: dict[str, str], label: str, workdir: Path) -> None:
    load_before = os.getloadavg()
    one_run(arrivals, workdir / "warm.json", env)  # warms the page cache (and writes bytecode when allowed)
    times = [one_run(arrivals, workdir / f"{run}.json", env) for run in range(runs)]
    load_after = os.getloadavg()
    print(f"`rollguard analyze` spawn → first /api/v1/query, {label}: p50 {percentile(times, 0.5):.3f}s, "
          f"p95 {percentile(times, 0.95):.3f}s, max {max(times):.3f}s over {len(times)} runs "
          f"(goal ≤ {GOAL_S} s); load {load_before[0]:.2f} → {load_after[0]:.2f} (1-min average, 2 cores)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    options = parser.parse_args()
    arrivals = QueryArrivals()
    with tempfile.TemporaryDirectory(prefix="rollguard-startup-") as directory:
        workdir = Path(directory)
        as_is = dict(os.environ)
        no_cache = "no bytecode cache" if as_is.get("PYTHONDONTWRITEBYTECODE") else "bytecode as the venv has it"
        measure(arrivals, options.runs, as_is, f"as this environment runs it ({no_cache})", workdir)
        cached = {key: value for key, value in as_is.items() if key != "PYTHONDONTWRITEBYTECODE"}
        cached["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
        measure(arrivals, options.runs, cached, "bytecode cached (as in the step image)", workdir)


if __name__ == "__main__":
    main()

"""Benchmark of the sandbox's mesh router: the latency it adds at the demo load, and the load it carries.

Starts a demo app and the router (real processes, loopback), then prints (does not assert):
  1. at the demo load (open loop, --rps requests/s for --seconds): latency p50/p95/p99 sending
     straight to the app and through the router, and the difference (the router's overhead);
  2. capacity: requests/s with --clients concurrent keep-alive clients (closed loop) straight to
     the app and through the router. The Python client shares the machine, so both figures are
     lower bounds of what the servers could do.

    .venv/bin/python benchmarks/router_overhead.py [--rps 50] [--seconds 10] [--clients 8]
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from rollguard.experiment.summary import percentile  # one definition: linear interpolation
from rollguard.sandbox.git_remote import create_remote
from rollguard.sandbox.ports import free_port
from rollguard.sandbox.processes import Supervisor, install_signal_handlers


def open_loop(port: int, rps: float, seconds: float) -> list[float]:
    """Latencies (ms) of requests sent at a steady rate, each on a worker's keep-alive connection."""
    latencies: list[float] = []
    lock = threading.Lock()
    ticks: list[float] = [i / rps for i in range(int(rps * seconds))]
    start = time.perf_counter()
    index = [0]

    def worker() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while True:
            with lock:
                if index[0] >= len(ticks):
                    return
                due = start + ticks[index[0]]
                index[0] += 1
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            began = time.perf_counter()
            connection.request("GET", "/")
            connection.getresponse().read()
            with lock:
                latencies.append((time.perf_counter() - began) * 1000)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


def closed_loop(port: int, clients: int, seconds: float) -> float:
    """Requests per second that `clients` back-to-back keep-alive clients achieve."""
    counts = [0] * clients
    stop_at = time.perf_counter() + seconds

    def worker(slot: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while time.perf_counter() < stop_at:
            connection.request("GET", "/")
            connection.getresponse().read()
            counts[slot] += 1

    threads = [threading.Thread(target=worker, args=(slot,)) for slot in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - began)


def main() -> int:
    """Run both measurements and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rps", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    install_signal_handlers()
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="rollguard-router-bench-") as work, Supervisor(Path(work) / "logs") as sup:
        remote = create_remote(Path(work) / "remote.git")
        app_ports = {}
        for version in ("v1", "v2"):
            port = free_port()
            sup.start(f"app-{version}", [python, "-m", "rollguard.sandbox.demo_app", "--port", str(port), "--version",
                                         version], port=port, health_url=f"http://127.0.0.1:{port}/healthz")
            app_ports[version] = port
        router_port = free_port()
        sup.start("router", [python, "-m", "rollguard.sandbox.router", "--port", str(router_port), "--git-dir",
                             str(remote.path), "--stable-url", f"http://127.0.0.1:{app_ports['v1']}",
                             "--canary-url", f"http://127.0.0.1:{app_ports['v2']}"],
                  port=router_port, health_url=f"http://127.0.0.1:{router_port}/healthz")
        print(f"router overhead at {args.rps:g} req/s for {args.seconds:g} s (open loop), latency in ms:")
        figures = {}
        for label, port in (("direct to app", app_ports["v1"]), ("through router", router_port)):
            latencies = open_loop(port, args.rps, args.seconds)
            figures[label] = (statistics.median(latencies), percentile(latencies, 0.95),
                              percentile(latencies, 0.99))
            p50, p95, p99 = figures[label]
            print(f"  {label:15} n={len(latencies):5d}  p50 {p50:6.2f}  p95 {p95:6.2f}  p99 {p99:6.2f}")
        added = [router - direct for router, direct in zip(figures["through router"], figures["direct to app"],
                                                            strict=True)]
        print(f"  added by router  p50 {added[0]:6.2f}  p95 {added[1]:6.2f}  p99 {added[2]:6.2f}")
        print(f"capacity with {args.clients} keep-alive clients, 5 s each (closed loop):")
        direct = closed_loop(app_ports["v1"], args.clients, 5.0)
        routed = closed_loop(router_port, args.clients, 5.0)
        print(f"  direct to app   {direct:7.0f} req/s")
        print(f"  through router  {routed:7.0f} req/s  ({routed / args.rps:.0f}x the demo load of {args.rps:g} req/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark of `rollguard analyze` against a real Prometheus (1 s scrape) and synthetic traffic.

Prints (does not assert):
  1. time from the canary turning 100 % bad to the verdict, interval 1 s, over N runs (p50/p95/max),
     for the statistical rule and, on the same data, the threshold rule (3 failed checks);
  2. false fails over N healthy runs with 0.5 % background errors on stable and canary;
  3. start-up time of `rollguard analyze --help`.

    .venv/bin/python benchmarks/analyze_speed.py [--runs 20] [--parallel 5] [--healthy-duration 30s]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from rollguard.experiment.summary import percentile  # one definition: linear interpolation
from rollguard.sandbox.prometheus_server import PrometheusServer, ScrapeJob
from rollguard.sandbox.synthetic_traffic import SyntheticTraffic, TrafficProfile
from rollguard.steps import verdict_document
from rollguard.steps.judgment.outcomes import Verdict
from rollguard.steps.verdict_document import NoVerdict, UnreadableVerdict, VerdictDocument, VerdictReading

NAMESPACE = "bench"
ROLLGUARD = str(Path(sys.executable).parent / "rollguard")
# A 90/10 split of 100 requests per second, 0.5 % background errors, 30 ms latency.
STABLE = TrafficProfile(requests_per_s=90, error_rate=0.005, latency_ms=30)
CANARY = TrafficProfile(requests_per_s=10, error_rate=0.005, latency_ms=30)
BROKEN = TrafficProfile(requests_per_s=10, error_rate=1.0, latency_ms=30)
JUDGES = ("statistical", "threshold")


class Analysis:
    """One `rollguard analyze` process; its log is read in a thread so the benchmark can wait on checks."""

    def __init__(self, url: str, service: str, judge: str, duration: str, workdir: Path) -> None:
        self.verdict_file = workdir / f"{service}-{judge}.json"
        self.lines: list[str] = []
        self.running_checks = threading.Event()
        self.process = subprocess.Popen(
            [ROLLGUARD, "analyze", "--prometheus-url", url, "--namespace", NAMESPACE, "--service", service,
             "--stable-version", "v1", "--canary-version", "v2", "--interval", "1s", "--duration", duration,
             "--min-requests", "100", "--judge", judge, "--failure-limit", "3",
             "--verdict-file", str(self.verdict_file)],
            stderr=subprocess.PIPE, text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            if " check 3/" in line:
                self.running_checks.set()

    def finish(self, timeout_s: float) -> VerdictReading:
        """Wait for the verdict (killing the process after `timeout_s`) and read the verdict file."""
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return UnreadableVerdict("benchmark timeout")
        self.reader.join(timeout=5)
        return verdict_document.read_file(self.verdict_file)


def verdict_word(reading: VerdictReading) -> str:
    """The verdict, or what stood in its way (`timeout`, `unreadable`, `error`)."""
    if isinstance(reading, UnreadableVerdict):
        return "timeout" if reading.problem == "benchmark timeout" else "unreadable"
    if isinstance(reading, NoVerdict):
        return verdict_document.NO_VERDICT_WORD
    return reading.verdict.value


def wait_scraped(server: PrometheusServer, service: str, deadline_s: float = 30.0) -> None:
    import urllib.parse
    import urllib.request

    query = f'sum(istio_requests_total{{destination_service_name="{service}",destination_version="v2"}})'
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        with urllib.request.urlopen(f"{server.url}/api/v1/query?query={urllib.parse.quote(query)}", timeout=5) as r:
            if json.load(r)["data"]["result"]:
                return
        time.sleep(0.2)
    raise RuntimeError(f"Prometheus did not scrape {service} within {deadline_s}s")


def bad_canary_run(traffic: SyntheticTraffic, server: PrometheusServer, index: int, workdir: Path,
                   rng: random.Random) -> dict[str, float | str]:
    """Start both judges on a healthy canary, break it at a random moment, return seconds to each verdict."""
    service = f"bad{index}"
    traffic.set(service, "v1", STABLE)
    traffic.set(service, "v2", CANARY)
    wait_scraped(server, service)
    analyses = {judge: Analysis(server.url, service, judge, "2m", workdir) for judge in JUDGES}
    for analysis in analyses.values():
        analysis.running_checks.wait(timeout=30)
    time.sleep(rng.uniform(0.0, 1.0))  # a random phase against scrapes and checks
    fault_at = time.time()
    traffic.set(service, "v2", BROKEN)
    result: dict[str, float | str] = {}
    for judge, analysis in analyses.items():
        verdict = analysis.finish(timeout_s=150)
        if isinstance(verdict, VerdictDocument) and verdict.verdict is Verdict.FAIL and verdict.decided_at is not None:
            result[judge] = verdict.decided_at - fault_at
        else:
            result[judge] = verdict_word(verdict)
        if isinstance(verdict, VerdictDocument) and verdict.checks:
            result[f"{judge}_errors"] = verdict.checks[-1]["canary"].get("errors") or 0
    traffic.forget(service)
    return result


def healthy_run(traffic: SyntheticTraffic, server: PrometheusServer, index: int, workdir: Path,
                duration: str) -> dict[str, str]:
    """Both judges on the same healthy canary for the whole bake time; return each verdict word."""
    service = f"ok{index}"
    traffic.set(service, "v1", STABLE)
    traffic.set(service, "v2", CANARY)
    wait_scraped(server, service)
    analyses = {judge: Analysis(server.url, service, judge, duration, workdir) for judge in JUDGES}
    verdicts = {judge: verdict_word(analysis.finish(timeout_s=600)) for judge, analysis in analyses.items()}
    traffic.forget(service)
    return verdicts


def in_batches(count: int, parallel: int, work: Any) -> list[Any]:
    """Run work(index) for every index, `parallel` at a time, in threads; results in index order."""
    results: list[Any] = [None] * count
    for start in range(0, count, parallel):
        threads = []
        for index in range(start, min(count, start + parallel)):
            def target(i: int = index) -> None:
                results[i] = work(i)
            thread = threading.Thread(target=target)
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join()
    return results


def help_start_up(times: int = 10) -> list[float]:
    durations = []
    for _ in range(times):
        started = time.perf_counter()
        subprocess.run([ROLLGUARD, "analyze", "--help"], check=True, capture_output=True)
        durations.append(time.perf_counter() - started)
    return durations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=5)
    parser.add_argument("--healthy-duration", default="30s")
    parser.add_argument("--seed", type=int, default=1)
    options = parser.parse_args()
    rng = random.Random(options.seed)
    began = time.monotonic()

    startup = help_start_up()
    print(f"`rollguard analyze --help` start-up: median {statistics.median(startup):.3f}s, "
          f"max {max(startup):.3f}s over {len(startup)} runs (goal <= 0.5 s)", flush=True)

    with tempfile.TemporaryDirectory(prefix="rollguard-bench-") as directory, \
            SyntheticTraffic(NAMESPACE, seed=options.seed) as traffic, \
            PrometheusServer([ScrapeJob("istio", [traffic.target])], scrape_interval_s=1.0) as server:
        workdir = Path(directory)
        print(f"traffic: stable {STABLE.requests_per_s:g} rps, canary {CANARY.requests_per_s:g} rps, "
              f"{CANARY.error_rate:.1%} background errors; scrape 1s, interval 1s, {options.parallel} runs at a time",
              flush=True)
        bad = in_batches(options.runs, options.parallel,
                         lambda i: bad_canary_run(traffic, server, i, workdir, random.Random(rng.random())))
        for judge in JUDGES:
            times = [run[judge] for run in bad if isinstance(run[judge], float)]
            other = [run[judge] for run in bad if not isinstance(run[judge], float)]
            if times:
                print(f"100% bad canary -> verdict, judge {judge}: p50 {percentile(times, 0.5):.2f}s, "
                      f"p95 {percentile(times, 0.95):.2f}s, max {max(times):.2f}s over {len(times)} failing runs"
                      f"{f'; not fail: {other}' if other else ''} (goal p95 <= 3 s)", flush=True)
                errors = [int(run[f"{judge}_errors"]) for run in bad if f"{judge}_errors" in run]
                print(f"    canary 5xx counted at the verdict: median {statistics.median(errors):g}, "
                      f"min {min(errors)}, max {max(errors)}", flush=True)
            else:
                print(f"100% bad canary, judge {judge}: no run failed: {other}", flush=True)

        healthy = in_batches(options.runs, options.parallel,
                             lambda i: healthy_run(traffic, server, 1000 + i, workdir, options.healthy_duration))
        for judge in JUDGES:
            words = [run[judge] for run in healthy]
            print(f"healthy canary ({options.healthy_duration} bake, 0.5% background errors), judge {judge}: "
                  f"{words.count('fail')} false fails, {words.count('inconclusive')} inconclusive, "
                  f"{words.count('pass')} pass over {len(words)} runs (goal: 0 false fails)", flush=True)
    print(f"benchmark took {time.monotonic() - began:.0f}s")


if __name__ == "__main__":
    main()

"""Benchmark: N concurrent `rollguard analyze` processes (different services) against one real Prometheus
that scrapes a mesh-sized Istio exporter (`sandbox/istio_exporter.py`: 300 services, 110,400 series, 1 s scrape).

For each N (all started together, so every check of every analysis falls in the same part of the second:
the worst case; `--start-spread 1s` starts them evenly over a second, as independent releases would),
every analysis of a healthy canary runs its whole bake time. The analysed services are
scraped every second; the rest of the mesh every 15 s (`--mesh-scrape-interval`): its 110,400 series are all in
Prometheus's index, but scraping all of them every second alone took 0.6–0.8 of this machine's 2 cores, and
the scrape outgrew its 1 s timeout (series went stale). Prints one table:
  - lateness of each check against its schedule (`elapsed_s - index * interval` from the verdict's check
    records), p50 / p99 / max, whether every check was within 0.5 s, and slots a late check skipped;
  - query latency p50 / p99: the checks' own `query_s` when the verdict records it, else Prometheus's query
    log (server-side execTotalTime of every /api/v1/query, queueing included); the table says which;
    Prometheus's own histogram (prometheus_http_request_duration_seconds, first bucket 0.1 s) as a cross-check;
  - queries per check (prometheus_http_requests_total{handler="/api/v1/query"} before/after / checks);
  - Prometheus CPU per analysis-second, above its CPU for scraping alone (measured before the runs), from
    /proc/<pid>/stat; and the CPU of the analyze processes themselves per analysis-second (their rusage,
    start-up included) — 50 Python processes on 2 cores is the real constraint;
  - the machine's load average around each run (the machine is shared).

    .venv/bin/python benchmarks/concurrent_analyses.py [--n 1,10,50] [--duration 30s] [--interval 1s]
        [--services 300] [--scrape-interval 1] [--mesh-scrape-interval 15] [--start-spread 0s] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from ruamel.yaml import YAML

from rollguard.experiment.summary import percentile
from rollguard.sandbox.prometheus_server import PrometheusServer, ScrapeJob
from rollguard.steps.metrics.istio_queries import counters_query
from rollguard.steps.options import parse_duration

NAMESPACE = "mesh"
ROLLGUARD = str(Path(sys.executable).parent / "rollguard")
QUERY_HANDLER = "/api/v1/query"
LATE_GOAL_S = 0.5
TICK_S = os.sysconf("SC_CLK_TCK")


@dataclass
class QueryLoggingPrometheus(PrometheusServer):
    """A PrometheusServer that writes its query log (one JSON line per query, with its timings), and whose jobs
    may have their own settings (`params`, `scrape_interval`, `scrape_timeout`)."""

    query_log: Path | None = None
    job_settings: dict[str, dict[str, Any]] = field(default_factory=dict)

    def config_text(self) -> str:
        """The base config plus `global.query_log_file` and each job's own settings."""
        yaml = YAML()
        config = yaml.load(super().config_text())
        if self.query_log is not None:
            config["global"]["query_log_file"] = str(self.query_log)
        for job in config["scrape_configs"]:
            job.update(self.job_settings.get(job["job_name"], {}))
        buffer = StringIO()
        yaml.dump(config, buffer)
        return buffer.getvalue()


def process_cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK_S


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def load_average() -> str:
    return "/".join(f"{value:.2f}" for value in os.getloadavg())


@dataclass
class PrometheusSelf:
    """What Prometheus says about itself on /metrics: the query handler's requests and duration histogram."""

    queries: float = 0.0
    head_series: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count

    @classmethod
    def read(cls, url: str) -> PrometheusSelf:
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
            text = response.read().decode()
        own = cls()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "prometheus_tsdb_head_series":
                    own.head_series = sample.value
                if sample.labels.get("handler") != QUERY_HANDLER:
                    continue
                if sample.name == "prometheus_http_requests_total":
                    own.queries += sample.value
                elif sample.name == "prometheus_http_request_duration_seconds_bucket":
                    own.buckets[float(sample.labels["le"])] = sample.value
        return own

    def minus(self, before: PrometheusSelf) -> PrometheusSelf:
        return PrometheusSelf(queries=self.queries - before.queries, head_series=self.head_series,
                              buckets={le: count - before.buckets.get(le, 0.0) for le, count in self.buckets.items()})

    def quantile(self, q: float) -> float:
        """histogram_quantile() over the (delta) buckets: linear within the bucket; the top finite bound if above."""
        bounds = sorted(self.buckets)
        total = self.buckets[bounds[-1]] if bounds else 0.0
        if total <= 0:
            return float("nan")
        rank, lower, below = q * total, 0.0, 0.0
        for bound in bounds:
            count = self.buckets[bound]
            if count >= rank:
                if bound == float("inf"):
                    return lower
                return lower + (bound - lower) * (rank - below) / max(count - below, 1e-12)
            lower, below = bound, count
        return lower


def query_log_timings(path: Path, offset: int) -> tuple[list[float], list[float], int]:
    """execTotalTime and execQueueTime of every instant query logged after `offset`; the new offset."""
    if not path.exists():
        return [], [], offset
    with path.open("rb") as log:
        log.seek(offset)
        data = log.read()
    totals, queues = [], []
    for line in data.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("httpRequest", {}).get("path", QUERY_HANDLER) != QUERY_HANDLER:
            continue
        timings = entry.get("stats", {}).get("timings", {})
        if "execTotalTime" in timings:
            totals.append(float(timings["execTotalTime"]))
            queues.append(float(timings.get("execQueueTime", 0.0)))
    return totals, queues, offset + len(data)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def wait_scraped(url: str, service: str, deadline_s: float = 60.0) -> None:
    query = urllib.parse.quote(counters_query(NAMESPACE, service, "v2"))
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if get_json(f"{url}/api/v1/query?query={query}")["data"]["result"]:
            return
        time.sleep(0.5)
    raise RuntimeError(f"Prometheus did not scrape {service} within {deadline_s}s")


@dataclass
class Round:
    n: int
    wall_s: float = 0.0
    analysis_s: float = 0.0
    verdicts: dict[str, int] = field(default_factory=dict)
    lateness: list[float] = field(default_factory=list)
    skipped: int = 0
    checks: int = 0
    query_source: str = ""
    query_times: list[float] = field(default_factory=list)
    queue_times: list[float] = field(default_factory=list)
    prometheus_self: PrometheusSelf = field(default_factory=PrometheusSelf)
    prometheus_cpu_s: float = 0.0
    prometheus_extra_cpu_s: float = 0.0
    analyze_cpu_s: float = 0.0
    load_before: str = ""
    load_after: str = ""


def run_round(n: int, server: PrometheusServer, query_log: Path, baseline_cpu_per_s: float,
              options: argparse.Namespace, workdir: Path) -> Round:
    assert server.process is not None
    result = Round(n, load_before=load_average())
    _, _, log_offset = query_log_timings(query_log, 0)
    before_self = PrometheusSelf.read(server.url)
    cpu_before, children_before = process_cpu_s(server.process.pid), children_cpu_s()
    began = time.monotonic()
    processes = []
    spread_s = parse_duration(options.start_spread)
    for index in range(n):
        pause = began + index * spread_s / n - time.monotonic()
        if pause > 0:
            time.sleep(pause)  # pacing the starts, not waiting for a result
        service = f"svc-{index:03d}"
        verdict = workdir / f"n{n}-{service}.json"
        log = (workdir / f"n{n}-{service}.log").open("wb")
        processes.append((verdict, subprocess.Popen(
            [ROLLGUARD, "analyze", "--prometheus-url", server.url, "--namespace", NAMESPACE, "--service", service,
             "--stable-version", "v1", "--canary-version", "v2", "--interval", options.interval,
             "--duration", options.duration, "--min-requests", "5", "--verdict-file", str(verdict)],
            stdout=subprocess.DEVNULL, stderr=log)))
        log.close()
    limit_s = parse_duration(options.duration) + 120
    for _, process in processes:
        try:
            process.wait(timeout=max(1.0, began + limit_s - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    result.wall_s = time.monotonic() - began
    result.prometheus_cpu_s = process_cpu_s(server.process.pid) - cpu_before
    result.prometheus_extra_cpu_s = result.prometheus_cpu_s - baseline_cpu_per_s * result.wall_s
    result.analyze_cpu_s = children_cpu_s() - children_before
    result.prometheus_self = PrometheusSelf.read(server.url).minus(before_self)
    result.load_after = load_average()
    interval = parse_duration(options.interval)
    per_check_query: list[float] = []
    for verdict, process in processes:
        try:
            document = json.loads(verdict.read_text())
        except (OSError, ValueError):
            result.verdicts[f"none (exit {process.returncode})"] = result.verdicts.get(
                f"none (exit {process.returncode})", 0) + 1
            continue
        word = document.get("verdict", "?")
        result.verdicts[word] = result.verdicts.get(word, 0) + 1
        result.analysis_s += float(document["decided_at"]) - float(document["started_at"])
        checks = document.get("checks", [])
        result.checks += len(checks)
        planned = document.get("settings", {}).get("planned_looks")
        if isinstance(planned, int):
            result.skipped += max(0, planned - len(checks))
        for check in checks:
            result.lateness.append(float(check["elapsed_s"]) - int(check["index"]) * interval)
            spent = check.get("query_s")
            if isinstance(spent, (int, float)):
                per_check_query.append(float(spent))
            elif isinstance(spent, dict):
                result.query_times.extend(float(value) for value in spent.values() if isinstance(value, (int, float)))
    totals, queues, _ = query_log_timings(query_log, log_offset)
    if result.query_times:
        result.query_source = "verdict query_s (per query)"
    elif per_check_query:
        result.query_times, result.query_source = per_check_query, "verdict query_s (per check, all queries)"
    else:
        result.query_times, result.query_source = totals, "Prometheus query log (server execTotalTime)"
    result.queue_times = queues
    return result


def seconds(values: list[float], fraction: float) -> str:
    return f"{percentile(values, fraction):.3f}" if values else "-"


def print_table(rounds: list[Round], baseline_cpu_per_s: float) -> None:
    print()
    print("| N | checks (skipped slots) | lateness p50 / p99 / max s | all ≤ 0.5 s | query p50 / p99 s "
          "| Prometheus's histogram p50 / p99 s | queries per check | Prometheus CPU per analysis-s, above scraping "
          "| analyze CPU per analysis-s | verdicts | load before → after |")
    print("|---:|---:|---:|:---:|---:|---:|---:|---:|---:|---|---|")
    for r in rounds:
        late_max = max(r.lateness) if r.lateness else float("nan")
        within = "yes" if r.lateness and late_max <= LATE_GOAL_S and r.skipped == 0 else "**no**"
        own = r.prometheus_self
        per_check = own.queries / r.checks if r.checks else float("nan")
        analysis_s = max(r.analysis_s, 1e-9)
        verdicts = ", ".join(f"{count} {word}" for word, count in sorted(r.verdicts.items()))
        print(f"| {r.n} | {r.checks} ({r.skipped}) | {seconds(r.lateness, 0.5)} / {seconds(r.lateness, 0.99)} / "
              f"{late_max:.3f} | {within} | {seconds(r.query_times, 0.5)} / {seconds(r.query_times, 0.99)} | "
              f"{own.quantile(0.5):.3f} / {own.quantile(0.99):.3f} | {per_check:.1f} | "
              f"{1000 * r.prometheus_extra_cpu_s / analysis_s:.1f} ms | {1000 * r.analyze_cpu_s / analysis_s:.0f} ms "
              f"| {verdicts} | {r.load_before} → {r.load_after} |")
    print()
    print(f"Prometheus scraping alone: {baseline_cpu_per_s:.2f} CPU-s per second (a round holds one mesh scrape more "
          f"or less than its share: noise of ±1 CPU-s, large against N=1). Query latency source: "
          f"{', '.join(sorted({r.query_source for r in rounds}))}.")
    for r in rounds:
        if r.queue_times:
            print(f"  N={r.n}: query queue time (Prometheus --query.max-concurrency) "
                  f"p50 {seconds(r.queue_times, 0.5)}s, p99 {seconds(r.queue_times, 0.99)}s; "
                  f"{len(r.query_times)} queries; wall {r.wall_s:.1f}s; "
                  f"Prometheus {r.prometheus_cpu_s:.1f} CPU-s in all, analyze processes {r.analyze_cpu_s:.1f} CPU-s "
                  f"over {r.analysis_s:.0f} analysis-s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", default="1,10,50", help="numbers of concurrent analyses, comma-separated")
    parser.add_argument("--duration", default="30s", help="each analysis's bake time")
    parser.add_argument("--interval", default="1s")
    parser.add_argument("--services", type=int, default=300, help="services in the exporter's mesh")
    parser.add_argument("--scrape-interval", type=float, default=1.0, help="of the analysed services")
    parser.add_argument("--mesh-scrape-interval", type=float, default=15.0,
                        help="of the rest of the mesh (Istio's sample Prometheus: 15 s)")
    parser.add_argument("--start-spread", default="0s",
                        help="start the analyses evenly over this time (0s: all at once, the worst case; 1s: as "
                        "independent releases would, each check in its own part of the second)")
    parser.add_argument("--baseline-s", type=float,
                        help="how long to measure scraping alone (default: two mesh scrapes, at least 10 s)")
    parser.add_argument("--keep", type=Path, help="keep the verdicts and logs in this directory")
    options = parser.parse_args()
    counts = [int(n) for n in options.n.split(",")]
    if max(counts) > options.services:
        parser.error("--n needs at least as many --services")
    began = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="rollguard-concurrent-"))
    exporter = subprocess.Popen(
        [sys.executable, "-m", "rollguard.sandbox.istio_exporter", "--services", str(options.services),
         "--namespace", NAMESPACE],
        stdout=subprocess.PIPE, text=True)
    try:
        assert exporter.stdout is not None
        banner = exporter.stdout.readline().strip()
        print(f"exporter: {banner}", flush=True)
        target = banner.rsplit("http://", 1)[1].split("/", 1)[0]
        query_log = workdir / "query.log"
        analysed = max(counts)
        jobs: dict[str, dict[str, Any]] = {
            "analysed": {"params": {"services": [f"0:{analysed}"]}},
            "mesh": {"params": {"services": [f"{analysed}:{options.services}"]},
                     "scrape_interval": f"{options.mesh_scrape_interval:g}s",
                     "scrape_timeout": f"{min(options.mesh_scrape_interval, 10.0):g}s"},
        }
        with QueryLoggingPrometheus([ScrapeJob(name, [target]) for name in jobs],
                                    scrape_interval_s=options.scrape_interval, query_log=query_log,
                                    job_settings=jobs) as server:
            assert server.process is not None
            wait_scraped(server.url, f"svc-{analysed - 1:03d}")
            if analysed < options.services:
                last = f"svc-{options.services - 1:03d}"
                wait_scraped(server.url, last, deadline_s=60 + options.mesh_scrape_interval)
            time.sleep(3 * options.scrape_interval)
            cpu_before, at = process_cpu_s(server.process.pid), time.monotonic()
            exporter_before = process_cpu_s(exporter.pid)
            time.sleep(options.baseline_s or max(10.0, 2 * options.mesh_scrape_interval))
            elapsed = time.monotonic() - at
            baseline = (process_cpu_s(server.process.pid) - cpu_before) / elapsed
            scrapes = get_json(f"{server.url}/api/v1/query?query=scrape_duration_seconds")["data"]["result"]
            took = ", ".join(f"{one['metric']['job']} {float(one['value'][1]):.2f}s" for one in scrapes)
            heads = PrometheusSelf.read(server.url).head_series
            print(f"Prometheus {server.url}: {heads:.0f} series in its head; services 0-{analysed - 1} "
                  f"scraped every {options.scrape_interval:g}s, the rest every {options.mesh_scrape_interval:g}s "
                  f"(a scrape takes {took}): {baseline:.2f} CPU-s/s scraping alone; "
                  f"exporter {(process_cpu_s(exporter.pid) - exporter_before) / elapsed:.2f} CPU-s/s; "
                  f"load {load_average()}", flush=True)
            rounds = []
            for n in counts:
                print(f"N={n}: {n} analyses, interval {options.interval}, duration {options.duration} ...", flush=True)
                rounds.append(run_round(n, server, query_log, baseline, options, workdir))
            print_table(rounds, baseline)
    finally:
        exporter.terminate()
        exporter.wait(timeout=10)
        if options.keep is not None:
            shutil.copytree(workdir, options.keep, dirs_exist_ok=True)
            print(f"verdicts and logs kept in {options.keep}")
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"benchmark took {time.monotonic() - began:.0f}s")


if __name__ == "__main__":
    main()

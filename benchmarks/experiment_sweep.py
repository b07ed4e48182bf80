"""Benchmark: rollback times over many sandbox runs, and how scrape interval and sync delay change them.

Runs `rollguard experiment` several times and prints one table: breach -> cut and fault -> cut
(median, p95), failed requests, false rollbacks, and our judge's detection time divided by the plain
threshold rule's on the same runs. Each configuration's full report stays in the output directory.

    .venv/bin/python benchmarks/experiment_sweep.py [--out DIR] [--quick]

--quick uses fewer runs (for a smoke check); the figures in the README come from the full run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from rollguard.experiment.records import load_results
from rollguard.experiment.summary import spread


def configurations(quick: bool) -> list[tuple[str, list[str]]]:
    """(label, experiment flags) of every measured configuration."""
    many, few = (3, 2) if quick else (20, 3)
    return [
        ("faulty, scrape 1s, sync 0s", ["--scenario", "faulty", "--runs", str(many), "--judge", "both"]),
        ("healthy, 0.5% background 5xx", ["--scenario", "healthy", "--runs", str(many),
                                           "--background-error-rate", "0.005"]),
        ("faulty, scrape 5s", ["--scenario", "faulty", "--runs", str(few), "--scrape-interval", "5s",
                               "--window", "20s"]),
        ("faulty, scrape 15s", ["--scenario", "faulty", "--runs", str(few), "--scrape-interval", "15s",
                                "--window", "60s"]),
        ("faulty, sync delay 1s", ["--scenario", "faulty", "--runs", str(few), "--sync-delay", "1s"]),
        ("faulty, sync delay 30s", ["--scenario", "faulty", "--runs", str(few), "--sync-delay", "30s"]),
        ("faulty, sync delay 180s (ArgoCD polling)", ["--scenario", "faulty", "--runs", str(few),
                                                      "--sync-delay", "180s"]),
    ]


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def main() -> int:
    """Run every configuration and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("reports") / time.strftime("sweep-%Y%m%d-%H%M%S"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", help="run only configurations whose label contains this text")
    options = parser.parse_args()
    rows = []
    for index, (label, flags) in enumerate(configurations(options.quick)):
        if options.only and options.only not in label:
            continue
        report = options.out / f"{index:02d}"
        started = time.monotonic()
        completed = subprocess.run(
            [sys.executable, "-m", "rollguard.steps.cli", "experiment", "--report-dir", str(report), *flags],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        if completed.returncode != 0:
            print(f"{label}: experiment exited {completed.returncode}: {completed.stderr[-500:]}", file=sys.stderr)
        records, _settings = load_results(report)
        breach = spread([record.breach_to_cut_s() for record in records if record.faulty])
        fault = spread([record.fault_to_cut_s() for record in records if record.faulty])
        failed = spread([float(record.failed_requests) for record in records if record.faulty])
        ratio = spread([record.detection_ratio() for record in records if record.faulty])
        healthy = [record for record in records if record.scenario == "healthy"]
        false_rollbacks = sum(record.false_rollback for record in healthy)
        rows.append((label, len(records), breach, fault, failed, ratio, false_rollbacks, len(healthy),
                     time.monotonic() - started))
        print(f"done: {label} ({time.monotonic() - started:.0f} s, report {report})", file=sys.stderr, flush=True)
    print("| configuration | runs | breach→cut median / p95 s | fault→cut median / p95 s | failed requests median "
          "| detection ÷ plain rule (median) | false rollbacks |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, runs, breach, fault, failed, ratio, false_rollbacks, healthy_runs, _took in rows:
        print(f"| {label} | {runs} | {_fmt(breach.median)} / {_fmt(breach.p95)} | {_fmt(fault.median)} / "
              f"{_fmt(fault.p95)} | {_fmt(failed.median)} | {_fmt(ratio.median)} | "
              f"{f'{false_rollbacks} of {healthy_runs}' if healthy_runs else '–'} |")
    print(f"\nreports: {options.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

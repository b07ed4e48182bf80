"""Benchmark: rollback times over many sandbox runs, and how scrape interval, sync delay and pod start change them.

Runs `rollguard experiment` several times and prints one table: verdict -> cut, breach -> cut and
fault -> cut (median, p95), failed requests, false rollbacks, and our judge's detection time divided
by the plain threshold rule's on the same runs. Each configuration's full report stays in the output
directory.

The pod-start rows (--pod-start-delay 0/3/8 s) run with the rollback step after analyze
(`--rollback-in-analysis false`) and, when the installed canary-release declares the workflow
parameter `rollback-in-analysis`, also with analyze's own in-process rollback (`true`); without
the parameter those rows are listed as not run.

    .venv/bin/python benchmarks/experiment_sweep.py [--out DIR] [--quick]

--quick uses fewer runs (for a smoke check); the figures in the README come from the full run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import yaml

from rollguard.experiment.records import load_results
from rollguard.experiment.summary import spread

POD_STARTS_S = (0, 3, 8)
ROLLBACK_IN_ANALYSIS = "rollback-in-analysis"


def declares_rollback_in_analysis() -> bool:
    """True when the installed canary-release has the workflow parameter of analyze's in-process rollback."""
    text = resources.files("rollguard.workflows").joinpath("canary-release.yaml").read_text()
    for document in yaml.safe_load_all(text):
        parameters = ((document or {}).get("spec") or {}).get("arguments", {}).get("parameters") or []
        if any(parameter.get("name") == ROLLBACK_IN_ANALYSIS for parameter in parameters):
            return True
    return False


def pod_start_configurations(few: int, in_process: bool) -> list[tuple[str, list[str] | None]]:
    """The pod-start rows: without, and (when the template has it; else None, not run) with in-process rollback."""
    rows: list[tuple[str, list[str] | None]] = []
    for seconds in POD_STARTS_S:
        flags = ["--scenario", "faulty", "--runs", str(few), "--pod-start-delay", f"{seconds}s"]
        rows.append((f"faulty, pod start {seconds}s, rollback step after analyze",
                     [*flags, "--rollback-in-analysis", "false"]))
        rows.append((f"faulty, pod start {seconds}s, rollback in analyze",
                     [*flags, "--rollback-in-analysis", "true"] if in_process else None))
    return rows


def configurations(quick: bool) -> list[tuple[str, list[str] | None]]:
    """(label, experiment flags) of every measured configuration; flags None: cannot run with this template."""
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
        *pod_start_configurations(few, declares_rollback_in_analysis()),
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
    not_run: list[str] = []
    for index, (label, flags) in enumerate(configurations(options.quick)):
        if options.only and options.only not in label:
            continue
        if flags is None:
            print(f"not run: {label} (canary-release has no workflow parameter {ROLLBACK_IN_ANALYSIS})",
                  file=sys.stderr)
            not_run.append(label)
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
        verdict = spread([record.verdict_to_cut_s() for record in records if record.faulty])
        breach = spread([record.breach_to_cut_s() for record in records if record.faulty])
        fault = spread([record.fault_to_cut_s() for record in records if record.faulty])
        failed = spread([float(record.failed_requests) for record in records if record.faulty])
        ratio = spread([record.detection_ratio() for record in records if record.faulty])
        healthy = [record for record in records if record.scenario == "healthy"]
        false_rollbacks = sum(record.false_rollback for record in healthy)
        rows.append((label, len(records), verdict, breach, fault, failed, ratio, false_rollbacks, len(healthy),
                     time.monotonic() - started))
        print(f"done: {label} ({time.monotonic() - started:.0f} s, report {report})", file=sys.stderr, flush=True)
    print("| configuration | runs | verdict→cut median / p95 s | breach→cut median / p95 s | fault→cut median / p95 s "
          "| failed requests median | detection ÷ plain rule (median) | false rollbacks |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, runs, verdict, breach, fault, failed, ratio, false_rollbacks, healthy_runs, _took in rows:
        print(f"| {label} | {runs} | {_fmt(verdict.median)} / {_fmt(verdict.p95)} | {_fmt(breach.median)} / "
              f"{_fmt(breach.p95)} | {_fmt(fault.median)} / {_fmt(fault.p95)} | {_fmt(failed.median)} | "
              f"{_fmt(ratio.median)} | {f'{false_rollbacks} of {healthy_runs}' if healthy_runs else '–'} |")
    for label in not_run:
        print(f"| {label} | – | not run: canary-release has no parameter {ROLLBACK_IN_ANALYSIS} | | | | | |")
    print(f"\nreports: {options.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

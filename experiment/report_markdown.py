"""report.md: per-run table, summary statistics, the verdict against the goals, machine and settings."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from typing import Any

from rollguard.experiment.records import RunRecord
from rollguard.experiment.summary import check_goals, summarise


def _cell(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def machine_description() -> str:
    """One line naming the machine the runs were measured on."""
    cores = os.cpu_count() or 0
    memory = ""
    try:
        with open("/proc/meminfo") as meminfo:
            kib = int(meminfo.readline().split()[1])
            memory = f", {kib / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{platform.system()} {platform.machine()}, {cores} cores{memory}, Python {platform.python_version()}"


def render_report(records: Sequence[RunRecord], settings: dict[str, Any], *, interrupted: bool = False) -> str:
    """The whole report.md text."""
    lines = ["# rollguard rollback-time experiment", ""]
    if interrupted:
        lines += ["**Interrupted:** the report holds the runs that finished before the stop.", ""]
    lines += ["## Runs", ""]
    lines += [
        "| run | scenario | mode | judge | outcome | verdict → cut s | breach → cut s | fault → cut s "
        "| alert → cut s | fault → verdict s | threshold rule s | failed requests |",
        "|---:|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for record in records:
        lines.append(
            f"| {record.run} | {record.scenario} | {record.mode} | {record.judge} | {record.outcome} "
            f"| {_cell(record.verdict_to_cut_s())} | {_cell(record.breach_to_cut_s())} "
            f"| {_cell(record.fault_to_cut_s())} | {_cell(record.alert_to_cut_s())} "
            f"| {_cell(record.fault_to_verdict_s())} | {_cell(record.fault_to_threshold_rule_s())} "
            f"| {record.failed_requests} |"
        )
    lines += ["", "## Summary", "", "| measure | runs | mean | median | p95 | max |", "|---|---:|---:|---:|---:|---:|"]
    for name, figures in summarise(records).items():
        lines.append(
            f"| {name} | {figures.count} | {_cell(figures.mean)} | {_cell(figures.median)} "
            f"| {_cell(figures.p95)} | {_cell(figures.maximum)} |"
        )
    healthy = [record for record in records if record.scenario == "healthy"]
    if healthy:
        promoted = sum(1 for record in healthy if record.outcome == "promoted")
        false_rollbacks = sum(1 for record in healthy if record.false_rollback)
        lines += ["", f"Healthy runs: {len(healthy)}, promoted {promoted}, false rollbacks {false_rollbacks}."]
    lines += ["", "## Against the goals", "", "| goal | measured | met |", "|---|---|---|"]
    for check in check_goals(records):
        met = "not measured" if check.met is None else ("yes" if check.met else "**no**")
        lines.append(f"| {check.goal} | {check.measured} | {met} |")
    lines += ["", "## Machine and settings", "", f"- machine: {machine_description()}"]
    for key, value in settings.items():
        lines.append(f"- {key}: {value}")
    lines += [
        "",
        "Moments: *fault* = the canary started failing; *breach* = first scrape at which Prometheus's "
        "own evaluation of the threshold query exceeded the threshold; *alert* = the shipped alert rule "
        "went to firing (empty when the rollback came first); *verdict* = rollguard decided (the verdict's "
        "decided_at); *cut* = "
        "the router (sandbox) or the live VirtualService (cluster) sent 0 % to the canary.",
        "",
    ]
    return "\n".join(lines)

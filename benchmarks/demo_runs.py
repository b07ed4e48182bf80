"""Benchmark of `rollguard demo`: several whole runs per scenario, figures for the closing note.

Runs the real command (`rollguard demo --scenario S --report-dir DIR`) --runs times per scenario,
one after the other, then reads DIR/results.json and prints (does not assert):
  - faulty, slow and down: first breach -> traffic cut and fault start -> traffic cut (p50, p95, max),
    failed user requests per run (mean, max), outcomes;
  - healthy: runs promoted without a false rollback;
  - wall time per scenario.

    .venv/bin/python benchmarks/demo_runs.py [--runs 5] [--scenarios faulty,slow,healthy] [--report-dir DIR]
                                             [-- extra demo flags]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rollguard.experiment.summary import percentile  # one definition: linear interpolation
from rollguard.sandbox.results import read_results


def _spread(values: list[float]) -> str:
    if not values:
        return "n/a"
    return (f"p50 {statistics.median(values):5.2f} s  p95 {percentile(values, 0.95):5.2f} s  "
            f"max {max(values):5.2f} s  (n={len(values)})")


def main() -> int:
    """Run the demos and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--scenarios", default="faulty,slow,healthy")
    parser.add_argument("--report-dir", type=Path, default=Path("reports") / time.strftime("bench-demo-%Y%m%d-%H%M%S"))
    parser.add_argument("demo_args", nargs="*", help="extra flags for every `rollguard demo` (after --)")
    args = parser.parse_args()
    scenarios = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    wall: dict[str, list[float]] = {name: [] for name in scenarios}
    exit_codes: dict[str, list[int]] = {name: [] for name in scenarios}
    for scenario in scenarios:
        for index in range(args.runs):
            began = time.monotonic()
            completed = subprocess.run(
                [sys.executable, "-m", "rollguard.steps.cli", "demo", "--scenario", scenario, "--report-dir",
                 str(args.report_dir), *args.demo_args],
                capture_output=True, text=True, timeout=600, check=False,
            )
            wall[scenario].append(time.monotonic() - began)
            exit_codes[scenario].append(completed.returncode)
            print(f"{scenario} run {index + 1}/{args.runs}: exit {completed.returncode} in "
                  f"{wall[scenario][-1]:.1f} s", flush=True)
            if completed.returncode not in (0, 1):
                print(completed.stderr[-2000:], file=sys.stderr)
    runs = read_results(args.report_dir)
    print(f"\nrollguard demo, {args.runs} runs per scenario (results: {args.report_dir / 'results.json'})")
    for scenario in scenarios:
        mine = [run for run in runs if run["scenario"] == scenario]
        outcomes = {outcome: sum(1 for run in mine if run["outcome"] == outcome)
                    for outcome in ("rolled_back", "promoted", "incomplete")}
        print(f"\n{scenario}: outcomes {outcomes}, exit codes {exit_codes[scenario]}, "
              f"wall time per run {_spread(wall[scenario])}")
        if scenario == "healthy":
            print(f"  promoted without a false rollback: {outcomes['promoted']} of {len(mine)}")
            continue
        breach_to_cut = [run["breach_to_cut_s"] for run in mine if run.get("breach_to_cut_s") is not None]
        fault_to_cut = [run["fault_to_cut_s"] for run in mine if run.get("fault_to_cut_s") is not None]
        failed = [run["failed_requests"] for run in mine]
        verdict_after_fault = [run["verdict_at"] - run["fault_start"] for run in mine
                               if run.get("verdict_at") and run.get("fault_start")]
        alerts = sum(1 for run in mine if run.get("alert_firing") is not None)
        print(f"  first breach -> traffic cut: {_spread(breach_to_cut)}")
        print(f"  fault start  -> traffic cut: {_spread(fault_to_cut)}")
        print(f"  fault start  -> verdict:     {_spread(verdict_after_fault)}")
        if failed:
            print(f"  failed user requests per run: mean {statistics.mean(failed):.1f}, max {max(failed)}, "
                  f"all {failed}")
        print(f"  paging alert fired before the run ended: {alerts} of {len(mine)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

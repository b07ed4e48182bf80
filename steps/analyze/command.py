"""Judge a canary from Prometheus: every --interval compare canary (and stable) error rate, p99
latency and custom metrics with their limits; stop at the first decisive failure; pass only after
--duration with at least --min-requests canary requests (--duration 0: open-ended, never passes).
Writes the verdict as JSON.

Exit codes: 0 pass, 1 fail, 3 inconclusive, 2 bad usage (nothing written).
Policies: --on-no-data continue (keep looking; still no data when the bake time ends ->
inconclusive, never pass); --on-error inconclusive (once --max-consecutive-errors checks in a row
could not be judged). The anytime-valid tests (--judge statistical) count every request since the
analysis started (--started-at: since an earlier start, to resume it); --judge bonferroni counts at
most the last --window.

--rollback-on-fail: the step also rolls the canary back itself right after writing a fail verdict (and an
inconclusive one under --on-inconclusive rollback), with `rollguard rollback`'s code and flags, checked
before the first query. The exit code still says the verdict; --rolled-back-file says whether it rolled back.
"""

from __future__ import annotations

import argparse
import time

from rollguard.steps import logs
from rollguard.steps.analyze import flags
from rollguard.steps.analyze.check_log import log_start
from rollguard.steps.analyze.loop import AnalysisInterrupted, run_checks
from rollguard.steps.analyze.rollback_now import act_on_verdict, plan_from_args, record
from rollguard.steps.analyze.settings import settings_from_args
from rollguard.steps.analyze.verdict_files import write_verdict
from rollguard.steps.exit_codes import ExitCode
from rollguard.steps.judgment.outcomes import Verdict
from rollguard.steps.metrics.prometheus_client import PrometheusQuerier

EXIT_CODES = {Verdict.PASS: ExitCode.OK, Verdict.FAIL: ExitCode.FAIL, Verdict.INCONCLUSIVE: ExitCode.INCONCLUSIVE}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `rollguard analyze`, each also settable as ROLLGUARD_<NAME>."""
    flags.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Entry point of `rollguard analyze`: validate, judge, write the verdict, roll back if told to, return
    the verdict's exit code.

    Ctrl-C and SIGTERM (the CLI turns it into KeyboardInterrupt) still write an inconclusive verdict.
    """
    settings = settings_from_args(args)
    rollback = plan_from_args(args, settings.outputs.verdict)
    logs.configure("analyze")
    log_start(settings)
    rollback.log_start()
    access = settings.prometheus
    # No query and no retry outlives the analysis's time limit, however slowly Prometheus answers.
    not_after = time.monotonic() + settings.time_limit_s
    querier = PrometheusQuerier(access.endpoint, timeout_s=access.timeout_s, attempts=access.attempts,
                                not_after=not_after)
    try:
        document = run_checks(settings, querier)
    except AnalysisInterrupted as interrupted:
        write_verdict(settings.outputs, interrupted.document)
        record(rollback, rolled_back=False)  # stopped: the exit handler rolls back
        raise
    write_verdict(settings.outputs, document)
    act_on_verdict(rollback, document)
    return EXIT_CODES[document.verdict]

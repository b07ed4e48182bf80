"""The flags of `rollguard analyze`, each also settable as ROLLGUARD_<NAME> (how the workflows pass them)."""

from __future__ import annotations

import argparse

from rollguard.steps.judgment.outcomes import Judge, Policy
from rollguard.steps.metrics.failures import DEFAULT_GRPC_ERROR_CODES, grpc_codes_text, parse_grpc_codes
from rollguard.steps.metrics.prometheus_access import add_prometheus_access_arguments
from rollguard.steps.options import (
    add_flag,
    add_switch,
    duration_or_forever,
    fraction,
    non_negative_float,
    non_negative_int,
    positive_duration,
    positive_int,
    unix_time,
)
from rollguard.steps.rollback import INCONCLUSIVE_POLICIES
from rollguard.steps.weight_change.flags import add_cluster_arguments, add_publish_arguments, add_repository_arguments

POLICIES = [policy.value for policy in Policy]


def grpc_error_codes(text: str) -> str:
    """argparse type: gRPC status names or numbers, comma-separated (or `none`), in canonical form."""
    try:
        return grpc_codes_text(parse_grpc_codes(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `rollguard analyze`, in the order --help and the WorkflowTemplates list them."""
    target = parser.add_argument_group("what to analyze")
    add_flag(target, "--prometheus-url", default="http://prometheus.monitoring:9090", help="Prometheus base URL")
    add_flag(target, "--namespace", required=True, help="namespace of the canary's workloads")
    add_flag(target, "--service", required=True, help="destination_service_name of the service")
    add_flag(target, "--stable-version", required=True, help="destination_version label of stable (e.g. v1)")
    add_flag(target, "--canary-version", required=True, help="destination_version label of the canary (e.g. v2)")
    add_prometheus_access_arguments(parser.add_argument_group("Prometheus authentication and TLS"))
    timing = parser.add_argument_group("timing")
    add_flag(timing, "--interval", default="5s", type=positive_duration, help="time between checks (500ms, 1s, 2m)")
    add_flag(timing, "--duration", default="2m", type=duration_or_forever,
             help="bake time before a pass; 0 or forever: open-ended, watch until stopped or failed (never passes; "
             "--judge statistical or threshold)")
    add_flag(timing, "--started-at", type=unix_time,
             help="resume an analysis that started then (Unix seconds or ISO 8601, e.g. its verdict's started_at): "
             "count and bake from that moment, reading the counters it began with from Prometheus, so a restarted "
             "step continues the same sequential test instead of starting a new one")
    add_flag(timing, "--window", default="1m", type=positive_duration,
             help="rate window of the PromQL point values and of the bonferroni counts; the anytime tests count "
             "from the start, and a long analysis (open-ended, or 10 windows or more) restarts them every window")
    limits = parser.add_argument_group("limits")
    add_flag(limits, "--max-error-rate", default=0.01, type=fraction,
             help="canary failed-request share limit (0.01 = 1 %%): HTTP 5xx, gRPC error statuses, requests that "
             "never reached the canary, failed TCP connections")
    add_flag(limits, "--max-p99-latency-ms", default=500.0, type=non_negative_float, help="canary p99 limit in ms")
    add_flag(limits, "--min-requests", default=100, type=non_negative_int, help="canary requests needed to pass")
    add_flag(limits, "--max-error-rate-increase", default=0.01, type=fraction,
             help="how much the canary's error rate may exceed stable's (a fraction: 0.01 = 1 point)")
    add_flag(limits, "--grpc-error-codes", default=grpc_codes_text(DEFAULT_GRPC_ERROR_CODES), type=grpc_error_codes,
             help="gRPC statuses (names or numbers, comma-separated; none: only HTTP 5xx) that count as failed "
             "calls; default: the server-side failures, those Envoy maps to HTTP 5xx")
    add_flag(limits, "--metrics-file", help="YAML file of custom PromQL metric templates with min/max")
    judging = parser.add_argument_group("judging")
    add_flag(judging, "--judge", default=Judge.STATISTICAL.value, choices=[judge.value for judge in Judge],
             help="statistical: anytime-valid sequential tests on the counts since the start, fail at the first "
             "proof; bonferroni: exact fixed-look tests sharing the budget over the planned checks (the former "
             "default); threshold: point values, fail after --failure-limit failed checks")
    add_flag(judging, "--confidence", default=0.99, type=fraction,
             help="statistical rule: a canary within its limits is failed with probability <= 1 - confidence")
    add_flag(judging, "--failure-limit", default=3, type=positive_int,
             help="threshold rule and custom metrics: failed checks that make the verdict fail")
    add_switch(judging, "--absolute-only",
               help="statistical judge: absolute limits only, no comparison with stable, its share of the budget "
               "to the other tests (a guard after promotion to 100 %%)")
    add_switch(judging, "--consecutive", help="count only failed checks in a row towards --failure-limit")
    add_flag(judging, "--on-no-data", default=Policy.CONTINUE.value, choices=POLICIES,
             help="no series / NaN: keep looking (continue), or decide now")
    add_flag(judging, "--on-error", default=Policy.INCONCLUSIVE.value, choices=POLICIES,
             help="what an outage becomes once --max-consecutive-errors checks in a row failed")
    add_flag(judging, "--max-consecutive-errors", default=4, type=non_negative_int,
             help="checks in a row that may fail to query before --on-error applies")
    add_flag(judging, "--query-timeout", default="5s", type=positive_duration, help="timeout of one query")
    add_flag(judging, "--query-attempts", default=3, type=positive_int,
             help="tries per query (exponential backoff from 200ms)")
    output = parser.add_argument_group("output")
    add_flag(output, "--verdict-file", default="/tmp/verdict.json", help="where the verdict JSON is written")
    add_flag(output, "--verdict-word-file", help="optional file for the single word pass|fail|inconclusive")
    add_flag(output, "--verdict-summary-file",
             help="optional file for the verdict without the per-check list (small enough for an Argo parameter)")
    add_rollback_arguments(parser)


def add_rollback_arguments(parser: argparse.ArgumentParser) -> None:
    """--rollback-on-fail and the flags of the rollback it runs: `rollguard rollback`'s own, with the same names and
    defaults (one workflow parameter feeds both steps); analyze's --namespace is also the live VirtualService's."""
    act = parser.add_argument_group("rollback where the verdict is made (--rollback-on-fail)")
    add_switch(act, "--rollback-on-fail",
               help="on a fail verdict (and an inconclusive one under --on-inconclusive rollback) roll the canary "
               "back in this process right after writing the verdict: the commit with the verdict as evidence, push, "
               "ArgoCD sync and live patch of `rollguard rollback --reason-file VERDICT-FILE`, idempotent and "
               "race-safe; needs --repo, --path and --virtual-service. A rollback that fails is logged and the exit "
               "code still says the verdict")
    add_flag(act, "--on-inconclusive", default="rollback", choices=list(INCONCLUSIVE_POLICIES),
             help="with --rollback-on-fail, what an inconclusive verdict does: rollback (fail-safe) rolls back here "
             "too; promote or stop do not")
    add_flag(act, "--rolled-back-file",
             help="optional file for the word true (this step rolled the canary back: Git has 0 %%, and ArgoCD and "
             "the live VirtualService were brought to it when asked) or false")
    add_flag(act, "--rollback-result-file",
             help="with --rollback-on-fail: the rollback's outcome as JSON (as `rollguard rollback --result-file` "
             "writes it), when one ran")
    add_repository_arguments(parser, required=False)
    add_publish_arguments(parser, dry_run=False)
    add_cluster_arguments(parser, live_namespace=False)

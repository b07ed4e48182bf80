"""`retryStrategy` decided after each failed attempt as Argo decides it (operator.go processNodeRetries, v3.6.19).

In Argo's order: the workflow deadline ("retry exceeded workflow deadline ..."), backoff
maxDuration ("Max duration limit exceeded", "Backoff would exceed max duration limit"), the
policy (Always: Failed and Error; OnFailure: Failed; OnError: Error — a phase it does not cover
ends the node with the attempt's own message), the limit (`limit` retries, so limit + 1 attempts;
none given: no limit; "No more retries left"), then the expression ("retryStrategy.expression
evaluated to false"). The policy defaults to OnFailure, or Always when an expression is given
(RetryPolicyActual, v3.5+). Backoff waits duration × factor^(attempts − 1), only while a limit is
set and not reached (as Argo requeues). A retried node ends with its last attempt's phase.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from rollguard.sandbox.executor.errors import ExecutorError
from rollguard.sandbox.executor.expressions import substitute, yaml_text
from rollguard.sandbox.executor.nodes import NodeResult, Phase
from rollguard.sandbox.executor.retry_expression import RetryExpression
from rollguard.steps.options import parse_duration


@dataclass(frozen=True)
class RetryDecision:
    """Retry after `wait_s`, or stop; a stopping node's message is `message` (None: the attempt's own)."""

    retry: bool
    wait_s: float = 0.0
    message: str | None = None


@dataclass(frozen=True)
class RetryStrategy:
    """A template's retryStrategy with its values resolved."""

    limit: int | None
    policy: str
    duration_s: float | None
    factor: int
    max_duration_s: float | None
    expression: RetryExpression | None

    @classmethod
    def of(cls, template: dict[str, Any], variables: dict[str, str], where: str) -> RetryStrategy | None:
        """The template's strategy (None without one); ExecutorError naming the field that cannot be read."""
        retry = template.get("retryStrategy")
        if retry is None:
            return None

        def value(field: str, raw: Any) -> str:
            return substitute(yaml_text(raw), variables, f"{where} retryStrategy.{field}")

        try:
            limit = int(value("limit", retry["limit"])) if retry.get("limit") is not None else None
            backoff = retry.get("backoff") or {}
            if backoff and not backoff.get("duration"):
                raise ExecutorError(f"{where}: no base duration specified for retryStrategy")  # Argo's words
            duration_s = _duration(value("backoff.duration", backoff["duration"])) if backoff else None
            factor = int(value("backoff.factor", backoff.get("factor", 0) or 0))
            max_duration = backoff.get("maxDuration")
            max_duration_s = _duration(value("backoff.maxDuration", max_duration)) if max_duration else None
        except ValueError as exc:
            raise ExecutorError(f"{where}: retryStrategy: {exc}") from None
        expression = RetryExpression(str(retry["expression"]), where) if retry.get("expression") else None
        policy = str(retry.get("retryPolicy") or ("Always" if expression else "OnFailure"))
        return cls(limit, policy, duration_s, factor, max_duration_s, expression)

    def after(self, attempts: list[NodeResult], workflow_deadline: float | None,
              shutdown: str | None = None) -> RetryDecision:  # fmt: skip
        """What Argo does after the last of `attempts` (each a finished pod of this node); `shutdown` is the
        workflow's shutdown strategy (argo stop/terminate), which ends every retry."""
        last = attempts[-1]
        if last.phase is Phase.SUCCEEDED:
            return RetryDecision(retry=False)
        if shutdown is not None:
            return RetryDecision(retry=False, message=f"Stopped with strategy '{shutdown}'")
        now = time.time()
        if workflow_deadline is not None and now > workflow_deadline:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(workflow_deadline))
            return RetryDecision(retry=False, message=f"retry exceeded workflow deadline {stamp}")
        wait_s = 0.0
        if self.duration_s is not None:
            max_deadline = attempts[0].started_at + self.max_duration_s if self.max_duration_s is not None else None
            if max_deadline is not None and now > max_deadline:
                return RetryDecision(retry=False, message="Max duration limit exceeded")
            wait_s = self.duration_s * (self.factor ** (len(attempts) - 1) if self.factor > 0 else 1)
            if max_deadline is not None and last.finished_at + wait_s > max_deadline:
                return RetryDecision(retry=False, message="Backoff would exceed max duration limit")
            if self.limit is None or len(attempts) > self.limit:
                wait_s = 0.0  # Argo requeues for the backoff only while a limit is set and not reached
        on_failed = self.policy in ("Always", "OnFailure")
        on_error = self.policy in ("Always", "OnError")
        if (last.phase is Phase.FAILED and not on_failed) or (last.phase is Phase.ERROR and not on_error):
            return RetryDecision(retry=False)
        if self.limit is not None and len(attempts) > self.limit:
            return RetryDecision(retry=False, message="No more retries left")
        if self.expression is not None and not self.expression.holds(self.scope(attempts)):
            return RetryDecision(retry=False, message="retryStrategy.expression evaluated to false")
        return RetryDecision(retry=True, wait_s=max(0.0, last.finished_at + wait_s - time.time()))

    @staticmethod
    def scope(attempts: list[NodeResult]) -> dict[str, str]:
        """The expression's variables after `attempts` (buildRetryStrategyLocalScope): all strings."""
        last = attempts[-1]
        return {
            "retries": str(len(attempts) - 1),
            "lastRetry.exitCode": str(last.exit_code) if last.exit_code is not None else "-1",
            "lastRetry.status": last.phase.value,
            "lastRetry.duration": f"{max(0.0, last.finished_at - last.started_at):g}",
            "lastRetry.message": last.message,
        }


def _duration(text: str) -> float:
    """A backoff duration: Argo's ParseStringToDuration takes seconds as a bare number, or a Go duration."""
    return float(text) if text.replace(".", "", 1).isdigit() else parse_duration(text)

"""retryStrategy as Argo decides it: policy, limit, backoff, and the expression over lastRetry's string variables."""

from __future__ import annotations

import itertools
import sys
import textwrap
from pathlib import Path

import pytest

from rollguard.sandbox.executor.errors import ExecutorError, UnsupportedFeature
from rollguard.sandbox.executor.loader import load_files
from rollguard.sandbox.executor.nodes import NodeResult, Phase
from rollguard.sandbox.executor.retry_expression import RetryExpression
from rollguard.sandbox.executor.runner import LocalExecutor

PY = sys.executable

# Each attempt appends "<retries> <time>" to `log`, then exits with the next code of `codes` (comma-separated,
# the last one repeating); code 99 means: exit 0 without writing the output file (the node is then Error).
FLAKY = """
apiVersion: argoproj.io/v1alpha1
kind: WorkflowTemplate
metadata: {name: flaky}
spec:
  entrypoint: step
  arguments:
    parameters: [{name: log}, {name: codes}]
  templates:
  - name: step
    retryStrategy: RETRY
    outputs:
      parameters:
      - name: done
        valueFrom: {path: "{{workflow.parameters.log}}.done"}
    container:
      image: x
      command: [PYTHON, -c]
      args:
      - |
        import sys, time
        log, codes, retries = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])
        open(log, "a").write(f"{retries} {time.time()}\\n")
        code = int(codes[min(retries, len(codes) - 1)])
        if code != 99:
            open(log + ".done", "w").write("yes")
        sys.exit(0 if code == 99 else code)
      - "{{workflow.parameters.log}}"
      - "{{workflow.parameters.codes}}"
      - "{{retries}}"
"""


def _run(tmp_path: Path, retry: str, codes: str) -> tuple[NodeResult, list[tuple[int, float]]]:
    path = tmp_path / "flaky.yaml"
    path.write_text(textwrap.dedent(FLAKY).replace("PYTHON", PY).replace("RETRY", retry))
    log = tmp_path / "attempts.log"
    result = LocalExecutor(load_files([path]), on_event=lambda _event: None).run(
        "flaky", {"log": str(log), "codes": codes})
    attempts = [(int(retries), float(at)) for retries, at in (line.split() for line in log.read_text().splitlines())]
    return result.node("step"), attempts


ALWAYS_BUT_USAGE = "{limit: 3, retryPolicy: Always, expression: 'lastRetry.exitCode != \"2\"'}"


def test_the_expression_stops_retrying_a_usage_error(tmp_path: Path) -> None:
    node, attempts = _run(tmp_path, ALWAYS_BUT_USAGE, "2")
    assert [retries for retries, _ in attempts] == [0]
    assert (node.phase, node.exit_code) == (Phase.FAILED, 2)
    assert node.message == "retryStrategy.expression evaluated to false"


def test_other_failures_are_retried_up_to_the_limit(tmp_path: Path) -> None:
    node, attempts = _run(tmp_path, ALWAYS_BUT_USAGE, "1")
    assert [retries for retries, _ in attempts] == [0, 1, 2, 3]  # limit 3: four attempts, {{retries}} each time
    assert (node.phase, node.message) == (Phase.FAILED, "No more retries left")


def test_a_retry_that_succeeds_ends_the_node_succeeded(tmp_path: Path) -> None:
    node, attempts = _run(tmp_path, ALWAYS_BUT_USAGE, "1,1,0")
    assert len(attempts) == 3 and node.phase is Phase.SUCCEEDED and node.outputs == {"done": "yes"}


def test_with_an_expression_the_default_policy_is_always_and_retries_errors(tmp_path: Path) -> None:
    # code 99: main exits 0 but the output file is missing, so the node is Error (the wait container failed)
    node, attempts = _run(tmp_path, "{limit: 1, expression: 'lastRetry.status == \"Error\"'}", "99")
    assert len(attempts) == 2 and (node.phase, node.message) == (Phase.ERROR, "No more retries left")
    # without an expression the default is OnFailure, which does not retry an Error
    node, attempts = _run(_fresh(tmp_path), "{limit: 1}", "99")
    assert len(attempts) == 1 and node.phase is Phase.ERROR and node.message.startswith("Error (exit code 1): open")


def _fresh(tmp_path: Path) -> Path:
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    return fresh


def test_backoff_waits_duration_times_factor_to_the_power_of_retries(tmp_path: Path) -> None:
    _node, attempts = _run(tmp_path, "{limit: 2, backoff: {duration: 300ms, factor: 2}}", "1")
    gaps = [later - earlier for (_, earlier), (_, later) in itertools.pairwise(attempts)]
    assert len(gaps) == 2
    assert 0.3 <= gaps[0] < 5 and 0.6 <= gaps[1] < 5


def test_backoff_that_would_pass_max_duration_stops(tmp_path: Path) -> None:
    node, attempts = _run(tmp_path, "{limit: 5, backoff: {duration: 10s, maxDuration: 2s}}", "1")
    assert len(attempts) == 1 and node.message == "Backoff would exceed max duration limit"


@pytest.mark.parametrize(
    ("expression", "scope", "holds"),
    [
        ('lastRetry.exitCode != "2"', {"lastRetry.exitCode": "1"}, True),
        ('lastRetry.exitCode != "2"', {"lastRetry.exitCode": "2"}, False),
        ("asInt(lastRetry.exitCode) >= 2 and asInt(lastRetry.exitCode) < 4", {"lastRetry.exitCode": "3"}, True),
        ('lastRetry.status == "Error" || retries == "0"', {"lastRetry.status": "Failed", "retries": "0"}, True),
        ("not (lastRetry.message contains 'quota')", {"lastRetry.message": "exceeded quota"}, False),
        ("lastRetry.message matches '^Error .exit code [0-9]+.$'", {"lastRetry.message": "Error (exit code 1)"}, True),
        ('asFloat(lastRetry.duration) > 1.5', {"lastRetry.duration": "2.25"}, True),
    ],
)
def test_expressions_evaluate_like_expr_on_string_variables(expression: str, scope: dict[str, str],
                                                            holds: bool) -> None:
    full = {"retries": "0", "lastRetry.exitCode": "-1", "lastRetry.status": "Failed", "lastRetry.duration": "0",
            "lastRetry.message": "", **scope}
    assert RetryExpression(expression, "t").holds(full) is holds


def test_an_expression_argo_would_get_silently_wrong_is_refused_when_the_workflow_loads(tmp_path: Path) -> None:
    path = tmp_path / "flaky.yaml"
    text = textwrap.dedent(FLAKY).replace("RETRY", "{limit: 2, expression: 'lastRetry.exitCode != 2'}")
    path.write_text(text)
    with pytest.raises(ExecutorError, match=r'compares a str with a int.*lastRetry.exitCode != "2"'):
        load_files([path])
    with pytest.raises(UnsupportedFeature, match=r"lastRetry\.exitcode"):
        RetryExpression('lastRetry.exitcode == "2"', "t")
    with pytest.raises(ExecutorError, match="not true or false"):
        RetryExpression("asInt(lastRetry.exitCode)", "t")

"""`rollguard next-weight`: the weight schedule the canary-release recursion walks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rollguard.steps.options import UsageError
from rollguard.steps.schedule import check_guard_duration, next_weight, parse_schedule


def rollguard(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rollguard.steps.cli", *args], capture_output=True, text=True, check=False, env=env
    )


def test_first_weight_and_the_rest() -> None:
    step = next_weight("10,50,100")
    assert (step.weight, step.rest, step.rest_text) == (10, (50, 100), "50,100")
    last = next_weight(" 100 ")
    assert (last.weight, last.rest_text) == (100, "")


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("", "separated by commas"),
        ("10,,50", "separated by commas"),
        ("10,fifty", "'fifty' is not a whole number"),
        ("0,50", "outside 1..100"),
        ("10,150", "outside 1..100"),
        ("50,10", "must increase"),
        ("10,10", "must increase"),
    ],
)
def test_bad_schedules_are_refused_with_the_fix(schedule: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_schedule(schedule)


@given(st.lists(st.integers(1, 100), min_size=1, unique=True).map(sorted))
def test_walking_the_schedule_visits_every_weight_once(weights: list[int]) -> None:
    text, seen = ",".join(map(str, weights)), []
    for _ in range(len(weights) + 1):  # bounded: one round per weight
        step = next_weight(text)
        seen.append(step.weight)
        if not step.rest:
            break
        text = step.rest_text
    assert seen == weights


def test_command_writes_the_files_argo_reads(tmp_path: Path) -> None:
    weight, rest = tmp_path / "out" / "weight", tmp_path / "rest"
    done = rollguard("next-weight", "--schedule", "10,50,100", "--weight-file", str(weight), "--rest-file", str(rest))
    assert done.returncode == 0, done.stderr
    assert (weight.read_text(), rest.read_text(), done.stdout) == ("10", "50,100", "10\n")
    assert "next canary weight 10 %, then 50,100" in done.stderr
    done = rollguard("next-weight", "--schedule", "100", "--weight-file", str(weight), "--rest-file", str(rest))
    assert (weight.read_text(), rest.read_text()) == ("100", "")


def test_schedule_from_the_environment_and_usage_errors(tmp_path: Path) -> None:
    env = {**os.environ, "ROLLGUARD_SCHEDULE": "5,25", "ROLLGUARD_WEIGHT_FILE": ""}
    assert rollguard("next-weight", env=env).stdout == "5\n"
    bad = rollguard("next-weight", "--schedule", "50,20", "--weight-file", str(tmp_path / "w"))
    assert bad.returncode == 2
    assert "--schedule '50,20': 20 after 50" in bad.stderr
    assert not (tmp_path / "w").exists()


def test_the_guard_duration_is_checked_where_the_release_starts(tmp_path: Path) -> None:
    assert check_guard_duration("") is None and check_guard_duration(" 10m ") == 600.0
    for open_ended in ("0", "forever", "0s"):
        with pytest.raises(UsageError, match="must end"):
            check_guard_duration(open_ended)
    with pytest.raises(UsageError, match="--guard-duration: 'ten minutes' is not a duration"):
        check_guard_duration("ten minutes")
    weight = tmp_path / "w"
    bad = rollguard("next-weight", "--schedule", "100", "--guard-duration", "forever", "--weight-file", str(weight))
    assert bad.returncode == 2 and "a Workflow of your own with rollguard-steps' analyze" in bad.stderr
    assert not weight.exists()
    done = rollguard("next-weight", "--schedule", "100", "--guard-duration", "90s")
    assert done.returncode == 0 and "then a 90s guard on the absolute limits" in done.stderr

"""The shared CLI plumbing: durations, ROLLGUARD_<NAME> environment defaults, the top-level command."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from rollguard.steps import cli, options
from rollguard.steps.exit_codes import ExitCode


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("1s", 1.0), ("5s", 5.0), ("2m", 120.0), ("1h", 3600.0), ("1.5s", 1.5), ("3", 3.0)],
)
def test_durations_parse(text: str, seconds: float) -> None:
    assert options.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5 minutes", "1d", "-1s", "s", "1.2.3s"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        options.parse_duration(text)


def test_zero_interval_is_a_usage_error() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="greater than zero"):
        options.positive_duration("0s")


@pytest.mark.parametrize("seconds", [0.5, 1, 5, 90, 120, 3600])
def test_format_duration_round_trips(seconds: float) -> None:
    assert options.parse_duration(options.format_duration(seconds)) == pytest.approx(seconds)


def test_flag_default_comes_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROLLGUARD_MAX_ERROR_RATE", "0.05")
    parser = argparse.ArgumentParser()
    options.add_flag(parser, "--max-error-rate", default=0.01, type=options.fraction)
    assert parser.parse_args([]).max_error_rate == 0.05
    assert parser.parse_args(["--max-error-rate", "0.2"]).max_error_rate == 0.2


def test_bad_environment_value_names_variable_and_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROLLGUARD_MAX_ERROR_RATE", "1.5")
    parser = argparse.ArgumentParser()
    with pytest.raises(options.UsageError, match=r"ROLLGUARD_MAX_ERROR_RATE \(flag --max-error-rate\)"):
        options.add_flag(parser, "--max-error-rate", default=0.01, type=options.fraction)


def test_switch_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROLLGUARD_DRY_RUN", "true")
    parser = argparse.ArgumentParser()
    options.add_switch(parser, "--dry-run", help="change nothing")
    assert parser.parse_args([]).dry_run is True


def test_unknown_command_is_usage_error() -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["frobnicate"])
    assert exited.value.code == ExitCode.USAGE


def test_console_script_lists_commands() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "rollguard.steps.cli", "--help"], capture_output=True, text=True, check=True
    )
    for name in cli.COMMANDS:
        assert name in completed.stdout

"""`rollguard analyze` refuses bad input before any query: a message naming the flag or line, exit 2,
and no verdict file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rollguard.steps import cli
from rollguard.steps.exit_codes import ExitCode

TARGET = ["--namespace", "demo", "--service", "podinfo", "--stable-version", "v1", "--canary-version", "v2",
          "--prometheus-url", "http://127.0.0.1:9"]


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = cli.main(["analyze", *args])
    except SystemExit as exit_:  # argparse's own errors
        code = int(exit_.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--judge", "vibes"], "--judge: invalid choice: 'vibes'"),
        (["--on-error", "panic"], "--on-error: invalid choice"),
        (["--max-error-rate", "1.5"], "--max-error-rate: '1.5' is outside 0..1"),
        (["--max-p99-latency-ms", "-5"], "--max-p99-latency-ms: '-5' must be zero or more"),
        (["--max-p99-latency-ms", "0"], "--max-p99-latency-ms 0 must be a positive number"),
        (["--interval", "0s"], "--interval: '0s' must be greater than zero"),
        (["--interval", "5 minutes"], "--interval: '5 minutes' is not a duration"),
        (["--prometheus-url", "ftp://prometheus:9090"], "--prometheus-url 'ftp://prometheus:9090' must be an http"),
        (["--prometheus-url", "prometheus.monitoring:9090"], "--prometheus-url"),
        (["--prometheus-url", "http://prom:99999"], "--prometheus-url 'http://prom:99999': port '99999' is not a"),
        (["--prometheus-url", "http://prom:9o90"], "port '9o90' is not a number from 1 to 65535"),
        (["--prometheus-url", "http://[::1:9090"], "'[::1:9090' is not an IPv6 address in brackets"),
        (["--prometheus-url", "http://fd00::1:9090"], "an IPv6 address goes in brackets"),
        (["--confidence", "1"], "--confidence 1.0 must be strictly between 0 and 1"),
        (["--stable-version", "v2"], "must differ"),
        (["--failure-limit", "0"], "--failure-limit: '0' must be at least 1"),
        (["--verdict-file", "/nonexistent/dir/verdict.json"], "--verdict-file /nonexistent/dir/verdict.json"),
        (["--duration", "1h", "--interval", "10ms"], "use a longer --interval"),
        (["--grpc-error-codes", "UNAVAILABLE,TIMEOUT"],
         "--grpc-error-codes: 'TIMEOUT' is not a gRPC status; valid names and numbers: CANCELLED (1), UNKNOWN (2)"),
        (["--grpc-error-codes", "14,99"], "'99' is not a gRPC status; valid names and numbers: CANCELLED (1)"),
        (["--grpc-error-codes", "0"], "OK (0) is success and cannot count as an error"),
    ],
)
def test_bad_flags_are_refused(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    verdict = tmp_path / "verdict.json"
    args = [*TARGET, "--verdict-file", str(verdict), *extra]
    code, err = run_cli(args, capsys)
    assert code == ExitCode.USAGE
    assert message in err
    assert not verdict.exists()


def test_missing_required_flag_names_it(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(["--namespace", "demo"], capsys)
    assert code == ExitCode.USAGE
    assert "--service" in err


def test_bad_environment_value_names_variable_and_flag(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ROLLGUARD_MAX_ERROR_RATE", "2")
    verdict = tmp_path / "verdict.json"
    code, err = run_cli([*TARGET, "--verdict-file", str(verdict)], capsys)
    assert code == ExitCode.USAGE
    assert "ROLLGUARD_MAX_ERROR_RATE (flag --max-error-rate)" in err
    assert not verdict.exists()


def test_metrics_file_syntax_error_names_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    metrics = tmp_path / "metrics.yaml"
    metrics.write_text("- name: queue\n  query: up\n  max: [1\n")
    verdict = tmp_path / "verdict.json"
    code, err = run_cli([*TARGET, "--verdict-file", str(verdict), "--metrics-file", str(metrics)], capsys)
    assert code == ExitCode.USAGE
    assert f"--metrics-file {metrics} line" in err and "YAML syntax error" in err
    assert not verdict.exists()


def test_metrics_file_unknown_variable_is_refused_at_start_up(tmp_path: Path) -> None:
    """Through the real console script: the port below has nothing listening, and no query is ever made."""
    metrics = tmp_path / "metrics.yaml"
    metrics.write_text('- name: queue\n  query: max(queue{team="{{ team }}"})\n  max: 10\n')
    verdict = tmp_path / "verdict.json"
    completed = subprocess.run(
        [str(Path(sys.executable).parent / "rollguard"), "analyze", *TARGET, "--verdict-file", str(verdict),
         "--metrics-file", str(metrics)],
        capture_output=True, text=True, timeout=30,
    )
    assert completed.returncode == ExitCode.USAGE
    assert "line 1 (metric queue): unknown variable {{ team }}" in completed.stderr
    assert "Prometheus" not in completed.stderr
    assert not verdict.exists()


def test_help_documents_exit_codes_and_policies(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["analyze", "--help"])
    code = int(exit_.value.code or 0)
    out = " ".join(capsys.readouterr().out.split())
    assert code == 0
    assert "0 pass, 1 fail, 3 inconclusive, 2 bad usage" in out
    assert "ROLLGUARD_MAX_ERROR_RATE" in out


def test_sigterm_writes_an_inconclusive_verdict(tmp_path: Path) -> None:
    """Argo stops a step with SIGTERM: the verdict file still says what happened (exit 130)."""
    import signal

    from rollguard.sandbox.ports import free_port

    verdict = tmp_path / "verdict.json"
    word = tmp_path / "verdict.word"
    args = [*TARGET[:-1], f"http://127.0.0.1:{free_port()}", "--interval", "500ms", "--duration", "2m",
            "--query-attempts", "1", "--max-consecutive-errors", "1000", "--verdict-file", str(verdict),
            "--verdict-word-file", str(word)]
    process = subprocess.Popen([str(Path(sys.executable).parent / "rollguard"), "analyze", *args],
                               stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if " check 2/" in line:
                process.send_signal(signal.SIGTERM)
                break
        code = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert code == ExitCode.INTERRUPTED
    document = json.loads(verdict.read_text())
    assert document["verdict"] == "inconclusive" and "interrupted" in document["reason"]
    assert word.read_text() == "inconclusive"
    assert all(check["outcome"] == "error" for check in document["checks"])


@pytest.mark.parametrize("flag", ["--namespace", "--service", "--stable-version", "--canary-version"])
def test_a_label_flag_that_is_not_utf8_is_a_usage_error(flag: str, tmp_path: Path) -> None:
    """Bytes that are not UTF-8 (a mis-encoded shell or parameter) are named, not reported as Prometheus
    being unreachable; the same through the ROLLGUARD_* variable."""
    import os

    values = {"--namespace": b"demo", "--service": b"podinfo", "--stable-version": b"v1", "--canary-version": b"v2"}
    values[flag] = b"pod\xffinfo"
    verdict = tmp_path / "verdict.json"
    argv = [os.fsencode(Path(sys.executable).parent / "rollguard"), b"analyze", b"--prometheus-url",
            b"http://127.0.0.1:9", b"--verdict-file", os.fsencode(verdict)]
    for name, value in values.items():
        argv += [name.encode(), value]
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert completed.returncode == ExitCode.USAGE, completed.stderr
    assert f"{flag} 'pod\\udcffinfo' holds bytes that are not UTF-8" in completed.stderr
    assert "Prometheus" not in completed.stderr and not verdict.exists()
    env = {**os.environb, b"ROLLGUARD_" + flag[2:].upper().replace("-", "_").encode(): b"pod\xffinfo"}
    by_env = subprocess.run([arg for arg in argv if arg not in (flag.encode(), b"pod\xffinfo")], env=env,
                            capture_output=True, text=True, timeout=30)
    assert by_env.returncode == ExitCode.USAGE, by_env.stderr
    assert "holds bytes that are not UTF-8" in by_env.stderr


def test_a_metrics_variable_that_is_not_utf8_text_names_its_line(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    metrics = tmp_path / "metrics.yaml"
    metrics.write_text('- name: queue\n  query: max(queue{team="{{ team }}"})\n  max: 10\n  vars: {team: "a\\udcff"}\n')
    verdict = tmp_path / "verdict.json"
    code, err = run_cli([*TARGET, "--verdict-file", str(verdict), "--metrics-file", str(metrics)], capsys)
    assert code == ExitCode.USAGE
    assert f"--metrics-file {metrics} line 1 (metric queue): the query holds characters that are not UTF-8" in err
    assert not verdict.exists()


def _limit_memory() -> None:
    """The child may use 1 GiB of address space: an unbounded read fails fast instead of filling the machine."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


@pytest.mark.parametrize(("contents", "message"), [
    (None, "the metrics file is larger than 1024 KiB"),
    (b"- name: q\n  query: up\n  max: 1\n  vars: {a: \"\xff\"}\n", "the metrics file is not UTF-8 text (byte 45)"),
])
def test_a_metrics_file_is_read_bounded_and_as_utf8(contents: bytes | None, message: str, tmp_path: Path) -> None:
    metrics = Path("/dev/zero")
    if contents is not None:
        metrics = tmp_path / "metrics.yaml"
        metrics.write_bytes(contents)
    verdict = tmp_path / "verdict.json"
    completed = subprocess.run(
        [str(Path(sys.executable).parent / "rollguard"), "analyze", *TARGET, "--verdict-file", str(verdict),
         "--metrics-file", str(metrics)],
        capture_output=True, text=True, timeout=60, preexec_fn=_limit_memory,
    )
    assert completed.returncode == ExitCode.USAGE, completed.stderr
    assert f"--metrics-file {metrics}: {message}" in completed.stderr
    assert not verdict.exists()


def test_an_output_file_that_is_a_directory_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli([*TARGET, "--verdict-file", str(tmp_path)], capsys)
    assert code == ExitCode.USAGE
    assert f"--verdict-file {tmp_path} is a directory" in err


def test_a_verdict_that_cannot_be_written_is_still_logged_and_exits_with_its_code(tmp_path: Path) -> None:
    """The output directory vanishes mid-analysis (an emptyDir gone, a full disk): the decision is not lost."""
    import shutil

    from rollguard.sandbox.ports import free_port

    out = tmp_path / "out"
    out.mkdir()
    args = [*TARGET[:-1], f"http://127.0.0.1:{free_port()}", "--interval", "500ms", "--duration", "1m",
            "--query-attempts", "1", "--max-consecutive-errors", "8", "--on-error", "fail",
            "--verdict-file", str(out / "verdict.json"), "--verdict-word-file", str(out / "word"),
            "--verdict-summary-file", str(out / "summary.json")]
    process = subprocess.Popen([str(Path(sys.executable).parent / "rollguard"), "analyze", *args],
                               stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if " check 1/" in line:
                shutil.rmtree(out)  # 8 more checks, 4 s, before the verdict is written
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    log = "".join(lines)
    assert code == ExitCode.FAIL, log
    assert "VERDICT FAIL: 9 checks in a row could not be judged (budget 8)" in log
    assert log.count("could not write") == 3 and "the verdict stays FAIL (the exit code says so)" in log
    assert not out.exists()

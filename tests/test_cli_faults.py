"""How every command ends on faults: an unforeseen error is exit 4 (never 1, the fail verdict), SIGTERM is
exit 130, and an output file that could not be written is refused before anything is pushed."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from git_remote import MANIFEST_PATH, make_remote, remote_log

from rollguard.steps import cli
from rollguard.steps.exit_codes import ExitCode

TESTS = Path(__file__).parent
MANIFEST = (TESTS.parent / "sandbox" / "assets" / "k8s" / "istio.yml").read_text()


def test_unforeseen_error_exits_4_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(cli.COMMANDS, "crash", ("cli_test_commands", "test only"))
    monkeypatch.delenv("ROLLGUARD_TRACEBACK", raising=False)
    assert cli.main(["crash", "--crash"]) == ExitCode.ERROR
    error = capsys.readouterr().err
    assert "unexpected error: RuntimeError: something nobody foresaw" in error
    assert "Traceback" not in error


def test_sigterm_ends_a_command_like_ctrl_c() -> None:
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from rollguard.steps import cli\n"
        "cli.COMMANDS['nap'] = ('cli_test_commands', 'test only')\n"
        "sys.exit(cli.main(['nap']))\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code, str(TESTS)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "napping"
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == ExitCode.INTERRUPTED, stderr
    assert "interrupted" in stderr


def test_rollback_refuses_an_unwritable_result_file_before_pushing(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    remote = make_remote(tmp_path / "remote", {MANIFEST_PATH: MANIFEST})
    before = remote_log(remote)
    code = cli.main(["rollback", "--repo", str(remote), "--path", MANIFEST_PATH, "--virtual-service", "podinfo",
                     "--result-file", str(tmp_path / "missing" / "result.json")])
    assert code == ExitCode.USAGE
    assert "--result-file" in capsys.readouterr().err
    assert remote_log(remote) == before, "a commit was pushed although its result could not be written"

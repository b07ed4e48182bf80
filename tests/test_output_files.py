"""The one writer of output files: whole or not at all, with the permissions a plain write would give."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from rollguard.steps.output_files import write_atomically


def test_a_new_file_gets_the_umask_permissions_not_a_temporary_files(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        write_atomically(tmp_path / "verdict.json", "{}\n")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "verdict.json").stat().st_mode) == 0o644
    assert (tmp_path / "verdict.json").read_text(encoding="utf-8") == "{}\n"


def test_an_existing_file_keeps_its_permissions_and_gets_the_new_text(tmp_path: Path) -> None:
    target = tmp_path / "report.md"
    target.write_text("old")
    target.chmod(0o600)
    write_atomically(target, "fault → cut\n")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_text(encoding="utf-8") == "fault → cut\n"


def test_a_failed_write_leaves_no_file_and_no_temporary(tmp_path: Path) -> None:
    with pytest.raises(UnicodeEncodeError):
        write_atomically(tmp_path / "out.txt", "half \udcff")  # a lone surrogate cannot be encoded
    assert list(tmp_path.iterdir()) == []

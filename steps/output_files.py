"""Output files (verdicts, results, reports, plots, rendered templates) are written whole or not at all."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path


def write_atomically(path: Path, content: str | bytes) -> None:
    """Write `content` (UTF-8 text, or bytes such as a PNG) to `path` through a temporary file in the same
    directory and a rename, so a reader (Argo collecting outputs, a person, the next run) never sees half a
    file; the directory must exist.

    The file gets the permissions a plain write would give it (an existing file's, else 0666 minus the
    umask), not the private 0600 of a temporary file.
    """
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        if isinstance(content, bytes):
            with os.fdopen(handle, "wb") as binary:
                binary.write(content)
        else:
            with os.fdopen(handle, "w", encoding="utf-8") as text:
                text.write(content)
        os.chmod(temporary, _mode_for(path))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _mode_for(path: Path) -> int:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        umask = os.umask(0o022)  # reading the umask means setting it; put it straight back
        os.umask(umask)
        return 0o666 & ~umask

"""Process exit codes of every rollguard command, documented in the README.

A step's exit code is what Argo sees first, so each outcome has its own number.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit code of a rollguard command."""

    OK = 0  # analyze: verdict pass; other commands: done (including "nothing to do")
    FAIL = 1  # analyze: verdict fail
    USAGE = 2  # bad flags, bad input files: nothing was changed, no verdict written
    INCONCLUSIVE = 3  # analyze: verdict inconclusive
    ERROR = 4  # a fault at run time (push refused, API unreachable); state is logged
    INTERRUPTED = 130  # Ctrl-C / SIGTERM (every command); whatever was started has been stopped

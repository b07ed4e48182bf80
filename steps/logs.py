"""Logging set-up: one event a line, readable in the Argo UI, with a UTC timestamp and the step name."""

from __future__ import annotations

import logging
import sys
import time


class _UtcFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"


def configure(step: str, *, verbose: bool = False) -> None:
    """Send log lines `2026-11-26T08:00:00.123Z analyze INFO text` to stderr, once per process."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_UtcFormatter(f"%(asctime)s {step} %(levelname)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # Libraries talk too much at INFO for an on-call reader.
    for noisy in ("urllib3", "kubernetes", "git", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

"""Write the verdict: the full document, and when asked the single word and the bounded summary, each file
whole or not at all. The verdict is logged first, so a file that cannot be written loses no decision."""

from __future__ import annotations

import logging
from pathlib import Path

from rollguard.steps.analyze.check_log import log_verdict
from rollguard.steps.analyze.settings import VerdictFiles
from rollguard.steps.output_files import write_atomically
from rollguard.steps.verdict_document import VerdictDocument

log = logging.getLogger("rollguard.analyze")


def write_verdict(files: VerdictFiles, document: VerdictDocument) -> None:
    """Log the verdict, then write its files; a file that cannot be written is logged as an error, and the
    exit code still tells the verdict."""
    log_verdict(document, str(files.verdict))
    outputs = [(files.verdict, document.render())]
    if files.word is not None:
        outputs.append((files.word, document.verdict.value))
    if files.summary is not None:
        outputs.append((files.summary, document.summary().render()))
    for path, text in outputs:
        _write(path, text, document)


def _write(path: Path, text: str, document: VerdictDocument) -> None:
    try:
        write_atomically(path, text)
    except OSError as exc:
        log.error("could not write %s: %s; the verdict stays %s (the exit code says so)", path,
                  exc.strerror or exc, document.verdict.value.upper())

"""Write the verdict: the full document, and when asked the single word and the bounded summary, each file
whole or not at all."""

from __future__ import annotations

from rollguard.steps.analyze.check_log import log_verdict
from rollguard.steps.analyze.settings import VerdictFiles
from rollguard.steps.output_files import write_atomically
from rollguard.steps.verdict_document import VerdictDocument


def write_verdict(files: VerdictFiles, document: VerdictDocument) -> None:
    """Write the verdict files for `document`, then log the verdict line."""
    write_atomically(files.verdict, document.render())
    if files.word is not None:
        write_atomically(files.word, document.verdict.value)
    if files.summary is not None:
        write_atomically(files.summary, document.summary().render())
    log_verdict(document, str(files.verdict))

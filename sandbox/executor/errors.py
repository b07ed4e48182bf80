"""Errors of the local workflow executor; each message names the template and the field at fault."""

from __future__ import annotations


class ExecutorError(Exception):
    """The workflow cannot be run locally as written (bad YAML, missing parameter, unknown template)."""


class UnsupportedFeature(ExecutorError):
    """The workflow uses an Argo feature the local executor does not implement; never skipped silently."""

    def __init__(self, feature: str, where: str, hint: str = "") -> None:
        self.feature = feature
        self.where = where
        message = f"{where}: the Argo feature `{feature}` is not supported by the local executor"
        super().__init__(message + (f"; {hint}" if hint else ""))


class SubmissionRefused(ExecutorError):
    """Argo would refuse this workflow at submission; the message after the colon is Argo's own."""

    def __init__(self, argo_message: str) -> None:
        self.argo_message = argo_message
        super().__init__(f"Argo refuses this workflow at submission (nothing ran): {argo_message}")


class ExpressionError(ExecutorError):
    """A `{{...}}` reference or a `when` condition cannot be resolved or parsed."""


class ExecutorAborted(Exception):
    """The run was aborted from outside (abort()); no further step or exit handler runs."""

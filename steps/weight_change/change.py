"""What a step asks for (a canary weight, decided from the split Git holds) and the change it makes to the file."""

from __future__ import annotations

from dataclasses import dataclass

from rollguard.steps.traffic.weight_edit import SplitEdit


@dataclass(frozen=True)
class WeightPlan:
    """What a step wants: a canary weight, given the split Git holds now."""

    canary_weight: int
    already: str  # log line when Git already says this ("already all on stable")


@dataclass(frozen=True)
class WeightChange:
    """The edit made to the file on one head, the plan it carries out, and the commit message saying why."""

    edit: SplitEdit
    plan: WeightPlan
    message: str
    layout: str = "manifest"  # where the weights are kept (traffic.layouts)
    overlay: str | None = None  # the Kustomize overlay that renders the file, if any

    @property
    def text(self) -> str:
        """The file's new text."""
        return self.edit.text

    @property
    def changed(self) -> bool:
        """True if the file's text differs (there is something to commit)."""
        return self.edit.changed

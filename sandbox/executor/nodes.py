"""What a local workflow run produces: node phases and results, the workflow's result, and progress events."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum


class Phase(str, Enum):
    """Outcome of a node, named as Argo names them."""

    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ERROR = "Error"
    SKIPPED = "Skipped"


@dataclass
class NodeResult:
    """One executed (or skipped) template invocation."""

    display_name: str
    template: str
    phase: Phase
    exit_code: int | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    message: str = ""
    started_at: float = 0.0  # the node's creation (a container step's pod created; Argo's node startedAt)
    finished_at: float = 0.0
    running_at: float = 0.0  # a container step: when its main container started (0: it never ran)
    node_id: str = ""  # Argo's node id (workflow name + FNV-32a of the node name)
    log_tail: list[str] = field(default_factory=list)  # the container's last log lines (FallbackToLogsOnError)


@dataclass
class WorkflowResult:
    """The run's phase, every node in the order it finished, and the exit handler's node (if any)."""

    name: str
    phase: Phase
    nodes: list[NodeResult]
    exit_handler: NodeResult | None
    message: str

    def node(self, display_name: str) -> NodeResult:
        """The node with this display name (KeyError when it did not run)."""
        for node in self.nodes:
            if node.display_name == display_name:
                return node
        raise KeyError(display_name)


class EventKind(str, Enum):
    """What happened: a step's pod is starting, it started, printed a line, finished, or was skipped; or a note."""

    PENDING = "pending"  # a container step's pod is created but its container has not started (--pod-start-delay)
    STARTED = "started"
    LOG = "log"
    FINISHED = "finished"
    SKIPPED = "skipped"
    NOTE = "note"


@dataclass(frozen=True)
class Event:
    """A progress event; `node` is set for FINISHED and SKIPPED."""

    kind: EventKind
    step: str
    text: str
    node: NodeResult | None = None


EventSink = Callable[[Event], None]


def print_events(event: Event) -> None:
    """Default sink: one prefixed line per event on stdout, so a step's log streams as it runs."""
    if event.kind is EventKind.LOG:
        line = f"[{event.step}] {event.text}"
    elif event.kind is EventKind.NOTE:
        line = f"-- {event.text}"
    elif event.kind is EventKind.PENDING:
        line = f"== {event.step}: Pending ({event.text})"
    else:
        line = f"== {event.step}: {event.text}"
    print(line, flush=True)


def failures_json(nodes: Sequence[NodeResult], workflow_name: str) -> str:
    """`{{workflow.failures}}`: JSON of every Failed or Error node, `null` when none (operator.go operate()).

    Locally the list holds the steps that ran (not Argo's step-group nodes); podName follows Argo's
    v2 pod names, `<workflow>-<template>-<FNV-32a of the node name>`, from the node id's hash.
    """
    failed = [node for node in nodes if node.phase in (Phase.FAILED, Phase.ERROR)]
    if not failed:
        return "null"  # json.Marshal of Go's nil slice
    return json.dumps([{
        "displayName": node.display_name.rsplit(".", 1)[-1],
        "message": node.message,
        "templateName": node.template,
        "phase": node.phase.value,
        "podName": f"{workflow_name}-{node.template}-{node.node_id.rsplit('-', 1)[-1]}",
        "finishedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(node.finished_at or time.time())),
    } for node in failed], separators=(",", ":"))


def node_id(workflow_name: str, node_name: str) -> str:
    """Argo's node id (pkg/apis/workflow/v1alpha1/workflow_types.go, `Workflow.NodeID`)."""
    if node_name == workflow_name:
        return workflow_name
    digest = 0x811C9DC5  # FNV-1a, 32 bits, as Go's hash/fnv New32a
    for byte in node_name.encode():
        digest = ((digest ^ byte) * 0x01000193) & 0xFFFFFFFF
    return f"{workflow_name}-{digest}"

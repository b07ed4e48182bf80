"""What `rollguard demo` shows in the terminal: the workflow's progress, the router's weight changes, the summary."""

from __future__ import annotations

import threading
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from rollguard.sandbox.environment import Sandbox
from rollguard.sandbox.executor.nodes import Event, EventKind, Phase
from rollguard.sandbox.processes import SandboxError
from rollguard.sandbox.results import RunResult
from rollguard.steps.options import format_duration


class Progress:
    """Prints the executor's events and the router's weight changes as they happen."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._lock = threading.Lock()

    def event(self, event: Event) -> None:
        """Executor event sink."""
        with self._lock:
            if event.kind is EventKind.PENDING:
                self.console.print(f"[dim]… {event.step}: {event.text}[/]")
            elif event.kind is EventKind.STARTED:
                self.console.print(f"[bold cyan]▶ {event.step}[/] [dim]{_short_command(event.text)}[/]")
            elif event.kind is EventKind.LOG:
                line = Text.assemble(("  " + event.step.rsplit(".", 1)[-1] + ": ", "dim"), _strip_stamp(event.text))
                self.console.print(line, soft_wrap=True)
            elif event.kind is EventKind.FINISHED:
                style = "green" if event.node and event.node.phase is Phase.SUCCEEDED else "red"
                self.console.print(Text(f"■ {event.step}: {event.text}", style=style), soft_wrap=True)
            elif event.kind is EventKind.SKIPPED:
                self.console.print(f"[dim]· {event.step} skipped[/]")

    def say(self, text: str) -> None:
        """A line of the demo's own narration."""
        with self._lock:
            self.console.print(text, highlight=False)


def _short_command(text: str) -> str:
    parts = text.split()
    return " ".join(parts[:2]) if parts and parts[0] == "rollguard" else text[:80]


def _strip_stamp(line: str) -> str:
    # "2026-11-26T08:00:00.123Z analyze INFO text" -> "INFO text" (the step name is already shown)
    parts = line.split(" ", 2)
    if len(parts) == 3 and parts[0].endswith("Z") and "T" in parts[0]:
        return parts[2]
    return line


class WeightWatcher(threading.Thread):
    """Polls the router's admin endpoint and narrates every applied weight change."""

    def __init__(self, sandbox: Sandbox, progress: Progress) -> None:
        super().__init__(name="weight-watcher", daemon=True)
        self.sandbox = sandbox
        self.progress = progress
        self.stopped = threading.Event()
        self.seen = 0

    def run(self) -> None:
        """Narrate new changes every 0.2 s until `stopped` is set (the first, initial split is not a change)."""
        while not self.stopped.wait(0.2):
            try:
                changes = list(self.sandbox.weights()["changes"])
            except SandboxError:
                continue
            for change in changes[self.seen:]:
                if self.seen:
                    self.progress.say(f"[bold magenta]⇄ router: {change['stable']} % stable / {change['canary']} % "
                                      f"canary[/] (commit {str(change['commit'])[:10]})")
            self.seen = len(changes)


def _number(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def print_summary(console: Console, result: RunResult, results_path: Path) -> None:
    """The short summary: outcome, breach -> cut, fault -> cut, failed requests."""
    def seconds(value: float | None) -> str:
        return "—" if value is None else f"{value:.2f} s"

    def relative(value: float | None) -> str:
        base = result.fault_start if result.fault_start is not None else result.release_start
        return "—" if value is None else f"+{value - base:.2f} s"

    protocol = " (gRPC)" if result.settings.get("protocol") == "grpc" else ""
    table = Table(title=f"rollguard demo — scenario {result.scenario}{protocol}", show_header=False)
    outcome_text = {"rolled_back": "[bold red]rolled back[/]", "promoted": "[bold green]promoted to 100 %[/]",
                    "incomplete": "[bold yellow]incomplete[/]"}[result.outcome.value]
    table.add_row("outcome", outcome_text)
    table.add_row("verdict", f"{result.verdict or '—'}" + (
        f" ({result.failed_check.get('metric')} = {_number(result.failed_check.get('value'))}, threshold "
        f"{_number(result.failed_check.get('threshold'))})" if isinstance(result.failed_check, dict) else ""))
    table.add_row("first threshold breach → traffic cut", seconds(result.breach_to_cut_s()))
    table.add_row("fault start → traffic cut", seconds(result.fault_to_cut_s()))
    table.add_row("failed user requests", str(result.failed_requests))
    for label, value in (("first breach", result.first_breach), ("alert firing", result.alert_firing),
                         ("verdict", result.verdict_at), ("git push", result.git_push),
                         ("traffic cut", result.traffic_cut)):
        table.add_row(f"  {label}", relative(value))
    console.print(table)
    if result.alert_firing is None and result.fault_start is not None:
        console.print(f"[dim]The paging alert (for: {format_duration(result.settings['alert_for_s'])}) had not fired "
                      "by the end of the run: a human would not have been paged yet.[/]")
    console.print(f"results: {results_path}")

"""The `rollguard` command: one entry point, one sub-command per step or tool.

Sub-command modules are imported only when chosen, so `rollguard analyze --help` starts fast.
Each module exposes `add_arguments(parser)` and `run(args) -> int` (an ExitCode).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from collections.abc import Sequence

from rollguard.steps.exit_codes import ExitCode
from rollguard.steps.options import UsageError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "analyze": ("rollguard.steps.analyze.command", "judge the canary from Prometheus; write the verdict"),
    "deploy": ("rollguard.steps.deploy", "send N %% of traffic to the canary (Git, then ArgoCD)"),
    "promote": ("rollguard.steps.promote", "move the canary to the next weight; 100 completes the rollout"),
    "rollback": ("rollguard.steps.rollback", "send all traffic back to stable (Git, ArgoCD, live patch)"),
    "status": ("rollguard.steps.status", "print the traffic split that Git holds now"),
    "next-weight": ("rollguard.steps.schedule", "split a weight schedule into the next weight and the rest"),
    "notify": ("rollguard.steps.notify.command", "post a release's outcome to a webhook (JSON, Slack, Teams)"),
    "finish": ("rollguard.steps.finish", "end a release (exit handler): roll back if unfinished, notify, report"),
    "history": ("rollguard.steps.history", "list the deploys, promotions and rollbacks Git holds for a VirtualService"),
    "render": ("rollguard.workflows.render", "render the Hera WorkflowTemplates to YAML"),
    "run-local": ("rollguard.sandbox.run_local", "run a rendered WorkflowTemplate locally, without Argo"),
    "demo": ("rollguard.sandbox.demo", "run a whole canary release in the local sandbox"),
    "sandbox": ("rollguard.sandbox.control", "start or stop the local sandbox for exploration"),
    "experiment": ("rollguard.experiment.command", "measure rollback times (automated vs manual)"),
}


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rollguard",
        description="Automated canary analysis and GitOps rollback for Istio traffic splits.",
        epilog="Run `rollguard COMMAND --help` for a command's flags. Every flag --x-y can also be "
        "set as the environment variable ROLLGUARD_X_Y.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, text) in COMMANDS.items():
        sub.add_parser(name, help=text, add_help=False)
    return parser


def _sigterm_interrupts() -> None:
    """SIGTERM (Argo stopping a step, a pod's deletion) ends a command like Ctrl-C: exit 130, cleanly."""
    if threading.current_thread() is not threading.main_thread():
        return

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, interrupt)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, run the chosen sub-command, and return its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help") or args[0] not in COMMANDS:
        parser = _top_parser()
        if not args or args[0] in ("-h", "--help"):
            parser.print_help()
            return ExitCode.OK if args else ExitCode.USAGE
        parser.error(f"unknown command {args[0]!r}; choose one of: {', '.join(COMMANDS)}")
    name = args[0]
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"rollguard {name}", description=module.__doc__)
    _sigterm_interrupts()
    try:
        module.add_arguments(parser)
        options = parser.parse_args(args[1:])
        return int(module.run(options))
    except UsageError as exc:
        print(f"rollguard {name}: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except KeyboardInterrupt:
        print(f"rollguard {name}: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except Exception as exc:  # a bug or an unforeseen fault: exit 4, never 1 (which means "verdict fail")
        if os.environ.get("ROLLGUARD_TRACEBACK"):
            raise
        print(f"rollguard {name}: unexpected error: {type(exc).__name__}: {exc} "
              "(set ROLLGUARD_TRACEBACK=1 for the traceback)", file=sys.stderr)
        return ExitCode.ERROR


if __name__ == "__main__":
    sys.exit(main())

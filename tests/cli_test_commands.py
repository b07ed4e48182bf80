"""Two throw-away sub-commands for the CLI's own tests: one crashes, one naps until it is stopped."""

from __future__ import annotations

import argparse
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Take `--crash` or nothing."""
    parser.add_argument("--crash", action="store_true")


def run(args: argparse.Namespace) -> int:
    """Crash with a bug-like exception, or nap (bounded) until a signal arrives."""
    if args.crash:
        raise RuntimeError("something nobody foresaw")
    print("napping", flush=True)
    time.sleep(60)
    return 0

"""Start or stop the local sandbox for exploration: `rollguard sandbox up`, then `rollguard sandbox down`.

`up` starts the GitOps remote, the stable and canary apps, the mesh router, Prometheus (with the
paging alert rules), the workflow-metrics endpoint (Argo's controller /metrics, which Prometheus
scrapes: `run-local --metrics-url` sends a run's template metrics there) and, unless --rps 0,
steady load; prints their URLs; and returns, leaving them running. Their process ids are kept in
DIR/state.json, which `down` reads to stop every one of them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from rollguard.sandbox.demo_settings import PROTOCOLS, non_negative_duration
from rollguard.sandbox.environment import CANARY_APP, SandboxSettings, start_sandbox
from rollguard.sandbox.processes import SandboxError, Supervisor, install_signal_handlers, stop_process_group
from rollguard.steps.exit_codes import ExitCode
from rollguard.steps.options import UsageError, add_flag, non_negative_float
from rollguard.steps.output_files import write_atomically

STATE_FILE = "state.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `rollguard sandbox`."""
    parser.add_argument("action", choices=["up", "down"], help="up: start and leave running; down: stop it all")
    add_flag(parser, "--dir", type=Path, default=Path(".rollguard-sandbox"),
             help="directory of the sandbox's data, logs and state file")
    add_flag(parser, "--rps", default=5.0, type=non_negative_float, help="background requests per second (0: none)")
    add_flag(parser, "--sync-delay", default="0s", type=non_negative_duration,
             help="router's delay before applying a pushed split (30s or 3m emulate ArgoCD polling)")
    add_flag(parser, "--router-port", type=int, help="fixed port of the router (default: a free one)")
    add_flag(parser, "--prometheus-port", type=int, help="fixed port of Prometheus (default: a free one)")
    add_flag(parser, "--protocol", default="http", choices=list(PROTOCOLS),
             help="what the background users speak: http, or grpc (the router relays gRPC on router_grpc)")


def up(args: argparse.Namespace) -> int:
    """Start the sandbox, detach from it, print where everything is."""
    state_path = args.dir / STATE_FILE
    if state_path.exists():
        raise UsageError(f"a sandbox is already up ({state_path}); run `rollguard sandbox down --dir {args.dir}` first")
    if args.dir.exists() and any(args.dir.iterdir()):
        raise UsageError(f"--dir {args.dir} is not empty; choose an empty or new directory")
    install_signal_handlers()
    settings = SandboxSettings(workdir=args.dir.resolve() / "data", router_port=args.router_port,
                               prometheus_port=args.prometheus_port, sync_delay_s=args.sync_delay,
                               protocol=args.protocol)
    with Supervisor(args.dir.resolve() / "logs", tie_to_parent=False) as supervisor:
        sandbox = start_sandbox(settings, supervisor)
        if args.rps > 0:
            sandbox.start_load(args.rps, args.dir.resolve() / "responses.csv")
        assert sandbox.prometheus.process is not None
        children = supervisor.detach()
        state: dict[str, Any] = {
            "started_at": time.time(),
            "pids": [child.process.pid for child in children] + [sandbox.prometheus.process.pid],
            "names": [child.name for child in children] + ["prometheus"],
            "urls": sandbox.urls(),
        }
        write_atomically(state_path, json.dumps(state, indent=2) + "\n")
    print("sandbox up:")
    for name, url in state["urls"].items():
        print(f"  {name:13} {url}")
    print(f"  canary fault: curl -X POST {state['urls']['canary_app']}/control -d '{{\"error_rate\": 0.5}}'")
    canary_pid = state["pids"][state["names"].index(CANARY_APP)]
    print(f"  canary down:  kill {canary_pid}  (the router then answers its share 503 UH, as callers' sidecars do)")
    print("  a release by hand: rollguard run-local workflows/canary-release.yaml "
          f"-p repo={state['urls']['git_remote']} -p path=k8s/istio.yml -p virtual-service=podinfo "
          f"-p namespace=demo -p service=podinfo -p stable-version=v1 -p canary-version=v2 "
          f"-p prometheus-url={state['urls']['prometheus']} -p interval=1s -p duration=20s -p window=10s "
          f"-p min-requests=20 --metrics-url {state['urls']['workflow_metrics']}")
    print("  (add -p approval=true to wait for an approval: run-local prints how to resume it)")
    print(f"stop it with: rollguard sandbox down --dir {args.dir}")
    return ExitCode.OK


def down(args: argparse.Namespace) -> int:
    """Stop every process `up` started and remove the sandbox directory."""
    state_path = args.dir / STATE_FILE
    if not state_path.exists():
        print(f"no sandbox is up in {args.dir} (no {STATE_FILE}); nothing to stop", file=sys.stderr)
        return ExitCode.OK
    state = json.loads(state_path.read_text())
    for pid, name in zip(state["pids"], state["names"], strict=True):
        stop_process_group(int(pid))
        print(f"stopped {name} (pid {pid})")
    shutil.rmtree(args.dir, ignore_errors=True)
    return ExitCode.OK


def run(args: argparse.Namespace) -> int:
    """`rollguard sandbox up|down`."""
    try:
        return up(args) if args.action == "up" else down(args)
    except SandboxError as exc:
        print(f"rollguard sandbox: error: {exc}; everything started was stopped", file=sys.stderr)
        return ExitCode.ERROR

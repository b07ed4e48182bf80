"""Run a rendered Argo WorkflowTemplate on this machine, without Argo or Kubernetes.

Each container step runs its command and args as a local process (the image is not used; the
command `rollguard` is this installation's CLI), with the same parameters, outputs, `when`
conditions, retries and exit handler as under Argo, and like a pod with nothing of this machine's
environment: Secrets come from --secret NAME=DIR only. An Argo feature the local executor does not
implement stops the run before anything starts, naming the feature and the template.
WorkflowTemplates referenced with templateRef are loaded from the same directory (and --templates).
With --step-image, each container step runs inside the built step image instead, as its user, with
the step's fresh directory as its /tmp (rollguard.sandbox.step_image_run). --pod-start-delay DURATION
makes each container step wait that long before it starts, as a pod start would on a cluster.

A `suspend` step (the release's approval) waits for a resume: `--approve` answers it at once,
`--approve-after DURATION` after a while; otherwise `rollguard run-local --resume NAME` from another
shell (or SIGUSR1 to this process). `--stop NAME` / `--terminate NAME` (or SIGUSR2 for stop; Ctrl-C
terminates) are `argo stop` / `argo terminate`. NAME is printed when the run starts.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

from rollguard.sandbox.executor.control import ACTIONS, RunControl, default_control_dir, request
from rollguard.sandbox.executor.errors import ExecutorError, UnsupportedFeature
from rollguard.sandbox.executor.loader import Library, load_files
from rollguard.sandbox.executor.local_cluster import LocalCluster, default_lock_dir, parse_object_directories
from rollguard.sandbox.executor.metrics import RemoteMetrics
from rollguard.sandbox.executor.nodes import Phase, WorkflowResult
from rollguard.sandbox.executor.runner import LocalExecutor
from rollguard.sandbox.step_image import StepImageError, open_step_image
from rollguard.sandbox.step_image_run import ImageSteps
from rollguard.steps.exit_codes import ExitCode
from rollguard.steps.options import UsageError, non_negative_duration, parse_duration


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `rollguard run-local`."""
    parser.add_argument("template_file", type=Path, metavar="TEMPLATE.yaml", nargs="?",
                        help="rendered WorkflowTemplate (or Workflow) YAML to run")
    parser.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE",
                        help="workflow parameter, like `argo submit -p`; repeat for several")
    parser.add_argument("--entry", default=None, metavar="NAME",
                        help="which WorkflowTemplate of the file to run when it holds several")
    parser.add_argument("--templates", type=Path, action="append", default=[], metavar="FILE_OR_DIR",
                        help="more YAML files (or directories of them) for templateRef")
    parser.add_argument("--secret", action="append", default=[], metavar="NAME=DIR",
                        help="Secret NAME for the steps (env secretKeyRef, secret volumes): DIR holds one file per "
                             "key; repeat for several. Steps see no other credentials of this machine")
    parser.add_argument("--config-map", action="append", default=[], metavar="NAME=DIR",
                        help="ConfigMap NAME for env configMapKeyRef: DIR holds one file per key")
    parser.add_argument("--artifact-repository", type=Path, default=None, metavar="DIR",
                        help="the artifact repository output artifacts go to (DIR/WORKFLOW/POD/FILE); without it an "
                             "output artifact fails its step with Error, as on an Argo without one")
    parser.add_argument("--lock-dir", type=Path, default=default_lock_dir(), metavar="DIR",
                        help="where synchronization mutexes are held as file locks, shared by every run on this "
                             "machine like one Argo controller's (default: %(default)s)")
    approval = parser.add_argument_group("suspend steps (approvals), stop and terminate")
    approval.add_argument("--approve", action="store_true", help="answer every suspend step (approval) at once")
    approval.add_argument("--approve-after", metavar="DURATION",
                          help="answer every suspend step after DURATION (e.g. 30s); without --approve or this, a "
                               "suspend step waits for --resume NAME or SIGUSR1")
    approval.add_argument("--control-dir", type=Path, default=default_control_dir(), metavar="DIR",
                          help="where a run listens for --resume/--stop/--terminate (default: %(default)s)")
    for action, text in (("resume", "resume the suspended steps of the running local workflow NAME (argo resume)"),
                         ("stop", "stop NAME: running steps stopped, the exit handler runs (argo stop)"),
                         ("terminate", "terminate NAME: everything stopped, no exit handler (argo terminate)")):
        approval.add_argument(f"--{action}", metavar="NAME", help=text)
    parser.add_argument("--metrics-url", metavar="URL",
                        help="send the templates' metrics to this endpoint (`rollguard sandbox up` prints it as "
                             "workflow_metrics; its Prometheus scrapes them)")
    parser.add_argument("--work-dir", type=Path, default=None, metavar="DIR",
                        help="keep each step's fresh working directory (its HOME) under DIR (default: a temporary "
                             "directory, removed after the run)")
    parser.add_argument("--step-image", type=Path, default=None, metavar="ARCHIVE",
                        help="run every container step inside this step image, an OCI archive (./run.sh image; "
                             "needs root)")
    parser.add_argument("--pod-start-delay", type=non_negative_duration, default=0.0, metavar="DURATION",
                        help="wait this long before each container step (each retry, the exit handler's too) starts, "
                             "its node Pending, as a pod start costs on a cluster (e.g. 3s; default 0s)")
    parser.add_argument("--bind", type=Path, action="append", default=[], metavar="PATH",
                        help="with --step-image: a host file or directory the steps see at the same path; repeat")


def parse_parameters(pairs: list[str]) -> dict[str, str]:
    """`["a=1", "b=x=y"]` -> {"a": "1", "b": "x=y"}; UsageError for an item without `=`."""
    values: dict[str, str] = {}
    for pair in pairs:
        name, separator, value = pair.partition("=")
        if not separator or not name.strip():
            raise UsageError(f"-p {pair!r}: write parameters as NAME=VALUE")
        values[name.strip()] = value
    return values


def load_library(template_file: Path, extra: list[Path]) -> tuple[Library, str]:
    """Load `template_file`, its sibling YAML files and `extra`; return the library and the name to run."""
    if not template_file.is_file():
        raise UsageError(f"{template_file}: no such file; give the path of a rendered WorkflowTemplate YAML")
    main_library = load_files([template_file])
    names = list(main_library.definitions)
    if not names:
        raise UsageError(f"{template_file} holds no WorkflowTemplate or Workflow")
    others: list[Path] = []
    for candidate in [template_file.parent, *extra]:
        if candidate.is_dir():
            others.extend(sorted(p for p in candidate.iterdir() if p.suffix in (".yaml", ".yml")))
        elif candidate.is_file():
            others.append(candidate)
        else:
            raise UsageError(f"--templates {candidate}: no such file or directory")
    paths = [template_file.resolve()]
    for path in others:
        if path.resolve() not in paths:
            paths.append(path.resolve())
    library = _load_lenient(paths, template_file.resolve())
    return library, names[0]


def _load_lenient(paths: list[Path], required: Path) -> Library:
    """Load `required`; a sibling YAML that is no workflow is left out, one with unsupported features is an error."""
    library = load_files([required])
    for path in paths[1:]:
        try:
            extra = load_files([path])
        except UnsupportedFeature:
            raise
        except ExecutorError:
            continue
        for name, definition in extra.definitions.items():
            library.definitions.setdefault(name, definition)
        library.ignored_fields.extend(note for note in extra.ignored_fields if note not in library.ignored_fields)
    return library


def exit_code_of(result: WorkflowResult) -> int:
    """0 when the workflow succeeded, 1 when it failed, 4 on an error."""
    if result.phase is Phase.SUCCEEDED:
        return ExitCode.OK
    if result.phase is Phase.FAILED:
        return ExitCode.FAIL
    return ExitCode.ERROR


def _control(args: argparse.Namespace) -> RunControl:
    """The run's resume/stop/terminate control from the flags; UsageError for contradicting ones."""
    if args.approve and args.approve_after:
        raise UsageError("give --approve or --approve-after, not both")
    approve_after_s: float | None = 0.0 if args.approve else None
    if args.approve_after:
        try:
            approve_after_s = parse_duration(args.approve_after)
        except ValueError as exc:
            raise UsageError(f"--approve-after: {exc}") from None
    return RunControl(approve_after_s=approve_after_s, control_dir=args.control_dir)


def _listen_for_signals(control: RunControl) -> None:
    """SIGUSR1 resumes the suspended steps, SIGUSR2 stops the workflow (Ctrl-C still terminates it)."""
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGUSR1, lambda _signum, _frame: control.resume())
    signal.signal(signal.SIGUSR2, lambda _signum, _frame: control.stop())


def _ask_running_workflow(args: argparse.Namespace) -> int | None:
    """`--resume/--stop/--terminate NAME`: leave the request for the running workflow; None when none was asked."""
    asked = [(action, getattr(args, action)) for action in ACTIONS if getattr(args, action)]
    if not asked:
        return None
    if len(asked) > 1 or args.template_file is not None:
        raise UsageError("--resume, --stop and --terminate take a workflow's NAME alone, without a TEMPLATE.yaml")
    action, name = asked[0]
    try:
        request(args.control_dir, name, action)
    except ExecutorError as exc:
        raise UsageError(str(exc)) from None
    print(f"asked local workflow {name} to {action}", flush=True)
    return ExitCode.OK


def run(args: argparse.Namespace) -> int:
    """Load, check and run the workflow; print its outcome."""
    asked = _ask_running_workflow(args)
    if asked is not None:
        return asked
    if args.template_file is None:
        raise UsageError("give the TEMPLATE.yaml to run (or --resume/--stop/--terminate NAME)")
    parameters = parse_parameters(args.parameter)
    control = _control(args)
    if args.metrics_url and urlsplit(args.metrics_url).scheme not in ("http", "https"):
        raise UsageError(f"--metrics-url {args.metrics_url!r} is not an http(s) URL")
    metrics = RemoteMetrics(args.metrics_url) if args.metrics_url else None
    _listen_for_signals(control)
    try:
        if args.artifact_repository is not None and not args.artifact_repository.is_dir():
            raise UsageError(f"--artifact-repository {args.artifact_repository}: no such directory; create it first")
        cluster = LocalCluster(secrets=parse_object_directories(args.secret, "--secret"),
                               config_maps=parse_object_directories(args.config_map, "--config-map"),
                               artifact_repository=args.artifact_repository, lock_dir=args.lock_dir)
        library, first = load_library(args.template_file, args.templates)
        name = args.entry or first
        if args.bind and args.step_image is None:
            raise UsageError("--bind needs --step-image (without it the steps see this machine's files anyway)")
        image = None if args.step_image is None else ImageSteps(open_step_image(args.step_image), binds=args.bind)
        executor = LocalExecutor(library, cluster=cluster, work_dir=args.work_dir, image=image, control=control,
                                 metrics=metrics, pod_start_delay_s=args.pod_start_delay)
        result = executor.run(name, parameters)
    except (ExecutorError, StepImageError) as exc:
        print(f"rollguard run-local: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    exit_handler = f"; exit handler {result.exit_handler.phase.value}" if result.exit_handler else ""
    print(f"workflow {result.name} {result.phase.value}{exit_handler}"
          + (f": {result.message}" if result.message else ""), flush=True)
    return exit_code_of(result)

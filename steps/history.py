"""List the releases Git knows: every deploy, promotion and rollback commit rollguard made to one VirtualService.

Reads the branch's log of --path (a bare, blob-less clone: only commits and trees travel) and the
trailer block of each commit (`Rollguard-Action`, `-Weights`, `-Verdict`, `-Reason`...; see
`rollguard.steps.trailers`). Commits rollguard made before it wrote trailers are read from their
message text. Newest first; --json for tools. Exit 0, 2 on bad flags or a missing branch, 4 when Git
cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from dataclasses import asdict, dataclass

from rollguard.steps import trailers
from rollguard.steps.exit_codes import ExitCode
from rollguard.steps.gitops.git_workspace import GitError, GitWorkspace
from rollguard.steps.logs import configure
from rollguard.steps.options import UsageError, add_flag, add_switch, positive_int
from rollguard.steps.weight_change.flags import add_repository_arguments, credentials_from

log = logging.getLogger("rollguard.steps")

_RECORD, _FIELD = "\x1e", "\x1f"
# What rollguard wrote before the trailers existed: "... v1 90 -> 100 %, v2 10 -> 0 % (VirtualService podinfo, ..."
_LEGACY_MOVE = re.compile(r"(?P<subset>[A-Za-z0-9][\w.-]*) (?P<before>\d{1,3}) -> (?P<after>\d{1,3}) %")
_LEGACY_VERDICT = re.compile(r"^Verdict: (?P<word>[a-z]+)(?:: (?P<reason>.*))?$", re.MULTILINE)


@dataclass
class ReleaseCommit:
    """One rollguard commit, as `rollguard history` shows it."""

    commit: str
    committed_at: str  # ISO 8601 with offset, as git prints %cI
    action: str
    weights: dict[str, int]
    previous_weights: dict[str, int]
    verdict: str = ""
    reason: str = ""
    metric: str = ""
    value: float | None = None
    threshold: float | None = None
    samples: int | None = None
    first_breach_at: str = ""
    workflow: str = ""
    title: str = ""
    trailers: bool = True  # False: read from the text of a commit made before the trailers existed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `rollguard history`."""
    add_repository_arguments(parser)
    shown = parser.add_argument_group("output")
    add_flag(shown, "--limit", default=50, type=positive_int, help="at most this many releases, newest first")
    add_switch(shown, "--json", help="print a JSON list (one object per commit) instead of a table")
    add_switch(shown, "--verbose", help="log debug lines too")


def read_commit(sha: str, committed_at: str, message: str, virtual_service: str) -> ReleaseCommit | None:
    """The release facts of one commit, or None when rollguard did not make it or it is about another VirtualService."""
    title = message.strip().splitlines()[0] if message.strip() else ""
    found = trailers.read_release_trailers(message)
    if found is not None and found.virtual_service:
        if found.virtual_service != virtual_service:
            return None
        evidence = found.evidence
        return ReleaseCommit(
            commit=sha,
            committed_at=committed_at,
            action=found.action,
            weights=dict(found.weights),
            previous_weights=dict(found.previous_weights),
            verdict=evidence.verdict,
            reason=evidence.reason,
            metric=evidence.metric,
            value=evidence.value,
            threshold=evidence.threshold,
            samples=evidence.samples,
            first_breach_at=trailers.utc_text(evidence.first_breach_at),
            workflow=found.workflow,
            title=title,
        )
    action = trailers.parse_trailers(message).get(trailers.ACTION, "")
    if not action or f"(VirtualService {virtual_service}," not in message:
        return None
    return _legacy_commit(sha, committed_at, action, message, title)


def _legacy_commit(sha: str, committed_at: str, action: str, message: str, title: str) -> ReleaseCommit:
    """A commit rollguard made before it wrote trailers: weights and verdict from its text."""
    weights: dict[str, int] = {}
    previous: dict[str, int] = {}
    for move in _LEGACY_MOVE.finditer(message):
        previous[move.group("subset")] = int(move.group("before"))
        weights[move.group("subset")] = int(move.group("after"))
    verdict = _LEGACY_VERDICT.search(message)
    return ReleaseCommit(
        commit=sha,
        committed_at=committed_at,
        action=action,
        weights=weights,
        previous_weights=previous,
        verdict=verdict.group("word") if verdict else "",
        reason=(verdict.group("reason") or "") if verdict else "",
        title=title,
        trailers=False,
    )


def parse_log(output: str, virtual_service: str) -> list[ReleaseCommit]:
    """The rollguard commits in `git log --format=%H%x1f%cI%x1f%B%x1e` output, in log order."""
    found = []
    for record in output.split(_RECORD):
        parts = record.strip("\n").split(_FIELD, 2)
        if len(parts) != 3:
            continue
        sha, committed_at, message = parts
        release = read_commit(sha.strip(), committed_at.strip(), message, virtual_service)
        if release is not None:
            found.append(release)
    return found


def read_history(args: argparse.Namespace) -> list[ReleaseCommit]:
    """Clone (bare, without file contents) and read the log of --path on --branch."""
    credentials = credentials_from(args)
    with GitWorkspace(args.repo, args.branch, credentials, timeout_s=args.git_timeout) as workspace:
        try:
            workspace.run(
                "clone", "--quiet", "--bare", "--filter=blob:none", "--single-branch", "--branch", args.branch,
                "--", workspace.repo, str(workspace.clone_dir),
                cwd=workspace.clone_dir.parent,
            )  # fmt: skip
        except GitError as exc:
            if "not found in upstream" in str(exc) or "Remote branch" in str(exc):
                problem = f"branch {args.branch!r} does not exist in {workspace.safe_url}; check --branch"
                raise UsageError(problem) from None
            raise
        output = workspace.run(
            "log", f"--format=%H{_FIELD}%cI{_FIELD}%B{_RECORD}", f"refs/heads/{args.branch}", "--", args.path,
            cwd=workspace.clone_dir,
        ).stdout
    return parse_log(output, args.virtual_service)[: args.limit]


def _weights(weights: dict[str, int]) -> str:
    return "/".join(str(weight) for weight in weights.values()) or "?"


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def render_table(releases: list[ReleaseCommit], virtual_service: str) -> str:
    """A plain-text table, newest first: time, action, weights, verdict and its evidence, commit, workflow."""
    if not releases:
        return f"no rollguard commits for VirtualService {virtual_service} in this file's history\n"
    subsets = next((list(r.weights) for r in releases if r.weights), [])
    header = f"weights ({'/'.join(subsets)})" if subsets else "weights"
    rows = [("time (UTC)", "action", header, "verdict", "reason", "commit", "workflow")]
    for release in releases:
        evidence = release.reason
        if release.metric:
            evidence = (f"{release.metric} {_number(release.value)} (limit {_number(release.threshold)}"
                        f"{', ' + str(release.samples) + ' requests' if release.samples is not None else ''}): "
                        f"{release.reason}")
        when = trailers.parse_utc(release.committed_at)
        rows.append((
            trailers.utc_text(when) or release.committed_at,
            release.action,
            f"{_weights(release.previous_weights)} -> {_weights(release.weights)}",
            release.verdict or "-",
            trailers.one_line(evidence, 90) or "-",
            release.commit[:10],
            release.workflow or "-",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    """Print the release history of one VirtualService."""
    configure("history", verbose=args.verbose)
    try:
        releases = read_history(args)
    except GitError as exc:
        log.error("%s", exc)
        return ExitCode.ERROR
    if args.json:
        sys.stdout.write(json.dumps([asdict(release) for release in releases], indent=2) + "\n")
    else:
        sys.stdout.write(render_table(releases, args.virtual_service))
    return ExitCode.OK

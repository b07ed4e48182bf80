"""What a release notification says: the outcome, the service, the verdict and its evidence, the commit, the times.

Built from values the workflow has at its end (the verdict summary, the commit, the workflow's name);
every field may be unknown, and the texts say so rather than inventing it.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from enum import Enum

from rollguard.steps.gitops.git_workspace import display_url
from rollguard.steps.trailers import Evidence


class Outcome(str, Enum):
    """How a release ended, as the notification and the metrics name it."""

    ROLLED_BACK = "rolled_back"  # the canary failed (or was inconclusive under the rollback policy): 0 %
    PROMOTED = "promoted"  # the canary passed every step and takes 100 %
    PASSED = "passed"  # canary-analysis: the canary passed at its current weight (nothing moved)
    INCONCLUSIVE = "inconclusive"  # no verdict either way; the split is held as it is (policy stop)
    ABORTED = "aborted"  # stopped by a person (argo stop) or not approved in time; rolled back
    ERROR = "error"  # a step failed (crash, Git or API unreachable, deadline); rolled back if it could be


OUTCOMES = tuple(outcome.value for outcome in Outcome)

_HEADLINES = {
    Outcome.ROLLED_BACK: "Canary rolled back",
    Outcome.PROMOTED: "Canary promoted",
    Outcome.PASSED: "Canary passed its analysis",
    Outcome.INCONCLUSIVE: "Canary held: verdict inconclusive",
    Outcome.ABORTED: "Release aborted",
    Outcome.ERROR: "Release failed",
}
# Slack/Teams colour words: red for what needs a person, green for good news.
SEVERITY = {
    Outcome.ROLLED_BACK: "danger",
    Outcome.PROMOTED: "good",
    Outcome.PASSED: "good",
    Outcome.INCONCLUSIVE: "warning",
    Outcome.ABORTED: "warning",
    Outcome.ERROR: "danger",
}


@dataclass(frozen=True)
class ReleaseNotice:
    """One notification."""

    outcome: Outcome
    service: str = ""
    namespace: str = ""
    virtual_service: str = ""
    evidence: Evidence = field(default_factory=Evidence)
    canary_weight: int | None = None  # the canary's weight after the release
    commit: str = ""  # the rollback or promotion commit (full SHA)
    commit_url: str = ""
    workflow: str = ""
    workflow_url: str = ""
    cut_at: float | None = None  # when traffic left the canary (live patch, else the push), Unix time
    notes: tuple[str, ...] = ()  # anything else a person should know (e.g. the rollback itself failed)
    sent_at: float = field(default_factory=time.time)

    @property
    def target(self) -> str:
        """`podinfo in demo` — what the release was about, as known."""
        name = self.service or self.virtual_service or "the canary"
        return f"{name} in {self.namespace}" if self.namespace else name

    @property
    def title(self) -> str:
        """One line: the outcome and the service."""
        weight = "" if self.canary_weight is None else f" (canary at {self.canary_weight} %)"
        return f"{_HEADLINES[self.outcome]}: {self.target}{weight}"

    @property
    def breach_to_cut_s(self) -> float | None:
        """Seconds from the first breach analyze saw to the traffic cut; None when either is unknown."""
        breach, cut = self.evidence.first_breach_at, self.cut_at
        if breach is None or cut is None:
            return None
        return round(cut - breach, 3)

    @property
    def short_commit(self) -> str:
        """The commit's first 7 characters, as Git shows it."""
        return self.commit[:7]

    def evidence_text(self) -> str:
        """`canary_error_rate 0.5 over limit 0.01 (24 requests)`; '' when no metric decided."""
        evidence = self.evidence
        if not evidence.metric:
            return ""
        text = f"{evidence.metric} {format_number(evidence.value)} (limit {format_number(evidence.threshold)})"
        if evidence.samples is not None:
            text += f", {evidence.samples} requests"
        return text

    def fields(self) -> list[tuple[str, str]]:
        """Label/value pairs every format shows, in order; unknown ones left out."""
        evidence = self.evidence
        pairs = [
            ("Service", self.target),
            ("VirtualService", self.virtual_service),
            ("Verdict", evidence.verdict),
            ("Evidence", self.evidence_text()),
            ("First breach → cut", "" if self.breach_to_cut_s is None else f"{self.breach_to_cut_s:.2f} s"),
            ("Commit", self.short_commit),
            ("Workflow", self.workflow),
        ]
        return [(label, value) for label, value in pairs if value]

    def plain_text(self) -> str:
        """The whole notice as plain text (Slack's fallback, the JSON `text`, a log line)."""
        lines = [self.title]
        if self.evidence.reason:
            lines.append(f"Reason: {self.evidence.reason}")
        lines.extend(f"{label}: {value}" for label, value in self.fields() if label != "Service")
        if self.commit_url:
            lines.append(f"Commit link: {self.commit_url}")
        if self.workflow_url:
            lines.append(f"Workflow link: {self.workflow_url}")
        lines.extend(self.notes)
        return "\n".join(lines)


def format_number(value: float | None) -> str:
    """A metric value for people: 4 significant digits; `unknown` when missing."""
    if value is None or not math.isfinite(value):
        return "unknown"
    return f"{value:.4g}"


def utc_iso(stamp: float | None) -> str | None:
    """Unix time as ISO 8601 UTC with milliseconds; None when unknown."""
    if stamp is None or not math.isfinite(stamp):
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp)) + f".{round(stamp % 1 * 1000) % 1000:03d}Z"


# Hosts whose web UI has a known commit page. A self-hosted server: --commit-url with {sha}.
_COMMIT_PAGES = {
    "github.com": "{base}/commit/{sha}",
    "gitlab.com": "{base}/-/commit/{sha}",
    "bitbucket.org": "{base}/commits/{sha}",
    "codeberg.org": "{base}/commit/{sha}",
}
_SCP_LIKE = re.compile(r"^(?:[^@/]+@)?(?P<host>[^:/]+):(?P<path>[^/].*)$")


def commit_link(repo: str, sha: str, template: str = "") -> str:
    """A web link to `sha`: from `template` (`https://git.example.com/team/app/commit/{sha}`) when given,
    else for GitHub, GitLab, Bitbucket and Codeberg repository URLs (HTTPS, ssh:// or git@host:path);
    '' when the URL allows none (a local path, an unknown server)."""
    if not sha:
        return ""
    if template:
        return template.replace("{sha}", sha)
    repo = display_url(repo.strip())  # never a user:password@ in a link
    host, path = "", ""
    if "://" in repo:
        rest = repo.split("://", 1)[1]
        host_part, _, path = rest.partition("/")
        host = host_part.rsplit("@", 1)[-1].split(":", 1)[0]
    else:
        match = _SCP_LIKE.match(repo)
        if match is None:
            return ""
        host, path = match.group("host"), match.group("path")
    host = host.lower()
    path = path.strip("/")
    if path.endswith(".git"):
        path = path[: -len(".git")]
    if host not in _COMMIT_PAGES or not path:
        return ""
    return _COMMIT_PAGES[host].format(base=f"https://{host}/{path}", sha=sha)

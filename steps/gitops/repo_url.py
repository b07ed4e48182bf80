"""User and password in a repository URL: where the userinfo really ends, and the URL without the password.

A password may hold `/`, `?`, `#` or `@` unencoded (`https://bot:s3cr/et@git.example.com/x.git`).
Git itself would cut such a URL at the first `/` and try to connect to a host `bot`; a pattern that
stops at `/` would not see the password and print it. Here the userinfo ends at the last `@` that is
followed by a host (and optional port) and then the path: the password is taken out of the URL, handed
to git through the askpass helper like a token, and every shown form of the URL reads `scheme://***@host`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_HOST_THEN_PATH = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%-]+)(:[0-9]*)?([/?#]|$)")
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
REDACTED = "***"


@dataclass(frozen=True)
class RepoUrl:
    """A repository as given to --repo, split into what git gets and what may be shown."""

    for_git: str  # the URL without the password (the user name kept), or the path as given
    shown: str  # `scheme://***@host/...` when the URL carries a user, else the URL itself
    username: str | None  # percent-decoded
    password: str | None  # percent-decoded
    password_as_written: str | None  # as it appears in --repo (it may be percent-encoded there)


def _userinfo_end(rest: str) -> int | None:
    """Index of the `@` ending the userinfo in `rest` (the URL after `scheme://`), or None if it has none."""
    candidates = [match.start() for match in re.finditer("@", rest)]
    for at in reversed(candidates):
        before = rest[:at]
        if ("/" in before or "?" in before or "#" in before) and ":" not in before:
            continue  # an `@` in the path (`host/team/@scope/repo`), not a user
        if _HOST_THEN_PATH.match(rest, at + 1):
            return at
    return None


def parse_repo_url(repo: str) -> RepoUrl:
    """Split --repo into the URL for git (no password), the form to show, and the user and password."""
    scheme = _SCHEME.match(repo)
    if scheme is None:  # a local path or `git@host:path` (SSH: no password)
        return RepoUrl(repo, repo, None, None, None)
    rest = repo[scheme.end() :]
    at = _userinfo_end(rest)
    if at is None:
        return RepoUrl(repo, repo, None, None, None)
    userinfo, host_and_path = rest[:at], rest[at + 1 :]
    shown = f"{scheme.group(0)}{REDACTED}@{host_and_path}"
    user, colon, password = userinfo.partition(":")
    if not colon:
        return RepoUrl(repo, shown, unquote(user), None, None)
    for_git = f"{scheme.group(0)}{quote(unquote(user), safe='')}@{host_and_path}" if user else (
        f"{scheme.group(0)}{host_and_path}"
    )
    return RepoUrl(for_git, shown, unquote(user) or None, unquote(password), password)


def scrub_urls(text: str) -> str:
    """Text with the userinfo of every URL in it replaced by ***."""
    return _URL_IN_TEXT.sub(lambda match: parse_repo_url(match.group(0)).shown, text)

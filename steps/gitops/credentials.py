"""Git credentials from the environment or a mounted secret, handed to git without ever being logged.

An HTTPS token reaches git through a GIT_ASKPASS helper that reads it from the git process's
environment: it is never in the URL, never on a command line (visible in `ps` and in logs) and never
written to disk by rollguard. An SSH key goes through GIT_SSH_COMMAND. `Scrubber` removes the token
and any `user:password@` from every text that may reach a log line or an error message.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path

from rollguard.steps.gitops.repo_url import REDACTED, parse_repo_url, scrub_urls
from rollguard.steps.options import UsageError

TOKEN_ENV = "ROLLGUARD_GIT_TOKEN"
# Variables only the askpass helper reads; they live in the environment of the git child process.
_ASKPASS_TOKEN_ENV = "ROLLGUARD_ASKPASS_TOKEN"
_ASKPASS_USER_ENV = "ROLLGUARD_ASKPASS_USERNAME"
_ASKPASS_SCRIPT = f"""#!/bin/sh
# rollguard's GIT_ASKPASS helper: answers git's username/password prompts from the environment.
case "$1" in
  Username*) printf '%s\\n' "${_ASKPASS_USER_ENV}" ;;
  *) printf '%s\\n' "${_ASKPASS_TOKEN_ENV}" ;;
esac
"""


@dataclass(frozen=True)
class GitCredentials:
    """What git may authenticate with: an HTTPS token, an SSH private key file, or nothing."""

    token: str | None = field(default=None, repr=False)
    username: str = "x-access-token"
    ssh_key_file: Path | None = None
    known_hosts_file: Path | None = None
    token_in_url: bool = False  # the "token" is the password written in --repo

    @property
    def kind(self) -> str:
        """`token`, `password in --repo`, `ssh-key` or `none`: for log lines that must say how, never with what."""
        if self.token:
            return "password in --repo" if self.token_in_url else "token"
        if self.ssh_key_file:
            return "ssh-key"
        return "none"


def load_credentials(
    token_file: str | None,
    ssh_key_file: str | None,
    username: str = "x-access-token",
    known_hosts_file: str | None = None,
) -> GitCredentials:
    """Credentials from --git-token-file, ROLLGUARD_GIT_TOKEN or --git-ssh-key-file (one of them at most)."""
    token: str | None = None
    if token_file:
        path = Path(token_file)
        if not path.is_file():
            raise UsageError(f"--git-token-file {token_file}: no such file; mount the token secret there")
        token = path.read_text(encoding="utf-8").strip()
        if not token:
            raise UsageError(f"--git-token-file {token_file} is empty; it must hold the access token")
    elif os.environ.get(TOKEN_ENV, "").strip():
        token = os.environ[TOKEN_ENV].strip()
    key: Path | None = None
    if ssh_key_file:
        key = Path(ssh_key_file)
        if not key.is_file():
            raise UsageError(f"--git-ssh-key-file {ssh_key_file}: no such file; mount the SSH key secret there")
        if token:
            raise UsageError(
                "both a token and --git-ssh-key-file are set; give one (a token for https:// repos, a key for ssh)"
            )
    known_hosts: Path | None = None
    if known_hosts_file:
        known_hosts = Path(known_hosts_file)
        if not known_hosts.is_file():
            raise UsageError(f"--git-known-hosts-file {known_hosts_file}: no such file")
    return GitCredentials(token=token, username=username, ssh_key_file=key, known_hosts_file=known_hosts)


def with_url_password(credentials: GitCredentials, repo: str) -> GitCredentials:
    """The credentials, plus the user:password written in --repo (handed to git like a token, never in the URL).

    A password in the URL and a token from ROLLGUARD_GIT_TOKEN/--git-token-file together are refused:
    it would be a guess which one the server wants.
    """
    url = parse_repo_url(repo)
    if url.password is None or (credentials.token_in_url and credentials.token == url.password):
        return credentials
    if credentials.token or credentials.ssh_key_file:
        other = "a token (ROLLGUARD_GIT_TOKEN or --git-token-file)" if credentials.token else "--git-ssh-key-file"
        raise UsageError(f"--repo {url.shown} carries a password and {other} is set too; give one of them")
    return replace(
        credentials, token=url.password, username=url.username or credentials.username, token_in_url=True
    )


@dataclass(frozen=True)
class Scrubber:
    """Removes secrets from text before it is logged or raised: the token and URL user:password parts."""

    secrets: tuple[str, ...] = ()

    def scrub(self, text: str) -> str:
        """Text with every secret replaced by *** and `scheme://user:pass@` reduced to `scheme://***@`."""
        for secret in sorted(self.secrets, key=len, reverse=True):
            if secret:
                text = text.replace(secret, REDACTED)
        return scrub_urls(text)


def scrubber_for(credentials: GitCredentials, *extra: str) -> Scrubber:
    """The Scrubber that hides these credentials (and any extra secret strings)."""
    secrets = tuple(value for value in (credentials.token, *extra) if value)
    return Scrubber(secrets=secrets)


def git_environment(credentials: GitCredentials, helper_dir: Path) -> dict[str, str]:
    """Environment for git child processes: never prompt, English messages, and the credentials.

    `helper_dir` is a private temporary directory; the askpass script and a copy of the SSH key
    (with the 0600 mode ssh insists on; mounted secrets are often 0644) are written there.
    """
    env = dict(os.environ)
    env.update({"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "LANGUAGE": "C", "GCM_INTERACTIVE": "never"})
    for variable in (TOKEN_ENV, "GIT_ASKPASS", "SSH_ASKPASS", "GIT_SSH", "GIT_SSH_COMMAND", "GIT_CURL_VERBOSE"):
        env.pop(variable, None)
    for variable in [name for name in env if name.startswith("GIT_TRACE")]:
        env.pop(variable)  # git's traces print HTTP headers, including the Authorization one
    if credentials.token:
        script = helper_dir / "askpass.sh"
        script.write_text(_ASKPASS_SCRIPT, encoding="utf-8")
        script.chmod(stat.S_IRWXU)
        env["GIT_ASKPASS"] = str(script)
        env[_ASKPASS_TOKEN_ENV] = credentials.token
        env[_ASKPASS_USER_ENV] = credentials.username
    if credentials.ssh_key_file:
        key_copy = helper_dir / "id_key"
        shutil.copyfile(credentials.ssh_key_file, key_copy)
        key_copy.chmod(stat.S_IRUSR | stat.S_IWUSR)
        options = ["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"]
        if credentials.known_hosts_file:
            options += ["-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={credentials.known_hosts_file}"]
        else:
            options += [
                "-o",
                "StrictHostKeyChecking=accept-new",
                "-o",
                f"UserKnownHostsFile={helper_dir / 'known_hosts'}",
            ]
        env["GIT_SSH_COMMAND"] = shlex.join(["ssh", "-i", str(key_copy), *options])
    return env


def git_config_arguments(credentials: GitCredentials) -> list[str]:
    """`-c` options for git: with a token, ignore credential helpers so only our askpass answers."""
    return ["-c", "credential.helper="] if credentials.token else []

"""Flags of a notification's delivery and links, shared by `rollguard notify` and `rollguard finish`."""

from __future__ import annotations

import argparse

from rollguard.steps.notify.delivery import NotifyConfigError, NotifyTarget, load_target
from rollguard.steps.notify.formats import FORMATS, Format
from rollguard.steps.options import UsageError, add_flag, positive_duration, positive_int

NOTIFY_SECRET_KEY = "url"  # the key of the Secret that holds the webhook URL (mounted as a file)


def add_delivery_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the notification goes, in which format, how hard to try; links for its commit and workflow."""
    group = parser.add_argument_group("notification (off when no URL is given)")
    add_flag(group, "--notify-url", help="webhook URL, http(s); it is a secret: prefer --notify-url-file")
    add_flag(group, "--notify-url-file",
             help=f"file holding the webhook URL, e.g. the key {NOTIFY_SECRET_KEY!r} of a mounted Secret; "
                  "a missing file means no notification")  # fmt: skip
    add_flag(group, "--notify-format", default=Format.AUTO.value, choices=list(FORMATS),
             help="payload: json (generic), slack (incoming webhook, Block Kit), teams (Adaptive Card); auto: slack "
                  "for hooks.slack.com, teams for Teams/Power Automate hosts, else json")  # fmt: skip
    add_flag(group, "--notify-attempts", default=3, type=positive_int, help="tries per notification")
    add_flag(group, "--notify-timeout", default="5s", type=positive_duration, help="time limit of one try")
    add_flag(group, "--commit-url",
             help="link for a commit, with {sha} (e.g. https://git.example.com/team/app/commit/{sha}); "
                  "default: derived from --repo for GitHub, GitLab, Bitbucket, Codeberg")  # fmt: skip
    add_flag(group, "--workflow-url",
             help="link for the workflow, with {name} and {namespace} "
                  "(e.g. https://argo.example.com/workflows/{namespace}/{name})")  # fmt: skip


def target_from(args: argparse.Namespace) -> NotifyTarget | None:
    """The webhook from the flags; None when notifications are off; UsageError for a bad URL or file."""
    try:
        return load_target(args.notify_url, args.notify_url_file, Format(args.notify_format),
                           attempts=args.notify_attempts, timeout_s=args.notify_timeout)  # fmt: skip
    except NotifyConfigError as exc:
        raise UsageError(str(exc)) from None


def workflow_link(template: str | None, name: str, namespace: str) -> str:
    """The workflow's web link from --workflow-url; '' without a template or a name."""
    if not template or not name:
        return ""
    return template.replace("{name}", name).replace("{namespace}", namespace)

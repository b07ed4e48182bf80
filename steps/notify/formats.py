"""The payload of a notification, one function per format, and the format chosen from the URL.

- `json`: rollguard's own document (`schema: rollguard.release-notification/v1`), for any webhook receiver.
- `slack`: an incoming-webhook message: `text` (the notification text; Mattermost and Discord's
  Slack-compatible endpoint show it) and Block Kit `blocks` (header, reason, fields, context), within
  Block Kit's documented limits (header 150 characters, section text 3000, at most 10 fields of 2000).
- `teams`: a Microsoft Teams message carrying an Adaptive Card 1.4 (title, reason, a FactSet, links),
  the shape Teams' Workflows webhooks ("When a Teams webhook request is received") and incoming
  webhooks accept; Teams shows cards up to 28 KB.
"""

from __future__ import annotations

from enum import Enum
from typing import Any
from urllib.parse import urlsplit

from rollguard.steps.notify.notice import SEVERITY, ReleaseNotice, utc_iso

SCHEMA = "rollguard.release-notification/v1"


class Format(str, Enum):
    """A payload format; AUTO picks one from the URL's host."""

    AUTO = "auto"
    JSON = "json"
    SLACK = "slack"
    TEAMS = "teams"


FORMATS = tuple(choice.value for choice in Format)

# Hosts that say which service a webhook URL belongs to. Anything else is a generic JSON receiver
# (Slack-compatible servers such as Mattermost or Discord's .../slack endpoint: --notify-format slack).
_SLACK_HOSTS = ("hooks.slack.com",)
_TEAMS_SUFFIXES = (".webhook.office.com", "outlook.office.com", ".logic.azure.com", ".powerplatform.com")


def format_for(url: str, requested: Format) -> Format:
    """The format to send: the requested one, or for AUTO the service the URL's host names (else JSON)."""
    if requested is not Format.AUTO:
        return requested
    host = (urlsplit(url).hostname or "").lower()
    if host in _SLACK_HOSTS:
        return Format.SLACK
    if any(host == suffix.lstrip(".") or host.endswith(suffix) for suffix in _TEAMS_SUFFIXES):
        return Format.TEAMS
    return Format.JSON


def payload(notice: ReleaseNotice, chosen: Format) -> dict[str, Any]:
    """The JSON body for `chosen` (never AUTO)."""
    builders = {Format.JSON: json_payload, Format.SLACK: slack_payload, Format.TEAMS: teams_payload}
    if chosen not in builders:
        raise ValueError(f"no payload for format {chosen.value!r}; choose the format first")
    return builders[chosen](notice)


def json_payload(notice: ReleaseNotice) -> dict[str, Any]:
    """rollguard's generic notification document."""
    evidence = notice.evidence
    return {
        "schema": SCHEMA,
        "outcome": notice.outcome.value,
        "title": notice.title,
        "text": notice.plain_text(),
        "service": notice.service or None,
        "namespace": notice.namespace or None,
        "virtual_service": notice.virtual_service or None,
        "canary_weight": notice.canary_weight,
        "verdict": {
            "verdict": evidence.verdict or None,
            "reason": evidence.reason or None,
            "metric": evidence.metric or None,
            "value": evidence.value,
            "threshold": evidence.threshold,
            "samples": evidence.samples,
        },
        "commit": {
            "sha": notice.commit or None, "short": notice.short_commit or None, "url": notice.commit_url or None,
        },
        "workflow": {"name": notice.workflow or None, "url": notice.workflow_url or None},
        "timing": {
            "first_breach_at": utc_iso(evidence.first_breach_at),
            "cut_at": utc_iso(notice.cut_at),
            "breach_to_cut_seconds": notice.breach_to_cut_s,
        },
        "notes": list(notice.notes),
        "sent_at": utc_iso(notice.sent_at),
    }


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _mrkdwn(text: str) -> str:
    """Slack's three control characters escaped (https://api.slack.com/reference/surfaces/formatting)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack_link(url: str, label: str) -> str:
    return f"<{url}|{_mrkdwn(label)}>" if url else _mrkdwn(label)


_SLACK_ICONS = {"danger": ":red_circle:", "warning": ":large_yellow_circle:", "good": ":large_green_circle:"}


def slack_payload(notice: ReleaseNotice) -> dict[str, Any]:
    """A Slack incoming-webhook message: `text` plus Block Kit blocks."""
    icon = _SLACK_ICONS[SEVERITY[notice.outcome]]
    fields = []
    for label, value in notice.fields():
        if label == "Commit":
            value_text = _slack_link(notice.commit_url, value)
        elif label == "Workflow":
            value_text = _slack_link(notice.workflow_url, value)
        else:
            value_text = _mrkdwn(value)
        fields.append({"type": "mrkdwn", "text": _cut(f"*{_mrkdwn(label)}*\n{value_text}", 2000)})
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(notice.title, 150), "emoji": True}},
    ]
    if notice.evidence.reason:
        reason = f"{icon} *Reason:* {_mrkdwn(notice.evidence.reason)}"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(reason, 3000)}})
    if fields:
        blocks.append({"type": "section", "fields": fields[:10]})
    if notice.notes:
        notes = "\n".join(_mrkdwn(note) for note in notice.notes)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(notes, 3000)}})
    blocks.append({"type": "context", "elements": [
        {"type": "mrkdwn", "text": f"rollguard · outcome `{notice.outcome.value}` · {utc_iso(notice.sent_at)}"},
    ]})  # fmt: skip
    return {"text": _cut(f"{icon} " + _mrkdwn(notice.plain_text()), 3000), "blocks": blocks}


_TEAMS_COLOURS = {"danger": "Attention", "warning": "Warning", "good": "Good"}


def teams_payload(notice: ReleaseNotice) -> dict[str, Any]:
    """A Teams message whose one attachment is an Adaptive Card (schema version 1.4)."""
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": notice.title,
            "size": "Large",
            "weight": "Bolder",
            "color": _TEAMS_COLOURS[SEVERITY[notice.outcome]],
            "wrap": True,
        },
    ]
    if notice.evidence.reason:
        body.append({"type": "TextBlock", "text": _cut(notice.evidence.reason, 2000), "wrap": True})
    facts = [{"title": label, "value": value} for label, value in notice.fields()]
    if facts:
        body.append({"type": "FactSet", "facts": facts})
    for note in notice.notes:
        body.append({"type": "TextBlock", "text": note, "wrap": True, "isSubtle": True})
    body.append({"type": "TextBlock", "text": f"rollguard · {notice.outcome.value} · {utc_iso(notice.sent_at)}",
                 "size": "Small", "isSubtle": True, "wrap": True})
    actions = [
        {"type": "Action.OpenUrl", "title": title, "url": url}
        for title, url in (("Open commit", notice.commit_url), ("Open workflow", notice.workflow_url))
        if url
    ]
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    }
    if actions:
        card["actions"] = actions
    return {
        "type": "message",
        "summary": _cut(notice.title, 150),
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card},
        ],
    }

"""Where a notification goes and how it gets there: the webhook URL (flag, or a file from a mounted Secret),
checked before anything starts, and a POST with retries and backoff that never raises.

The URL is a secret (a Slack or Teams webhook URL is its own credential): it is never logged or put in
an error; messages name its host only.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rollguard.steps.notify.formats import Format, format_for

log = logging.getLogger("rollguard.steps")

USER_AGENT = "rollguard-notify/1"
MAX_RETRY_AFTER_S = 10.0  # a 429's Retry-After is honoured up to this; a rollback's report should not wait longer
# Statuses worth another try: the receiver was busy or broken for a moment. Any other 4xx will fail again.
RETRIED_STATUSES = (408, 425, 429, 500, 502, 503, 504)


class NotifyConfigError(ValueError):
    """The notification settings cannot work (a URL that is not http(s), an unreadable file)."""


@dataclass(frozen=True)
class NotifyTarget:
    """A webhook to post to: the URL (secret), the format, and how hard to try."""

    url: str
    format: Format
    attempts: int = 3
    timeout_s: float = 5.0
    backoff_s: float = 1.0  # before the 2nd attempt; doubled each further attempt

    @property
    def host(self) -> str:
        """The URL's host: all that logs and errors show of it."""
        return urlsplit(self.url).hostname or "?"


def check_url(url: str, source: str) -> str:
    """The URL without surrounding whitespace; NotifyConfigError if it is not an absolute http(s) URL."""
    url = url.strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        raise NotifyConfigError(f"the notify URL from {source} is not a URL") from None
    if parts.scheme not in ("http", "https"):
        shown = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        raise NotifyConfigError(f"the notify URL from {source} is not http(s) ({shown}); give an https:// webhook URL")
    if not parts.hostname or any(character.isspace() for character in url):
        raise NotifyConfigError(f"the notify URL from {source} has no host or contains spaces")
    return url


def load_target(url: str | None, url_file: str | None, requested: Format, *, attempts: int = 3,
                timeout_s: float = 5.0, backoff_s: float = 1.0) -> NotifyTarget | None:  # fmt: skip
    """The target from --notify-url, else from the file --notify-url-file (a mounted Secret's key);
    None when neither holds a URL (notifications are off). NotifyConfigError for a bad URL or file."""
    source, text = "--notify-url", (url or "").strip()
    if not text and url_file:
        path = Path(url_file)
        if not path.exists():  # an optional Secret that is not there: notifications are off
            return None
        try:
            text = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise NotifyConfigError(f"--notify-url-file {url_file} cannot be read: {type(exc).__name__}") from None
        source = f"--notify-url-file {url_file}"
    if not text:
        return None
    checked = check_url(text, source)
    return NotifyTarget(checked, format_for(checked, requested), attempts, timeout_s, backoff_s)


@dataclass(frozen=True)
class DeliveryResult:
    """What happened to one notification."""

    delivered: bool
    attempts: int
    status: int | None  # the last HTTP status; None when no answer came
    detail: str  # why it failed, in words (host only, never the URL)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A webhook that redirects is misconfigured; following it would resend the body as a GET, or elsewhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects())


def _post_once(target: NotifyTarget, body: bytes) -> tuple[int | None, str, float | None]:
    """(status, detail, retry-after seconds) of one POST; status None when nothing answered."""
    request = urllib.request.Request(
        target.url, data=body, method="POST",
        headers={"Content-Type": "application/json; charset=utf-8", "User-Agent": USER_AGENT},
    )  # fmt: skip
    try:
        with _OPENER.open(request, timeout=target.timeout_s) as response:
            return response.status, "", None
    except urllib.error.HTTPError as exc:
        answer = exc.read(300).decode("utf-8", "replace").strip().replace("\n", " ")
        retry_after = _seconds(exc.headers.get("Retry-After")) if exc.headers else None
        return exc.code, f"HTTP {exc.code}{': ' + answer if answer else ''}", retry_after
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return None, f"{type(reason).__name__}: {_scrub(str(reason), target.url)}", None


def _scrub(text: str, url: str) -> str:
    """Whatever a network error says, without the URL (or its path, which is the secret part)."""
    path = urlsplit(url).path
    text = text.replace(url, "<notify URL>")
    return text.replace(path, "/<path>") if len(path) > 1 else text


def _seconds(text: str | None) -> float | None:
    try:
        return max(0.0, float(text)) if text else None
    except ValueError:
        return None


def deliver(target: NotifyTarget, document: dict[str, Any],
            sleep: Callable[[float], None] = time.sleep) -> DeliveryResult:  # fmt: skip
    """POST `document` as JSON, retrying (backoff, Retry-After) on no answer, 408/425/429 and 5xx.
    Never raises: the caller logs the result and goes on."""
    body = json.dumps(document).encode("utf-8")
    status: int | None = None
    detail = ""
    for attempt in range(1, target.attempts + 1):
        status, detail, retry_after = _post_once(target, body)
        if status is not None and 200 <= status < 300:
            return DeliveryResult(True, attempt, status, "")
        if status is not None and status not in RETRIED_STATUSES:
            return DeliveryResult(False, attempt, status, detail or f"HTTP {status}")
        if attempt < target.attempts:
            wait = target.backoff_s * 2 ** (attempt - 1)
            if retry_after is not None:
                wait = min(max(wait, retry_after), MAX_RETRY_AFTER_S)
            log.info("notification to %s: attempt %d failed (%s); trying again in %.1f s", target.host, attempt,
                     detail, wait)
            sleep(wait)
    return DeliveryResult(False, target.attempts, status, detail)

"""`rollguard notify`: the three payloads (checked against Slack's Block Kit models and the official Adaptive Card
schema), delivery to a real local HTTP server (retries, Retry-After, permanent errors, nothing listening), the URL
from a flag or a Secret file and never printed, and bad settings refused before anything is sent."""

from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path

import pytest
from jsonschema.validators import Draft6Validator
from slack_sdk.models.blocks import Block, ContextBlock, HeaderBlock, SectionBlock
from webhook_server import webhook_server

from rollguard.sandbox.ports import free_port
from rollguard.steps import cli
from rollguard.steps.exit_codes import ExitCode
from rollguard.steps.notify.delivery import NotifyTarget, deliver, load_target
from rollguard.steps.notify.formats import SCHEMA, Format, format_for, payload
from rollguard.steps.notify.notice import Outcome, ReleaseNotice, commit_link
from rollguard.steps.trailers import Evidence

SECRET_PATH = "/hooks/T000/B000/XXXXSECRETXXXX"
SHA = "3f1c2ab9d0e4c5b6a7980f1e2d3c4b5a69788796"
VERDICT = {
    "verdict": "fail",
    "format_version": 2,
    "reason": "canary_error_rate: 12 of 24 requests failed (50 %), over the 1 % limit with 99 % confidence",
    "started_at": 1795680000.0,
    "decided_at": 1795680003.5,
    "first_breach_at": 1795680002.25,
    "failed_check": {"metric": "canary_error_rate", "value": 0.5, "threshold": 0.01, "detail": "12 of 24",
                     "samples": 24},
    "settings": {},
    "check_count": 4,
    "last_check": None,
}


def notice(outcome: Outcome = Outcome.ROLLED_BACK, **changes: object) -> ReleaseNotice:
    values: dict[str, object] = {
        "outcome": outcome,
        "service": "podinfo",
        "namespace": "demo",
        "virtual_service": "podinfo",
        "evidence": Evidence(verdict="fail", reason=str(VERDICT["reason"]), metric="canary_error_rate",
                             value=0.5, threshold=0.01, samples=24, first_breach_at=1795680002.25),
        "canary_weight": 0,
        "commit": SHA,
        "commit_url": commit_link("https://github.com/acme/podinfo-gitops.git", SHA),
        "workflow": "canary-release-x7k2p",
        "workflow_url": "https://argo.example.com/workflows/demo/canary-release-x7k2p",
        "cut_at": 1795680003.75,
        "sent_at": 1795680004.0,
    }
    values.update(changes)
    return ReleaseNotice(**values)  # type: ignore[arg-type]


def test_json_payload_carries_every_fact() -> None:
    document = payload(notice(), Format.JSON)
    assert document["schema"] == SCHEMA and document["outcome"] == "rolled_back"
    assert document["title"] == "Canary rolled back: podinfo in demo (canary at 0 %)"
    assert document["verdict"] == {"verdict": "fail", "reason": VERDICT["reason"], "metric": "canary_error_rate",
                                   "value": 0.5, "threshold": 0.01, "samples": 24}
    assert document["commit"] == {"sha": SHA, "short": "3f1c2ab",
                                  "url": f"https://github.com/acme/podinfo-gitops/commit/{SHA}"}
    assert document["workflow"]["name"] == "canary-release-x7k2p"
    assert document["timing"] == {"first_breach_at": "2026-11-26T08:00:02.250Z", "cut_at": "2026-11-26T08:00:03.750Z",
                                  "breach_to_cut_seconds": 1.5}
    assert "Evidence: canary_error_rate 0.5 (limit 0.01), 24 requests" in document["text"]
    json.dumps(document)  # plain JSON all the way down


def test_slack_payload_is_valid_block_kit_within_its_limits() -> None:
    long_reason = "x" * 5000
    for outcome in Outcome:
        for item in (notice(outcome), notice(outcome, evidence=Evidence(reason=long_reason), commit="", notes=("n",))):
            document = payload(item, Format.SLACK)
            blocks = Block.parse_all(document["blocks"])
            assert [type(block) for block in blocks][:1] == [HeaderBlock]
            assert all(isinstance(block, (HeaderBlock, SectionBlock, ContextBlock)) for block in blocks)
            for block in blocks:
                block.validate_json()  # raises SlackObjectFormationError past a documented limit
            assert [block.to_dict() for block in blocks] == document["blocks"]  # nothing unknown dropped
            assert document["text"] and len(document["text"]) <= 3000
    fields = payload(notice(), Format.SLACK)["blocks"][2]["fields"]
    link = f"<https://github.com/acme/podinfo-gitops/commit/{SHA}|3f1c2ab>"
    assert {"type": "mrkdwn", "text": f"*Commit*\n{link}"} in fields
    escaped = payload(notice(evidence=Evidence(reason="p99 <500 & >1 s")), Format.SLACK)
    assert "p99 &lt;500 &amp; &gt;1 s" in escaped["blocks"][1]["text"]["text"]


def adaptive_card_schema() -> Draft6Validator:
    schema = json.loads((resources.files("adaptive_cards") / "schemas" / "schema-1.4.json").read_text())
    return Draft6Validator(schema)


def test_teams_payload_is_an_adaptive_card_1_4_by_the_official_schema() -> None:
    validator = adaptive_card_schema()
    for outcome in Outcome:
        for item in (notice(outcome), notice(outcome, commit="", workflow_url="", notes=("rollback failed",))):
            document = payload(item, Format.TEAMS)
            assert document["type"] == "message"
            (attachment,) = document["attachments"]
            assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
            card = attachment["content"]
            errors = sorted(validator.iter_errors(card), key=str)
            assert not errors, errors[0].message
            assert card["version"] == "1.4" and len(json.dumps(document)) < 28 * 1024
    card = payload(notice(), Format.TEAMS)["attachments"][0]["content"]
    assert {"title": "Evidence", "value": "canary_error_rate 0.5 (limit 0.01), 24 requests"} in card["body"][2]["facts"]
    assert card["actions"][0] == {"type": "Action.OpenUrl", "title": "Open commit",
                                  "url": f"https://github.com/acme/podinfo-gitops/commit/{SHA}"}
    broken = {**card, "body": [{"type": "TextBlock"}]}  # the schema does catch a card Teams would refuse
    assert list(adaptive_card_schema().iter_errors(broken))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://hooks.slack.com/services/T/B/X", Format.SLACK),
        ("https://acme.webhook.office.com/webhookb2/x/IncomingWebhook/y", Format.TEAMS),
        ("https://prod-12.westeurope.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke", Format.TEAMS),
        ("https://default1234.environment.api.powerplatform.com/powerautomate/x", Format.TEAMS),
        ("https://mattermost.example.com/hooks/abc", Format.JSON),  # Slack-compatible, but not unambiguous
        ("http://127.0.0.1:8080/hook", Format.JSON),
    ],
)
def test_the_format_follows_the_url_where_it_is_unambiguous(url: str, expected: Format) -> None:
    assert format_for(url, Format.AUTO) is expected
    assert format_for(url, Format.SLACK) is Format.SLACK


@pytest.mark.parametrize(
    ("repo", "link"),
    [
        ("https://github.com/acme/app.git", f"https://github.com/acme/app/commit/{SHA}"),
        ("git@github.com:acme/app.git", f"https://github.com/acme/app/commit/{SHA}"),
        ("ssh://git@gitlab.com/group/sub/app.git", f"https://gitlab.com/group/sub/app/-/commit/{SHA}"),
        ("https://user:token@bitbucket.org/acme/app", f"https://bitbucket.org/acme/app/commits/{SHA}"),
        ("https://git.internal.example/acme/app.git", ""),
        ("/srv/git/gitops.git", ""),
    ],
)
def test_commit_links(repo: str, link: str) -> None:
    assert commit_link(repo, SHA) == link
    assert commit_link(repo, SHA, "https://git.example/acme/app/-/commit/{sha}") == (
        f"https://git.example/acme/app/-/commit/{SHA}")
    assert commit_link(repo, "") == ""


def notify(*extra: str) -> int:
    try:
        return cli.main(["notify", *extra])
    except SystemExit as exc:
        return int(exc.code or 0)


def test_notify_posts_each_format_to_a_real_server(tmp_path: Path, capsys) -> None:
    verdict = tmp_path / "verdict.json"
    verdict.write_text(json.dumps(VERDICT))
    with webhook_server() as server:
        for chosen in ("json", "slack", "teams"):
            code = notify("--notify-url", server.url(), "--notify-format", chosen, "--outcome", "rolled_back",
                          "--verdict-file", str(verdict), "--service", "podinfo", "--namespace", "demo",
                          "--virtual-service", "podinfo", "--canary-weight", "0", "--commit", SHA,
                          "--repo", "git@github.com:acme/podinfo-gitops.git", "--workflow-name", "canary-release-1",
                          "--cut-at", "1795680003.75")  # fmt: skip
            assert code == ExitCode.OK
    json_body, slack_body, teams_body = (request.json() for request in server.received)
    assert all(r.path == SECRET_PATH and r.headers["Content-Type"].startswith("application/json")
               for r in server.received)
    assert json_body["timing"]["breach_to_cut_seconds"] == 1.5
    assert json_body["commit"]["url"] == f"https://github.com/acme/podinfo-gitops/commit/{SHA}"
    assert slack_body["blocks"][0]["text"]["text"] == "Canary rolled back: podinfo in demo (canary at 0 %)"
    assert teams_body["attachments"][0]["content"]["type"] == "AdaptiveCard"
    logs = capsys.readouterr().err
    assert "notification sent to 127.0.0.1 (json format, 1 attempt(s))" in logs
    assert "SECRET" not in logs and SECRET_PATH not in logs


def test_retries_with_backoff_and_retry_after_then_delivers() -> None:
    script = [(503, {}), (429, {"Retry-After": "0.3"}), (200, {})]
    with webhook_server(script) as server:
        target = NotifyTarget(server.url(), Format.JSON, attempts=3, timeout_s=2.0, backoff_s=0.05)
        started = time.monotonic()
        result = deliver(target, {"a": 1})
        elapsed = time.monotonic() - started
    assert (result.delivered, result.attempts, result.status) == (True, 3, 200)
    assert len(server.received) == 3 and elapsed >= 0.05 + 0.3  # the second wait honoured Retry-After


def test_a_permanent_error_is_not_retried_and_a_dead_receiver_is_bounded(capsys) -> None:
    with webhook_server([(404, {})]) as server:
        result = deliver(NotifyTarget(server.url(), Format.JSON, attempts=3, backoff_s=0.01), {"a": 1})
    assert (result.delivered, result.attempts, result.status) == (False, 1, 404)
    assert len(server.received) == 1
    with webhook_server([(302, {"Location": "http://elsewhere/"})]) as server:  # a redirect is not followed
        assert deliver(NotifyTarget(server.url(), Format.JSON), {"a": 1}).status == 302
    dead = f"http://127.0.0.1:{free_port()}{SECRET_PATH}"
    started = time.monotonic()
    code = notify("--notify-url", dead, "--outcome", "error", "--notify-attempts", "2", "--notify-timeout", "1s")
    assert code == ExitCode.OK and time.monotonic() - started < 5  # logged, never a failure, never long
    logs = capsys.readouterr().err
    assert "could not be delivered after 2 attempt(s)" in logs
    assert "SECRET" not in logs


def test_the_url_may_come_from_a_secret_file_and_is_never_printed(tmp_path: Path, capsys) -> None:
    secret = tmp_path / "url"
    with webhook_server() as server:
        secret.write_text(server.url() + "\n")
        assert notify("--notify-url-file", str(secret), "--outcome", "promoted", "--canary-weight", "100") == 0
    assert server.received[0].json()["outcome"] == "promoted"
    assert notify("--notify-url-file", str(tmp_path / "absent"), "--outcome", "promoted") == ExitCode.OK
    assert "no notify URL configured" in capsys.readouterr().err
    target = load_target(None, str(secret), Format.AUTO)
    assert target is not None and target.host == "127.0.0.1" and "SECRET" not in repr(target.host)


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        (["--notify-url", "ftp://hooks.example.com/x"], "notify URL from --notify-url is not http(s) (scheme 'ftp')"),
        (["--notify-url", "hooks.slack.com/services/x"], "is not http(s) (no scheme)"),
        (["--notify-url", "https:///nohost"], "has no host"),
        (["--notify-format", "discord", "--notify-url", "https://x.example/h"], "invalid choice: 'discord'"),
    ],
)
def test_bad_settings_are_usage_errors_before_anything_is_sent(flags: list[str], problem: str, capsys) -> None:
    assert notify(*flags, "--check") == ExitCode.USAGE
    err = capsys.readouterr().err
    assert problem in err
    assert "SECRET" not in err and "/services/x" not in err


def test_check_only_validates(tmp_path: Path, capsys) -> None:
    with webhook_server() as server:
        assert notify("--notify-url", server.url(), "--check") == ExitCode.OK
    assert not server.received
    assert "notifications go to 127.0.0.1 as json" in capsys.readouterr().err
    assert notify("--check") == ExitCode.OK
    assert notify("--notify-url", "https://x.example/h") == ExitCode.USAGE  # no --outcome
    bad = tmp_path / "bad"
    bad.write_text("not a url")
    assert notify("--notify-url-file", str(bad), "--check") == ExitCode.USAGE

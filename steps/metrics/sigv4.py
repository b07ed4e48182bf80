"""AWS SigV4 signing of Prometheus queries (Amazon Managed Service for Prometheus).

The signing is requests-aws4auth's (a small PyPI library, 132 KB, needing only `requests`, which the step image
has anyway). botocore would bring AWS's whole credential chain but is ~32 MB installed and pins
python-dateutil < 3, which the kubernetes client (>= 3) excludes: the two cannot share one environment.
Credentials therefore come from the sources a pod has, in the AWS SDKs' order:
1. AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN);
2. web identity (EKS IRSA): AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN, exchanged with STS's
   AssumeRoleWithWebIdentity (an unsigned call; the token file is re-read for each exchange);
3. a container credentials endpoint (EKS Pod Identity, ECS): AWS_CONTAINER_CREDENTIALS_FULL_URI or
   _RELATIVE_URI, with AWS_CONTAINER_AUTHORIZATION_TOKEN(_FILE).
Temporary credentials are renewed five minutes before they expire. Profiles and the EC2 instance role are not
read (see steps/metrics/README.md).
"""

from __future__ import annotations

import json
import os
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rollguard.steps.metrics.http_get import HttpFailure, http_get

RENEW_BEFORE_S = 300.0
CREDENTIALS_TIMEOUT_S = 10.0
_STS_NAMESPACE = "{https://sts.amazonaws.com/doc/2011-06-15/}"


class SigV4SetupError(Exception):
    """Signing cannot work here: no AWS credentials found, or they could not be obtained."""


@dataclass(frozen=True)
class AwsCredentials:
    """An access key, its secret and session token (never shown), and when they expire (Unix time)."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    expires_at: float = float("inf")
    source: str = "environment"


def _expiry(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _from_web_identity(region: str) -> AwsCredentials:
    token_file, role_arn = os.environ["AWS_WEB_IDENTITY_TOKEN_FILE"], os.environ.get("AWS_ROLE_ARN", "")
    if not role_arn:
        raise SigV4SetupError("AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not")
    try:
        with open(token_file, encoding="utf-8") as handle:
            token = handle.read().strip()
    except OSError as exc:
        raise SigV4SetupError(f"AWS_WEB_IDENTITY_TOKEN_FILE {token_file}: {exc.strerror}") from None
    endpoint = (os.environ.get("AWS_ENDPOINT_URL_STS") or f"https://sts.{region}.amazonaws.com").rstrip("/")
    params = {"Action": "AssumeRoleWithWebIdentity", "Version": "2011-06-15", "RoleArn": role_arn,
              "RoleSessionName": os.environ.get("AWS_ROLE_SESSION_NAME") or f"rollguard-{int(time.time())}",
              "WebIdentityToken": token}
    try:
        answer = http_get(f"{endpoint}/", params, deadline=time.monotonic() + CREDENTIALS_TIMEOUT_S)
    except HttpFailure as exc:
        raise SigV4SetupError(f"STS at {endpoint} did not answer: {exc}") from None
    if answer.status != 200:
        raise SigV4SetupError(f"STS at {endpoint} refused AssumeRoleWithWebIdentity for {role_arn}: HTTP "
                              f"{answer.status}")
    try:
        root = ElementTree.fromstring(answer.body)
        found = root.find(f".//{_STS_NAMESPACE}Credentials")
        if found is None:
            raise ValueError("no Credentials element")
        values = {child.tag.removeprefix(_STS_NAMESPACE): (child.text or "") for child in found}
        return AwsCredentials(values["AccessKeyId"], values["SecretAccessKey"], values["SessionToken"],
                              _expiry(values["Expiration"]), "web identity")
    except (ElementTree.ParseError, KeyError, ValueError) as exc:
        raise SigV4SetupError(f"STS at {endpoint} answered without credentials ({exc})") from None


def _from_container_endpoint() -> AwsCredentials:
    url = os.environ.get("AWS_CONTAINER_CREDENTIALS_FULL_URI") or (
        "http://169.254.170.2" + os.environ.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", ""))
    headers: dict[str, str] = {}
    token_file = os.environ.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
    token = os.environ.get("AWS_CONTAINER_AUTHORIZATION_TOKEN")
    if token_file:
        try:
            with open(token_file, encoding="utf-8") as handle:
                token = handle.read().strip()
        except OSError as exc:
            raise SigV4SetupError(f"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE {token_file}: {exc.strerror}") from None
    if token:
        headers["Authorization"] = token
    base, _, query = url.partition("?")
    try:
        answer = http_get(base, dict(_pairs(query)), headers=headers,
                          deadline=time.monotonic() + CREDENTIALS_TIMEOUT_S)
        document = json.loads(answer.body)
        return AwsCredentials(document["AccessKeyId"], document["SecretAccessKey"], document.get("Token"),
                              _expiry(document["Expiration"]) if document.get("Expiration") else float("inf"),
                              "container credentials endpoint")
    except (HttpFailure, ValueError, KeyError, TypeError) as exc:
        raise SigV4SetupError(f"the container credentials endpoint gave no credentials ({exc})") from None


def _pairs(query: str) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    return parse_qsl(query, keep_blank_values=True)


def resolve_credentials(region: str) -> AwsCredentials:
    """The first source that is configured, as the AWS SDKs look; SigV4SetupError when none is."""
    environ = os.environ
    if environ.get("AWS_ACCESS_KEY_ID") and environ.get("AWS_SECRET_ACCESS_KEY"):
        return AwsCredentials(environ["AWS_ACCESS_KEY_ID"], environ["AWS_SECRET_ACCESS_KEY"],
                              environ.get("AWS_SESSION_TOKEN") or None)
    if environ.get("AWS_WEB_IDENTITY_TOKEN_FILE"):
        return _from_web_identity(region)
    if environ.get("AWS_CONTAINER_CREDENTIALS_FULL_URI") or environ.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        return _from_container_endpoint()
    raise SigV4SetupError("no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run with "
                          "a web identity (EKS IRSA: AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN) or EKS Pod Identity")


class SigV4Signer:
    """Signs one GET at a time; temporary credentials are renewed before they expire."""

    def __init__(self, region: str, service: str) -> None:
        self.region = region
        self.service = service
        self._credentials = resolve_credentials(region)

    def credentials(self) -> AwsCredentials:
        """Current credentials, renewed when fewer than five minutes are left."""
        if self._credentials.expires_at - time.time() < RENEW_BEFORE_S:
            self._credentials = resolve_credentials(self.region)
        return self._credentials

    def secrets(self) -> list[str]:
        """What scrubbing removes: the secret key and the session token."""
        return [value for value in (self._credentials.secret_access_key, self._credentials.session_token) if value]

    def sign(self, method: str, url: str, headers: Mapping[str, str]) -> dict[str, str]:
        """The headers to add to the request: Authorization, X-Amz-Date, X-Amz-Content-SHA256, the session token."""
        import requests
        from requests_aws4auth import AWS4Auth

        credentials = self.credentials()
        auth: Any = AWS4Auth(credentials.access_key_id, credentials.secret_access_key, self.region, self.service,
                             session_token=credentials.session_token)
        request = requests.Request(method, url, headers=dict(headers)).prepare()
        signed = auth(request)
        return {name: str(value) for name, value in signed.headers.items() if name not in headers}

"""A small Kubernetes API client for the custom objects rollguard touches (ArgoCD Applications, VirtualServices).

Configuration comes from --kubeconfig, then KUBECONFIG, then the in-cluster service account (when
KUBERNETES_SERVICE_HOST is set, as in an Argo Workflows pod), then ~/.kube/config. Every call has a
timeout, and failures become KubeApiError with the status code and the API's own message.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.incluster_config import InClusterConfigLoader
from urllib3.exceptions import HTTPError

from rollguard.steps.gitops.object_refs import ObjectRef

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubeConfigError(Exception):
    """No usable Kubernetes client configuration (names what was tried and how to fix it)."""


class KubeApiError(Exception):
    """A Kubernetes API call failed; `status` is the HTTP status (None if the API was unreachable)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ObjectNotFound(KubeApiError):
    """The object does not exist (HTTP 404)."""


class Conflict(KubeApiError):
    """The object changed since it was read (HTTP 409 on a stale resourceVersion)."""


def load_api_client(
    kubeconfig: str | None = None, context: str | None = None, *, service_account_dir: Path = SERVICE_ACCOUNT_DIR
) -> tuple[client.ApiClient, str]:
    """An ApiClient and a description of where its configuration came from (for the log)."""
    kubeconfig = kubeconfig or os.environ.get("KUBECONFIG") or None
    try:
        if kubeconfig:
            first = kubeconfig.split(os.pathsep)[0]
            if not Path(first).is_file():
                raise KubeConfigError(f"kubeconfig {first} does not exist; check --kubeconfig or KUBECONFIG")
            return config.new_client_from_config(config_file=first, context=context), f"kubeconfig {first}"
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            configuration = client.Configuration()
            InClusterConfigLoader(
                token_filename=str(service_account_dir / "token"), cert_filename=str(service_account_dir / "ca.crt")
            ).load_and_set(configuration)
            return client.ApiClient(configuration=configuration), "in-cluster service account"
        default = Path(config.KUBE_CONFIG_DEFAULT_LOCATION).expanduser()
        if default.is_file():
            return config.new_client_from_config(config_file=str(default), context=context), f"kubeconfig {default}"
    except KubeConfigError:
        raise
    except Exception as exc:  # ConfigException, YAML errors, unreadable files: all mean "fix the configuration"
        raise KubeConfigError(f"Kubernetes client configuration is unusable: {exc}") from None
    raise KubeConfigError(
        "no Kubernetes configuration: pass --kubeconfig (or set KUBECONFIG), or run in a pod with a service account"
    )


class KubeApi:
    """GET and JSON-merge-PATCH of namespaced custom objects, with timeouts and clear errors."""

    def __init__(self, api_client: client.ApiClient, *, timeout_s: float = 10.0) -> None:
        self._objects = client.CustomObjectsApi(api_client)
        self._timeout = (min(timeout_s, 5.0), timeout_s)
        self.server = api_client.configuration.host

    def get(self, ref: ObjectRef) -> dict[str, Any]:
        """The object as the API returns it (plain JSON data)."""
        return self._call("read", ref, lambda: self._objects.get_namespaced_custom_object(
            ref.group, ref.version, ref.namespace, ref.plural, ref.name, _request_timeout=self._timeout
        ))

    def merge_patch(self, ref: ObjectRef, patch: dict[str, Any]) -> dict[str, Any]:
        """Apply a JSON merge patch (RFC 7386); include metadata.resourceVersion to get Conflict on a race."""
        return self._call("patch", ref, lambda: self._objects.patch_namespaced_custom_object(
            ref.group, ref.version, ref.namespace, ref.plural, ref.name, patch,
            _request_timeout=self._timeout, _content_type="application/merge-patch+json",
        ))

    def _call(self, verb: str, ref: ObjectRef, request: Callable[[], object]) -> dict[str, Any]:
        """Run one API request, turning the client's exceptions into KubeApiError naming `verb` and `ref`.

        The client hands back whatever text an answer held that is not JSON (a proxy's or a login page's
        HTML with HTTP 200): that is an error too, not an object.
        """
        try:
            answer = request()
            if not isinstance(answer, dict):
                shown = " ".join(str(answer).split())[:60]
                raise KubeApiError(
                    f"could not {verb} {ref.describe()}: {self.server} answered HTTP 200 with something that is not "
                    f"a Kubernetes object ({shown!r}); is the kubeconfig's server the Kubernetes API, and not a proxy "
                    "or a login page in front of it?",
                    200,
                )
            return answer
        except ApiException as exc:
            raise _api_error(verb, ref, exc) from None
        except HTTPError as exc:
            raise KubeApiError(
                f"could not {verb} {ref.describe()}: Kubernetes API {self.server} unreachable ({exc})"
            ) from None


def _api_error(verb: str, ref: ObjectRef, exc: ApiException) -> KubeApiError:
    message = exc.reason or ""
    try:
        body = json.loads(exc.body or "{}")
        message = body.get("message") or message
    except (ValueError, AttributeError):
        pass
    text = f"could not {verb} {ref.describe()}: HTTP {exc.status} {message}".rstrip()
    if exc.status == 404:
        return ObjectNotFound(text, exc.status)
    if exc.status == 409:
        return Conflict(text, exc.status)
    if exc.status in (401, 403):
        text += " (check the service account's RBAC: rollguard needs get and patch on this resource)"
    return KubeApiError(text, exc.status)

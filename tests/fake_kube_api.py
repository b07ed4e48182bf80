"""A small fake Kubernetes API server for tests: real HTTP(S) on loopback, namespaced custom objects only.

It implements what rollguard uses: GET and JSON-merge-PATCH of namespaced custom objects
(`/apis/{group}/{version}/namespaces/{ns}/{plural}/{name}`), resourceVersion bumps, 409 Conflict
on a stale resourceVersion, 404 for unknown objects, 415 for patch types CRDs do not support, an
optional bearer token (401 without it) and optional TLS. It can emulate ArgoCD reacting to a sync
operation (after a delay the Application reports the revision Synced, or the sync fails, or it never
happens), an operation that is already running (the PostSync hook case), and other writers bumping
an object between a read and a patch. Every request is recorded for assertions.

Use it as a context manager or with start()/stop(); `write_kubeconfig(path)` points a client at it.
"""

from __future__ import annotations

import copy
import json
import re
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

_PATH = re.compile(
    r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)/namespaces/(?P<ns>[^/]+)/(?P<plural>[^/]+)/(?P<name>[^/?]+)$"
)
KIND_PLURALS = {
    "VirtualService": "virtualservices",
    "Application": "applications",
    "DestinationRule": "destinationrules",
}
MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake API served."""

    method: str
    path: str
    content_type: str | None
    body: Any
    status: int
    authorization: str | None
    at: float


@dataclass
class ArgoBehaviour:
    """How the fake ArgoCD reacts to an `operation` on an Application.

    mode: `sync` (after delay_s report the revision Synced), `fail` (the operation fails),
    `never` (nothing happens; the client times out), `running` (an operation is already running and
    stays so: the PostSync hook case).
    """

    mode: str = "sync"
    delay_s: float = 0.2
    requested_at: float | None = None
    requested_revision: str | None = None


@dataclass
class _Store:
    objects: dict[tuple[str, str, str, str], dict[str, Any]] = field(default_factory=dict)
    resource_version: int = 1000
    argo: dict[tuple[str, str], ArgoBehaviour] = field(default_factory=dict)
    concurrent_writes: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    html_page: str | None = None  # when set, every request is answered 200 with this HTML (a proxy's login page)
    requests: list[RecordedRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_version(self) -> str:
        self.resource_version += 1
        return str(self.resource_version)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, null deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}  # fmt: skip


class FakeKubeApi:
    """The fake API server. Objects are keyed by group, namespace, plural and name (any version serves them)."""

    def __init__(self, *, token: str | None = None, tls: bool = False) -> None:
        self.token = token
        self.tls = tls
        self._store = _Store()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._cert_dir: Path | None = None
        self.ca_file: Path | None = None

    # -- life cycle -------------------------------------------------------------------------------
    def start(self, cert_dir: Path | None = None) -> FakeKubeApi:
        """Listen on a free loopback port (HTTPS with a fresh self-signed cert when tls=True)."""
        store = self._store
        token = self.token

        class Handler(_Handler):
            pass

        Handler.store = store
        Handler.token = token
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        if self.tls:
            if cert_dir is None:
                raise ValueError("tls=True needs a cert_dir to write the self-signed certificate into")
            self.ca_file, key_file = _self_signed_certificate(cert_dir)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.ca_file, key_file)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-kube-api", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (safe to call twice)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeKubeApi:
        return self.start() if self._server is None else self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port it listens on."""
        assert self._server is not None, "start() the fake API first"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL of the API server."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def write_kubeconfig(self, path: Path, *, token: str | None = None) -> Path:
        """Write a kubeconfig whose current context points at this server (with `token`, default its own)."""
        cluster: dict[str, Any] = {"server": self.url}
        if self.tls and self.ca_file is not None:
            cluster["certificate-authority"] = str(self.ca_file)
        user: dict[str, Any] = {}
        if token or self.token:
            user["token"] = token or self.token
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": cluster}],
            "users": [{"name": "fake", "user": user}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": "default"}}],
            "current-context": "fake",
        }
        path.write_text(json.dumps(kubeconfig, indent=2), encoding="utf-8")
        return path

    # -- objects ----------------------------------------------------------------------------------
    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace an object (by its apiVersion, kind, namespace and name); returns the stored copy."""
        group = obj["apiVersion"].split("/")[0]
        key = (group, obj["metadata"]["namespace"], KIND_PLURALS[obj["kind"]], obj["metadata"]["name"])
        with self._store.lock:
            stored = copy.deepcopy(obj)
            stored["metadata"]["resourceVersion"] = self._store.next_version()
            self._store.objects[key] = stored
            return copy.deepcopy(stored)

    def get(self, group: str, namespace: str, plural: str, name: str) -> dict[str, Any]:
        """The stored object (after any emulated ArgoCD progress)."""
        with self._store.lock:
            _advance_argo(self._store)
            return copy.deepcopy(self._store.objects[(group, namespace, plural, name)])

    def set_argocd_behaviour(self, namespace: str, name: str, mode: str, delay_s: float = 0.2) -> None:
        """How the Application reacts to a sync operation (see ArgoBehaviour); `running` marks one running now."""
        with self._store.lock:
            self._store.argo[(namespace, name)] = ArgoBehaviour(mode=mode, delay_s=delay_s)
            if mode == "running":
                app = self._store.objects[("argoproj.io", namespace, "applications", name)]
                app.setdefault("status", {})["operationState"] = {
                    "phase": "Running",
                    "startedAt": "2026-11-26T08:00:00Z",
                    "message": "waiting for completion of hook batch/Job/canary-analysis",
                    "operation": {"sync": {"revision": "0" * 40}},
                }

    def answer_with_html(self, page: str = "<!DOCTYPE html><html><body>Sign in to continue</body></html>") -> None:
        """From now on answer every request HTTP 200 with an HTML page, as a proxy or a login page would."""
        with self._store.lock:
            self._store.html_page = page

    def simulate_concurrent_writes(self, group: str, namespace: str, plural: str, name: str, times: int) -> None:
        """After each of the next `times` GETs of the object, another writer changes it (bumps resourceVersion)."""
        with self._store.lock:
            self._store.concurrent_writes[(group, namespace, plural, name)] = times

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request served so far, in order."""
        with self._store.lock:
            return list(self._store.requests)

    def patches(self, plural: str | None = None) -> list[RecordedRequest]:
        """The PATCH requests that succeeded (optionally only for one resource plural)."""
        return [
            r
            for r in self.requests
            if r.method == "PATCH" and r.status == 200 and (plural is None or f"/{plural}/" in r.path)
        ]


def _advance_argo(store: _Store) -> None:
    """Emulate the ArgoCD controller: act on requested operations whose delay has passed (lock held)."""
    now = time.time()
    for (namespace, name), behaviour in store.argo.items():
        app = store.objects.get(("argoproj.io", namespace, "applications", name))
        if app is None:
            continue
        operation = app.get("operation")
        if operation and behaviour.requested_at is None and behaviour.mode != "running":
            behaviour.requested_at = now
            behaviour.requested_revision = (operation.get("sync") or {}).get("revision")
        metadata = app.setdefault("metadata", {})
        if (metadata.get("annotations") or {}).get("argocd.argoproj.io/refresh"):
            metadata["annotations"].pop("argocd.argoproj.io/refresh")  # the controller consumes it
            metadata["resourceVersion"] = store.next_version()
        if behaviour.requested_at is None or now - behaviour.requested_at < behaviour.delay_s:
            continue
        if behaviour.mode == "sync":
            status = app.setdefault("status", {})
            status["sync"] = {"status": "Synced", "revision": behaviour.requested_revision}
            status["synced_at"] = now  # not an ArgoCD field: lets tests order events
            status["operationState"] = {
                "phase": "Succeeded",
                "message": "successfully synced (all tasks run)",
                "operation": operation or {},
                "syncResult": {"revision": behaviour.requested_revision},
            }
            app.pop("operation", None)
        elif behaviour.mode == "fail":
            app.setdefault("status", {})["operationState"] = {
                "phase": "Failed",
                "message": "one or more objects failed to apply",
                "operation": operation or {},
            }
            app.pop("operation", None)
        else:
            continue
        metadata["resourceVersion"] = store.next_version()
        behaviour.requested_at = None


class _Handler(BaseHTTPRequestHandler):
    store: _Store
    token: str | None
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # like a real API server: no 40 ms Nagle/delayed-ACK stall per response

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, code: int, payload: dict[str, Any], body: Any = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.store.requests.append(
            RecordedRequest(
                method=self.command,
                path=self.path,
                content_type=self.headers.get("Content-Type"),
                body=body,
                status=code,
                authorization=self.headers.get("Authorization"),
                at=time.time(),
            )
        )

    def _html_instead(self) -> bool:
        """Answer with the HTML page, if one is set; True if it was sent."""
        if self.store.html_page is None:
            return False
        data = self.store.html_page.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        return True

    def _locate(self) -> tuple[tuple[str, str, str, str], str] | None:
        match = _PATH.match(self.path.split("?")[0])
        if not match:
            return None
        key = (match["group"], match["ns"], match["plural"], match["name"])
        return key, match["version"]

    def _authorised(self) -> bool:
        scheme, _, credential = (self.headers.get("Authorization") or "").partition(" ")
        if self.token is None or (scheme.lower() == "bearer" and credential == self.token):
            return True
        self._reply(401, _status(401, "Unauthorized", "Unauthorized"))
        return False

    def do_GET(self) -> None:
        with self.store.lock:
            if self._html_instead() or not self._authorised():
                return
            located = self._locate()
            if located is None:
                self._reply(
                    404, _status(404, "NotFound", f"the server could not find the requested resource {self.path}")
                )
                return
            key, version = located
            _advance_argo(self.store)
            obj = self.store.objects.get(key)
            if obj is None:
                self._reply(404, _status(404, "NotFound", f'{key[2]}.{key[0]} "{key[3]}" not found'))
                return
            served = copy.deepcopy(obj)
            served["apiVersion"] = f"{key[0]}/{version}"
            self._reply(200, served)
            remaining = self.store.concurrent_writes.get(key, 0)
            if remaining > 0:
                self.store.concurrent_writes[key] = remaining - 1
                annotations = obj.setdefault("metadata", {}).setdefault("annotations", {})
                annotations["fake-kube-api/other-writer"] = str(remaining)
                obj["metadata"]["resourceVersion"] = self.store.next_version()

    def do_PATCH(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        with self.store.lock:
            if self._html_instead() or not self._authorised():
                return
            try:
                body = json.loads(raw or b"null")
            except ValueError:
                self._reply(400, _status(400, "BadRequest", "the patch is not JSON"), raw.decode(errors="replace"))
                return
            content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            if content_type != MERGE_PATCH:
                self._reply(
                    415,
                    _status(
                        415,
                        "UnsupportedMediaType",
                        f"the body of the request was in an unknown format - "
                        f"accepted media types include: {MERGE_PATCH}",
                    ),
                    body,
                )
                return
            located = self._locate()
            obj = self.store.objects.get(located[0]) if located else None
            if located is None or obj is None:
                name = located[0][3] if located else self.path
                self._reply(404, _status(404, "NotFound", f'"{name}" not found'), body)
                return
            key, version = located
            wanted = ((body or {}).get("metadata") or {}).get("resourceVersion")
            current = obj["metadata"]["resourceVersion"]
            if wanted is not None and wanted != current:
                message = (
                    f'Operation cannot be fulfilled on {key[2]}.{key[0]} "{key[3]}": the object has been modified; '
                    "please apply your changes to the latest version and try again"
                )
                self._reply(409, _status(409, "Conflict", message), body)
                return
            merged = merge_patch(obj, body)
            merged["metadata"]["resourceVersion"] = self.store.next_version()
            self.store.objects[key] = merged
            served = copy.deepcopy(merged)
            served["apiVersion"] = f"{key[0]}/{version}"
            self._reply(200, served, body)


def _self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl CLI), usable as its own CA file."""
    cert, key = directory / "fake-kube-api.crt", directory / "fake-kube-api.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=fake-kube-api",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def virtual_service_object(
    name: str = "reviews", namespace: str = "shop", stable: int = 90, canary: int = 10
) -> dict[str, Any]:
    """A live VirtualService like the fixture's: a header route to the canary and a weighted split."""
    return {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": namespace, "generation": 3},
        "spec": {
            "hosts": ["reviews"],
            "http": [
                {
                    "name": "testers",
                    "match": [{"headers": {"x-canary": {"exact": "always"}}}],
                    "route": [{"destination": {"host": "reviews", "subset": "v2"}}],
                },
                {
                    "name": "primary",
                    "route": [
                        {
                            "destination": {"host": "reviews", "subset": "v1", "port": {"number": 9080}},
                            "weight": stable,
                        },
                        {
                            "destination": {"host": "reviews", "subset": "v2", "port": {"number": 9080}},
                            "weight": canary,
                        },
                    ],
                    "timeout": "3s",
                },
            ],
        },
    }


def application_object(name: str = "reviews", namespace: str = "argocd", revision: str = "0" * 40) -> dict[str, Any]:
    """An idle ArgoCD Application, synced to `revision`."""
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "project": "default",
            "source": {"repoURL": "https://git.example.com/shop/deploy.git", "path": "k8s", "targetRevision": "main"},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": "shop"},
            "syncPolicy": {"automated": {"selfHeal": True, "prune": False}},
        },
        "status": {
            "sync": {"status": "Synced", "revision": revision},
            "operationState": {"phase": "Succeeded", "operation": {"sync": {"revision": revision}}},
        },
    }

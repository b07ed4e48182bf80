"""A bare repository served over Git's smart HTTP on loopback (`git http-backend`): the demo's remote for image steps.

With --step-image the demo's steps push as uid 65532 from inside the image; a push over a file path
would run the remote's hooks (the sandbox's post-receive, this machine's Python) in there. Over
HTTP, as to a Git server on a cluster, git-receive-pack and its hooks run here, as this process's user.
"""

from __future__ import annotations

import base64
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class GitHttpRemote:
    """A bare repository served over Git's smart HTTP on loopback (`git http-backend`); no auth, or HTTP
    basic auth when `basic_auth` (user, password) is given (as a Git host asks a token for).

    For steps in the image, a Git server as on a cluster: their pushes run git-receive-pack and its
    hooks here, as this process's user, instead of inside the image through a file path. The tests of
    Git credentials use it with basic auth; its sibling repositories are served too (`url_for`).
    """

    def __init__(self, repo: Path, basic_auth: tuple[str, str] | None = None) -> None:
        self.repo = Path(repo).resolve()
        root = self.repo.parent
        user = basic_auth[0] if basic_auth else "rollguard"
        expected = None if basic_auth is None else "Basic " + base64.b64encode(":".join(basic_auth).encode()).decode()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self.serve()

            def do_POST(self) -> None:
                self.serve()

            def serve(self) -> None:
                if expected is not None and self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="git"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                path, _, query = self.path.partition("?")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GIT_PROJECT_ROOT": str(root),
                       "GIT_HTTP_EXPORT_ALL": "1", "REQUEST_METHOD": self.command, "PATH_INFO": path,
                       "QUERY_STRING": query, "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                       "CONTENT_LENGTH": str(len(body)), "REMOTE_USER": user, "REMOTE_ADDR": "127.0.0.1",
                       "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
                       "GIT_PROTOCOL": self.headers.get("Git-Protocol", "")}  # fmt: skip
                done = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True,
                                      timeout=120, check=False)  # fmt: skip
                separator = b"\r\n\r\n" if b"\r\n\r\n" in done.stdout else b"\n\n"
                head, _, payload = done.stdout.partition(separator)
                status, headers = 200, []
                for line in head.decode(errors="replace").splitlines():
                    name, _, value = line.partition(":")
                    if name.lower() == "status":
                        status = int(value.split()[0])
                    elif name:
                        headers.append((name, value.strip()))
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="git-http", daemon=True)  # fmt: skip

    @property
    def url(self) -> str:
        """The served repository's URL."""
        return self.url_for()

    def url_for(self, repo: str | None = None, userinfo: str = "") -> str:
        """The URL of `repo` (a sibling of the served repository; default: itself), with `userinfo` ("user:pw@")."""
        return f"http://{userinfo}127.0.0.1:{self.server.server_address[1]}/{repo or self.repo.name}"

    def __enter__(self) -> GitHttpRemote:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

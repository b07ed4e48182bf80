"""Loopback HTTP servers that misbehave the way a sick Prometheus (or the proxy in front of it) does."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def trickling_server(byte_every_s: float = 0.3) -> Iterator[str]:
    """A server that answers every request with a valid-looking HTTP 200, one byte every `byte_every_s`:
    each read gets a byte in time, so only a deadline for the whole request ends the wait. Yields its URL."""
    body = b'{"status":"success","data":{"resultType":"vector","result":[]}}' + b" " * 100_000
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + (
        f"Content-Length: {len(body)}\r\n\r\n".encode()) + body
    stopped = threading.Event()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.2)

    def trickle(connection: socket.socket) -> None:
        with connection:
            try:
                connection.recv(65536)  # the request
                for index in range(len(answer)):
                    if stopped.wait(byte_every_s):
                        return
                    connection.sendall(answer[index:index + 1])
            except OSError:
                return  # the client gave up

    def accept() -> None:
        while not stopped.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=trickle, args=(connection,), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stopped.set()
        acceptor.join(timeout=5)
        listener.close()


@contextmanager
def answering_server(status: int, body: bytes) -> Iterator[tuple[str, list[str]]]:
    """A server that answers every request with `status` and `body` as given (Prometheus's content type).
    Yields its URL and the list of request paths it saw."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

"""HTTP/1.1 over a Unix socket: how the gateway reaches an Envoy admin API that no other
user can (the runner's admin requests, the metrics endpoint's stats scrape)."""

from __future__ import annotations

import http.client
import socket


class UnixHTTPConnection(http.client.HTTPConnection):
    """An http.client connection whose transport is the Unix socket at ``path``."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def request(target: str, method: str, path: str, timeout: float) -> tuple[int, bytes]:
    """``method path`` at ``target``: a Unix socket's path (starting with /), or HOST:PORT.
    Returns the status and the whole body (http.client undoes chunking)."""
    connection: http.client.HTTPConnection
    if target.startswith("/"):
        connection = UnixHTTPConnection(target, timeout)
    else:
        host, port = target.rsplit(":", 1)
        connection = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=timeout)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()

"""A fake OpenAI-compatible provider for the tests: answers chat completions (plain and
streamed) and records every request it receives, exactly as received."""

from __future__ import annotations

import json
import random
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports on 127.0.0.1.

    Looked for below the kernel's ephemeral range: in it, the client ends of closed
    connections sit in TIME_WAIT for a minute, and a port next to a free one is then often
    taken (after a run that opened thousands of connections, 100 tries of two consecutive
    ports there all failed)."""
    low, _ = _ephemeral_range()
    rng = random.Random()
    for _ in range(200):
        first = rng.randrange(10_000, max(10_001, low - count))
        taken: list[socket.socket] = []
        try:
            for port in range(first, first + count):
                s = socket.socket()
                taken.append(s)
                # As the servers bind: a port some closed connection left in TIME_WAIT is free.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for s in taken:
                s.close()
    raise OSError(f"no {count} consecutive free ports")


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(n) for n in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    raw_body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.raw_body)


@dataclass
class FakeProvider:
    """``name`` is put in every answer so a test sees which provider served it."""

    name: str
    stream_pause_s: float = 0.0  # pause after the first streamed chunk
    reply_delay_s: float = 0.0  # pause before answering a request that is not streamed
    tls: ssl.SSLContext | None = None  # serve HTTPS with this server context
    extra_headers: dict[str, str] = field(default_factory=dict)  # on every answer
    received: list[Received] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)  # TLS SNI per handshake
    port: int = 0
    _server: ThreadingHTTPServer | None = None

    def base_url(self, prefix: str = "/v1", host: str = "127.0.0.1") -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host}:{self.port}{prefix}"

    def start(self) -> FakeProvider:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Without it each answer waits ~40 ms on Nagle + delayed ACK.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                raw = self.rfile.read(length)
                provider.received.append(
                    Received(
                        "POST", self.path, {k.lower(): v for k, v in self.headers.items()}, raw
                    )
                )
                body = json.loads(raw)
                if body.get("stream"):
                    self._stream(body)
                else:
                    time.sleep(provider.reply_delay_s)
                    self._send(200, _completion(provider.name, body))

            def do_GET(self) -> None:
                provider.received.append(
                    Received("GET", self.path, {k.lower(): v for k, v in self.headers.items()}, b"")
                )
                self._send(404, {"error": {"message": "fake provider: no such path"}})

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self._extra_headers()
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, body: dict[str, Any]) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("transfer-encoding", "chunked")
                self._extra_headers()
                self.end_headers()
                words = [f"from {provider.name}", " streamed", " reply"]
                for i, word in enumerate(words):
                    chunk = {
                        "id": "chatcmpl-fake",
                        "object": "chat.completion.chunk",
                        "created": int(time.time()),
                        "model": body["model"],
                        "choices": [
                            {"index": 0, "delta": {"content": word}, "finish_reason": None}
                        ],
                    }
                    self._chunk(f"data: {json.dumps(chunk)}\n\n".encode())
                    if i == 0 and provider.stream_pause_s:
                        time.sleep(provider.stream_pause_s)
                self._chunk(b"data: [DONE]\n\n")
                self._chunk(b"")

            def _extra_headers(self) -> None:
                for name, value in provider.extra_headers.items():
                    self.send_header(name, value)

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

        class Server(ThreadingHTTPServer):
            request_queue_size = 4096  # the load tests open a thousand connections at once

        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        if self.tls is not None:
            self.tls.sni_callback = lambda sock, name, ctx: self.server_names.append(name)
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def _completion(name: str, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": f"from {name}"},
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }

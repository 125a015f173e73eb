"""Local fakes of the provider APIs the gateway talks to, for the integration tests.

- ``FakeOpenAI``: OpenAI's chat completions (``POST {prefix}/chat/completions``), as OpenAI
  and the OpenAI-compatible servers (vLLM, DeepSeek, ...) speak it.
- ``FakeAnthropic``: Anthropic's Messages API (``POST {prefix}/messages`` and
  ``POST {prefix}/messages/count_tokens``).
- ``FakeAzureOpenAI``: Azure OpenAI's deployment API
  (``POST {prefix}/openai/deployments/{deployment-id}/chat/completions?api-version=...``,
  the key in ``api-key``), answering as ``FakeOpenAI`` with Azure's additions.

Each one refuses what the real API refuses, with the real status and error shape (so a
translation the real API would reject fails the test instead of passing against a lenient
fake), answers in that API's exact wire format (a JSON body, or its server-sent events),
records every request exactly as it arrived, and can be told to fail the next requests the
ways real providers fail.

Scripting (the same ``Reply`` is rendered by either fake in its own format)::

    fake.script(Reply(text="hi"), "plain text", lambda request: Reply(...))  # next replies
    fake.responder = lambda request: Reply(...)   # once the script is used up
    # otherwise: Reply(text=f"from {name}: {last user text}")
    fake.fail(Failure.error(429, retry_after=1), None, Failure.disconnect())  # next requests

A failure is taken for every request, in arrival order, before the request is validated
(``None`` in the queue lets one request through); a scripted reply is taken only by a valid
request that produces a message (not by a refused one, nor by count_tokens).

Recording: ``fake.received`` (a list of ``Recorded``, appended under a lock: method, path
with its query, lower-cased headers, raw body, ``.json``, ``.route``, ``.query``);
``fake.wait_for(n)`` blocks until n requests arrived.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import re
import socket
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from tests.fakes import Received

__all__ = [
    "AZURE_API_VERSIONS",
    "Failure",
    "FakeAnthropic",
    "FakeAzureOpenAI",
    "FakeOpenAI",
    "Recorded",
    "Reply",
    "ToolCall",
    "estimate_input_tokens",
    "thinking_signature",
]


# ---------------------------------------------------------------------------------------------
# What a test scripts


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]
    id: str | None = None  # None: a fresh id in the provider's style (call_..., toolu_...)


# Stop reasons are written in Anthropic's words; OpenAI's are accepted too and mapped.
_TO_ANTHROPIC_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
_TO_OPENAI_STOP = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
    "model_context_window_exceeded": "length",
}


@dataclass(frozen=True)
class Reply:
    """One answer, provider-neutral. OpenAI: ``content``, ``tool_calls``,
    ``reasoning_content`` (as DeepSeek and vLLM send reasoning). Anthropic: a thinking block
    (signed), a redacted_thinking block, a text block, tool_use blocks, in that order."""

    text: str | None = None
    tool_calls: Sequence[ToolCall] = ()
    thinking: str | None = None
    signature: str | None = None  # Anthropic; None: the fake's own signature of `thinking`
    redacted_thinking: str | None = None  # Anthropic only: the block's opaque `data`
    # end_turn | max_tokens | stop_sequence | tool_use | refusal (or OpenAI's stop | length |
    # tool_calls); None: tool_use when there are tool calls, max_tokens when the text had to
    # be cut to the request's max_tokens, else end_turn.
    stop: str | None = None
    stop_sequence: str | None = None
    input_tokens: int | None = None  # None: estimate_input_tokens(request), as count_tokens
    output_tokens: int | None = None  # None: an estimate of what the reply holds
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    model: str | None = None  # None: the request's model
    pause_s: float | None = None  # between streamed events; None: the fake's event_pause_s


ReplySpec = Reply | str | Callable[["Recorded"], "Reply | str"]


@dataclass(frozen=True)
class Failure:
    """How one request fails. Build with the class methods."""

    kind: str
    status: int = 0
    retry_after: float | str | None = None
    message: str | None = None
    error_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    seconds: float = 0.0
    after_events: int = 0
    body: bytes = b""

    @classmethod
    def error(
        cls,
        status: int,
        *,
        retry_after: float | str | None = None,
        message: str | None = None,
        error_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Failure:
        """An error status with the provider's own error body (and ``retry-after`` if
        given). The error type follows from the status unless named: Anthropic 529 is
        overloaded_error, 429 rate_limit_error, 500 api_error; OpenAI 429 is
        rate_limit_exceeded, 5xx server_error."""
        return cls(
            "error",
            status=status,
            retry_after=retry_after,
            message=message,
            error_type=error_type,
            headers=tuple((headers or {}).items()),
        )

    @classmethod
    def hang(cls, seconds: float) -> Failure:
        """Send nothing for ``seconds``, then answer normally (a slow or stuck provider:
        the caller's timeout decides which it is). ``stop()`` ends the wait early."""
        return cls("hang", seconds=seconds)

    @classmethod
    def disconnect(cls) -> Failure:
        """Close the connection before sending any header."""
        return cls("disconnect")

    @classmethod
    def cut(cls, after_events: int) -> Failure:
        """A streamed answer: close the connection after ``after_events`` SSE events (the
        terminating chunk never comes). Not streamed: the headers and half the body."""
        return cls("cut", after_events=after_events)

    @classmethod
    def stream_error(
        cls,
        after_events: int,
        *,
        status: int | None = None,
        message: str | None = None,
        error_type: str | None = None,
    ) -> Failure:
        """A streamed answer that reports an error after ``after_events`` events and ends,
        as both APIs do once a 200 is sent: Anthropic an ``event: error`` (default
        overloaded_error), OpenAI a ``data: {"error": ...}`` chunk (default server_error).
        Not streamed: the error status instead."""
        return cls(
            "stream_error",
            status=status or 0,
            after_events=after_events,
            message=message,
            error_type=error_type,
        )

    @classmethod
    def raw(
        cls,
        status: int,
        body: bytes | str,
        *,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> Failure:
        """Any answer, verbatim (an HTML 502 from a proxy, a 200 with an error body, ...)."""
        data = body.encode() if isinstance(body, str) else body
        return cls(
            "raw",
            status=status,
            body=data,
            headers=(("content-type", content_type), *(headers or {}).items()),
        )


@dataclass
class Recorded(Received):
    """A request exactly as received: ``path`` keeps its query, ``headers`` has lower-cased
    names (a repeated header's values joined with ", "), ``raw_body`` the bytes after any
    chunked transfer-encoding is undone."""

    raw_headers: list[tuple[str, str]] = field(default_factory=list)  # names as sent, in order
    at: float = 0.0  # time.monotonic() once the body was read

    @property
    def route(self) -> str:
        return urlsplit(self.path).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.path).query, keep_blank_values=True)


# ---------------------------------------------------------------------------------------------
# Shared helpers


class _ApiError(Exception):
    def __init__(
        self,
        status: int,
        error_type: str,
        message: str,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.param = param
        self.code = code


class _StreamEnded(Exception):
    """A failure ended the stream early; ``drop`` says whether to close the connection."""

    def __init__(self, drop: bool) -> None:
        self.drop = drop


def _tokens(chars: int) -> int:
    return (chars + 3) // 4


def _chars(value: Any) -> int:
    """Characters of text in a JSON value; an image or document source counts as ~1000
    tokens (its base64 is not text the model reads)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        if value.get("type") in ("base64", "url") and ("data" in value or "url" in value):
            return 4000
        return sum(_chars(v) for v in value.values())
    if isinstance(value, list):
        return sum(_chars(v) for v in value)
    if isinstance(value, bool) or value is None:
        return 0
    return len(str(value))


def estimate_input_tokens(body: dict[str, Any]) -> int:
    """The fakes' deterministic input-token count (count_tokens answers it, and usage
    reports it unless a reply says otherwise): a token per 4 characters of text in
    ``system``, ``messages`` and ``tools``, plus 3 per message."""
    messages = body.get("messages") if isinstance(body.get("messages"), list) else []
    chars = _chars(body.get("system")) + _chars(messages) + _chars(body.get("tools"))
    return _tokens(chars) + 3 * len(messages or [])


_SIGNING_KEY = b"plano-extproc fake anthropic"


def thinking_signature(thinking: str) -> str:
    """The signature FakeAnthropic gives a thinking block, and the one it checks when the
    block is sent back (the real API verifies its signatures the same way)."""
    digest = hmac.new(_SIGNING_KEY, thinking.encode(), hashlib.sha256).digest()
    return base64.b64encode(b"fake-sig:" + digest).decode()


def _text_pieces(text: str) -> list[str]:
    """Streamed text: a piece per word (with its trailing space), as models stream."""
    return re.findall(r"\s*\S+\s*|\s+", text) or [text]


def _fragments(text: str, count: int = 3) -> list[str]:
    """JSON arguments streamed in several fragments, cut anywhere (mid-key, mid-string)."""
    if len(text) < count:
        return [text]
    size = -(-len(text) // count)
    return [text[i : i + size] for i in range(0, len(text), size)]


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if "chunked" in handler.headers.get("transfer-encoding", "").lower():
        parts: list[bytes] = []
        while True:
            line = handler.rfile.readline(65537)
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            parts.append(handler.rfile.read(size))
            handler.rfile.readline()
    return handler.rfile.read(int(handler.headers.get("content-length") or 0))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Without it every answer waits ~40 ms on Nagle + delayed ACK.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.fake._track(self.connection, True)

    def finish(self) -> None:
        with contextlib.suppress(OSError):  # the fake (or the client) already closed it
            super().finish()
        self.server.fake._track(self.connection, False)

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.server.fake._serve(self)

    do_GET = do_PUT = do_PATCH = do_DELETE = do_POST


class _Server(ThreadingHTTPServer):
    request_queue_size = 4096  # load tests open a thousand connections at once
    daemon_threads = True
    fake: _Fake

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away mid-answer is expected in these tests


class _Stream:
    """Writes one SSE answer as HTTP chunks, applying the pause and any stream failure."""

    def __init__(self, fake: _Fake, handler: _Handler, failure: Failure | None, pause: float):
        self.fake, self.handler, self.failure, self.pause = fake, handler, failure, pause
        self.sent = 0

    def event(self, data: bytes) -> None:
        failure = self.failure
        if failure is not None and self.sent >= failure.after_events:
            if failure.kind == "cut":
                raise _StreamEnded(drop=True)
            if failure.kind == "stream_error":
                self._chunk(self.fake._stream_error_event(failure))
                raise _StreamEnded(drop=False)
        if self.sent and self.pause:
            self.fake._stopping.wait(self.pause)
        self._chunk(data)
        self.sent += 1

    def end(self) -> None:
        self._chunk(b"")

    def _chunk(self, data: bytes) -> None:
        self.handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")


class _Fake:
    """The HTTP server, recording, scripting and failures both fakes share."""

    def __init__(
        self,
        name: str,
        *,
        api_key: str | None = None,
        prefix: str = "/v1",
        tls: ssl.SSLContext | None = None,
        extra_headers: dict[str, str] | None = None,
        event_pause_s: float = 0.0,
    ) -> None:
        self.name = name
        self.api_key = api_key
        self.prefix = prefix.rstrip("/")
        self.tls = tls
        self.extra_headers = dict(extra_headers or {})  # on every answer
        self.event_pause_s = event_pause_s
        self.responder: Callable[[Recorded], Reply | str] | None = None
        self.received: list[Recorded] = []
        self.port = 0
        self._lock = threading.Condition()
        self._replies: deque[ReplySpec] = deque()
        self._failures: deque[Failure | None] = deque()
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: _Server | None = None

    # -- life cycle

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError(f"{self.name} already started")
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        if self.tls is not None:
            server.socket = self.tls.wrap_socket(server.socket, server_side=True)
        self.port = server.server_address[1]
        self._server = server
        # A short poll: stop() waits up to one interval for the serving loop to notice.
        serve = threading.Thread(
            target=server.serve_forever, args=(0.02,), name=self.name, daemon=True
        )
        serve.start()
        return self

    def stop(self) -> None:
        """Stops listening and closes every open connection, so a client's pooled
        keep-alive connection cannot reach a stopped provider either."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> Self:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``scheme://127.0.0.1:port``, no path."""
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def base_url(self, prefix: str | None = None, host: str = "127.0.0.1") -> str:
        """The URL with the fake's prefix (or ``prefix``): what an OpenAI client takes."""
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host}:{self.port}{self.prefix if prefix is None else prefix}"

    # -- scripting and recording

    def script(self, *replies: ReplySpec) -> None:
        """Queue the next replies: a ``Reply``, a string (the reply's text), or a function of
        the ``Recorded`` request returning either."""
        with self._lock:
            self._replies.extend(replies)

    def fail(self, *failures: Failure | None) -> None:
        """Queue how the next requests fail, one per request; ``None`` lets one through."""
        with self._lock:
            self._failures.extend(failures)

    def pending(self) -> tuple[int, int]:
        """Scripted replies and failures not used yet."""
        with self._lock:
            return len(self._replies), len(self._failures)

    def reset(self) -> None:
        """Forget the recordings, the script, the failures and the responder."""
        with self._lock:
            self.received.clear()
            self._replies.clear()
            self._failures.clear()
            self.responder = None

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Recorded]:
        """Blocks until ``count`` requests were received; returns them all."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self.received) >= count, timeout):
                raise AssertionError(
                    f"{self.name}: {len(self.received)} requests received, expected {count}"
                )
            return list(self.received)

    @property
    def last(self) -> Recorded:
        with self._lock:
            return self.received[-1]

    # -- serving

    def _track(self, connection: socket.socket, open_: bool) -> None:
        with self._lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def _serve(self, handler: _Handler) -> None:
        try:
            raw = _read_body(handler)
            headers: dict[str, str] = {}
            for key, value in handler.headers.items():
                name = key.lower()
                headers[name] = f"{headers[name]}, {value}" if name in headers else value
            recorded = Recorded(
                handler.command,
                handler.path,
                headers,
                raw,
                raw_headers=list(handler.headers.items()),
                at=time.monotonic(),
            )
            with self._lock:
                self.received.append(recorded)
                self._lock.notify_all()
                failure = self._failures.popleft() if self._failures else None
            if failure is not None and failure.kind == "hang":
                self._stopping.wait(failure.seconds)
                failure = None
            if failure is not None and failure.kind == "disconnect":
                self._drop(handler)
                return
            if failure is not None and failure.kind == "raw":
                self._send(handler, failure.status, failure.body, failure.headers)
                return
            if failure is not None and failure.kind == "error":
                raise self._injected_error(failure)
            try:
                self._answer(handler, recorded, failure)
            except RecursionError:
                # Nested past what this fake's validators walk: the real APIs refuse these too.
                raise _ApiError(
                    400, "invalid_request_error", "The request nests too deeply."
                ) from None
        except _ApiError as error:
            try:
                self._send_error(handler, error)
            except OSError:
                handler.close_connection = True
        except OSError:
            handler.close_connection = True  # the client went away

    def _injected_error(self, failure: Failure) -> _ApiError:
        raise NotImplementedError

    def _stream_error_event(self, failure: Failure) -> bytes:
        raise NotImplementedError

    def _answer(self, handler: _Handler, recorded: Recorded, failure: Failure | None) -> None:
        raise NotImplementedError

    def _error_payload(self, error: _ApiError, request_id: str) -> dict[str, Any]:
        raise NotImplementedError

    def _request_id_header(self) -> tuple[str, str]:
        raise NotImplementedError

    def _send_error(self, handler: _Handler, error: _ApiError) -> None:
        name, request_id = self._request_id_header()
        headers = [(name, request_id)]
        if isinstance(error, _InjectedError):
            headers.extend(error.headers)
        data = json.dumps(self._error_payload(error, request_id)).encode()
        self._send(handler, error.status, data, headers, request_id=False)

    def _next_reply(self, recorded: Recorded) -> Reply:
        with self._lock:
            spec: ReplySpec | None = self._replies.popleft() if self._replies else None
        if spec is None:
            spec = self.responder
        if spec is None:
            return self._default_reply(recorded.json)
        if callable(spec):
            spec = spec(recorded)
        return Reply(text=spec) if isinstance(spec, str) else spec

    def _default_reply(self, body: dict[str, Any]) -> Reply:
        return Reply(text=f"from {self.name}: {self._last_user_text(body)}")

    @staticmethod
    def _last_user_text(body: dict[str, Any]) -> str:
        for message in reversed(body.get("messages") or []):
            if message.get("role") != "user":
                continue
            content = message.get("content")
            if isinstance(content, str):
                return content
            return " ".join(
                part.get("text", "")
                for part in content or []
                if isinstance(part, dict) and part.get("type") == "text"
            )
        return ""

    def _parse_json(self, recorded: Recorded) -> Any:
        try:
            return json.loads(recorded.raw_body)
        except ValueError:
            return _NOT_JSON

    def _send(
        self,
        handler: _Handler,
        status: int,
        data: bytes,
        headers: Sequence[tuple[str, str]] = (),
        cut: bool = False,
        request_id: bool = True,
    ) -> None:
        handler.send_response(status)
        names = {name.lower() for name, _ in headers}
        if "content-type" not in names:
            handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(data)))
        if request_id:
            handler.send_header(*self._request_id_header())
        for name, value in (*self.extra_headers.items(), *headers):
            handler.send_header(name, value)
        handler.end_headers()
        if cut:
            handler.wfile.write(data[: len(data) // 2])
            self._drop(handler)
            return
        handler.wfile.write(data)

    def _send_json(
        self,
        handler: _Handler,
        status: int,
        payload: Any,
        headers: Sequence[tuple[str, str]] = (),
        cut: bool = False,
    ) -> None:
        self._send(handler, status, json.dumps(payload).encode(), headers, cut)

    def _start_stream(self, handler: _Handler, failure: Failure | None, pause: float) -> _Stream:
        handler.send_response(200)
        handler.send_header("content-type", "text/event-stream; charset=utf-8")
        handler.send_header("cache-control", "no-cache")
        handler.send_header("transfer-encoding", "chunked")
        handler.send_header(*self._request_id_header())
        for name, value in self.extra_headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        return _Stream(self, handler, failure, pause)

    def _run_stream(self, handler: _Handler, stream: _Stream, events: Iterator[bytes]) -> None:
        try:
            for event in events:
                stream.event(event)
        except _StreamEnded as ended:
            if ended.drop:
                self._drop(handler)
                return
        stream.end()

    @staticmethod
    def _drop(handler: _Handler) -> None:
        handler.close_connection = True
        with contextlib.suppress(OSError):
            handler.connection.shutdown(socket.SHUT_RDWR)


_NOT_JSON = object()


# ---------------------------------------------------------------------------------------------
# OpenAI chat completions


_OPENAI_ROLES = ("system", "assistant", "user", "function", "tool", "developer")
_OPENAI_PART_TYPES = ("text", "image_url", "input_audio", "refusal", "audio", "file")
_OPENAI_PARTS_BY_ROLE = {
    "user": {"text", "image_url", "input_audio", "file"},
    "system": {"text"},
    "developer": {"text"},
    "tool": {"text"},
    "assistant": {"text", "refusal"},
}
_OPENAI_ERRORS = {
    400: ("invalid_request_error", None, "Bad request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: (
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The server is overloaded or not ready yet."),
    504: ("server_error", None, "Gateway timeout."),
}
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def _supported(values: Sequence[str]) -> str:
    quoted = [f"'{value}'" for value in values]
    return ", ".join(quoted[:-1]) + f", and {quoted[-1]}"


class FakeOpenAI(_Fake):
    """OpenAI's chat completions at ``POST {prefix}/chat/completions``.

    ``api_key``: when set, ``Authorization: Bearer <api_key>`` is required (401 otherwise).
    ``prefix``: the path the API sits under (``/v1``; a provider's base_url path).
    ``event_pause_s``: pause between streamed chunks (to see that streaming is unbuffered).
    ``tls``: serve HTTPS with this server context. ``extra_headers``: on every answer.
    """

    def _request_id_header(self) -> tuple[str, str]:
        return ("x-request-id", f"req_{uuid.uuid4().hex}")

    def _error_payload(self, error: _ApiError, request_id: str) -> dict[str, Any]:
        return {
            "error": {
                "message": error.message,
                "type": error.error_type,
                "param": error.param,
                "code": error.code,
            }
        }

    def _injected_error(self, failure: Failure) -> _ApiError:
        default = "server_error" if failure.status >= 500 else "invalid_request_error"
        error_type, code, message = _OPENAI_ERRORS.get(
            failure.status, (default, None, f"Error {failure.status}.")
        )
        return _InjectedError(
            failure, failure.error_type or error_type, failure.message or message, code
        )

    def _stream_error_event(self, failure: Failure) -> bytes:
        status = failure.status or 500
        error_type, code, message = _OPENAI_ERRORS.get(status, ("server_error", None, "Error."))
        error = {
            "message": failure.message or message,
            "type": failure.error_type or error_type,
            "param": None,
            "code": code,
        }
        return f"data: {json.dumps({'error': error})}\n\n".encode()

    def _answer(self, handler: _Handler, recorded: Recorded, failure: Failure | None) -> None:
        if self.api_key is not None:
            self._check_auth(recorded)
        if recorded.method != "POST" or recorded.route != f"{self.prefix}/chat/completions":
            raise _ApiError(
                404,
                "invalid_request_error",
                f"Invalid URL ({recorded.method} {recorded.route})",
            )
        body = self._parse_json(recorded)
        if body is _NOT_JSON or not isinstance(body, dict):
            raise _ApiError(
                400,
                "invalid_request_error",
                "We could not parse the JSON body of your request. (HINT: This likely means "
                "you aren't using your HTTP library correctly. The OpenAI API expects a JSON "
                "payload, but what was sent was not valid JSON.)",
            )
        _validate_chat(body)
        reply = self._next_reply(recorded)
        if failure is not None and failure.kind == "stream_error" and not body.get("stream"):
            raise self._injected_error(failure)
        rendered = _OpenAIRendering(reply, body)
        if body.get("stream") is True:
            pause = self.event_pause_s if reply.pause_s is None else reply.pause_s
            stream = self._start_stream(handler, failure, pause)
            self._run_stream(handler, stream, rendered.chunks())
        else:
            cut = failure is not None and failure.kind == "cut"
            self._send_json(handler, 200, rendered.completion(), cut=cut)

    def _check_auth(self, recorded: Recorded) -> None:
        authorization = recorded.headers.get("authorization", "")
        if not authorization:
            raise _ApiError(
                401,
                "invalid_request_error",
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or key.strip() != self.api_key:
            shown = key.strip()[:3] + "*" * 4 + key.strip()[-4:] if key else authorization
            raise _ApiError(
                401,
                "invalid_request_error",
                f"Incorrect API key provided: {shown}.",
                code="invalid_api_key",
            )


class _InjectedError(_ApiError):
    """An error a test asked for: its status, and its extra headers (retry-after)."""

    def __init__(
        self, failure: Failure, error_type: str, message: str, code: str | None = None
    ) -> None:
        super().__init__(failure.status, error_type, message, code=code)
        self.headers = list(failure.headers)
        if failure.retry_after is not None:
            self.headers.append(("retry-after", str(failure.retry_after)))


def _invalid(message: str, param: str | None = None, code: str | None = None) -> _ApiError:
    return _ApiError(400, "invalid_request_error", message, param, code)


def _missing(param: str) -> _ApiError:
    return _invalid(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")


def _wrong_type(param: str, expected: str, value: Any) -> _ApiError:
    return _invalid(
        f"Invalid type for '{param}': expected {expected}, but got {_json_type(value)} instead.",
        param,
        "invalid_type",
    )


def _validate_chat(body: dict[str, Any]) -> None:
    """What OpenAI checks before a model runs, with its messages, params and codes."""
    if "model" not in body:
        raise _invalid("you must provide a model parameter")
    if not isinstance(body["model"], str):
        raise _wrong_type("model", "a string", body["model"])
    if "messages" not in body:
        raise _missing("messages")
    messages = body["messages"]
    if not isinstance(messages, list):
        raise _wrong_type("messages", "an array", messages)
    if not messages:
        raise _invalid(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
            "messages",
            "empty_array",
        )
    for i, message in enumerate(messages):
        _validate_chat_message(i, message)
    _validate_tool_pairing(messages)
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise _wrong_type("tools", "an array", tools)
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict):
                raise _wrong_type(f"tools[{i}]", "an object", tool)
            if tool.get("type") != "function":
                raise _invalid(
                    f"Invalid value: '{tool.get('type')}'. Supported values are: 'function' "
                    "and 'custom'.",
                    f"tools[{i}].type",
                    "invalid_value",
                )
            function = tool.get("function")
            if not isinstance(function, dict) or "name" not in function:
                raise _missing(f"tools[{i}].function.name")
            if not isinstance(function["name"], str) or not _TOOL_NAME.match(function["name"]):
                raise _invalid(
                    f"Invalid 'tools[{i}].function.name': string does not match pattern. "
                    "Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'.",
                    f"tools[{i}].function.name",
                    "invalid_value",
                )
            if "parameters" in function and not isinstance(function["parameters"], dict):
                raise _wrong_type(f"tools[{i}].function.parameters", "an object", function)
    if "tool_choice" in body and body["tool_choice"] is not None:
        choice = body["tool_choice"]
        if not tools:
            raise _invalid(
                "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' "
                "are specified.",
                "tool_choice",
            )
        if isinstance(choice, str) and choice not in ("none", "auto", "required"):
            raise _invalid(
                f"Invalid value: '{choice}'. Supported values are: 'none', 'auto', and 'required'.",
                "tool_choice",
                "invalid_value",
            )
        if not isinstance(choice, str | dict):
            raise _wrong_type("tool_choice", "an object", choice)
    if "stream" in body and body["stream"] is not None and not isinstance(body["stream"], bool):
        raise _wrong_type("stream", "a boolean", body["stream"])
    if body.get("stream_options") is not None and body.get("stream") is not True:
        raise _invalid(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
        )
    for name in ("max_tokens", "max_completion_tokens", "n"):
        value = body.get(name)
        if value is not None and (not _is_int(value) or value < 1):
            if not _is_int(value):
                raise _wrong_type(name, "an integer", value)
            raise _invalid(
                f"Invalid '{name}': integer below minimum value. Expected a value >= 1, "
                f"but got {value} instead.",
                name,
                "integer_below_min_value",
            )
    temperature = body.get("temperature")
    if temperature is not None:
        if not _is_number(temperature):
            raise _wrong_type("temperature", "a number", temperature)
        if not 0 <= temperature <= 2:
            raise _invalid(
                f"Invalid 'temperature': decimal out of range. Expected a value between 0 "
                f"and 2, but got {temperature} instead.",
                "temperature",
                "decimal_above_max_value" if temperature > 2 else "decimal_below_min_value",
            )


def _validate_chat_message(i: int, message: Any) -> None:
    where = f"messages[{i}]"
    if not isinstance(message, dict):
        raise _wrong_type(where, "an object", message)
    if "role" not in message:
        raise _missing(f"{where}.role")
    role = message["role"]
    if role not in _OPENAI_ROLES:
        raise _invalid(
            f"Invalid value: '{role}'. Supported values are: {_supported(_OPENAI_ROLES)}.",
            f"{where}.role",
            "invalid_value",
        )
    content = message.get("content")
    has_calls = bool(message.get("tool_calls") or message.get("function_call"))
    if content is None and not (role == "assistant" and has_calls):
        raise _missing(f"{where}.content")
    if content is not None and not isinstance(content, str):
        if not isinstance(content, list):
            raise _wrong_type(f"{where}.content", "one of a string or array", content)
        for j, part in enumerate(content):
            at = f"{where}.content[{j}]"
            if not isinstance(part, dict):
                raise _wrong_type(at, "an object", part)
            kind = part.get("type")
            if kind not in _OPENAI_PART_TYPES:
                raise _invalid(
                    f"Invalid value: '{kind}'. Supported values are: "
                    f"{_supported(_OPENAI_PART_TYPES)}.",
                    f"{at}.type",
                    "invalid_value",
                )
            if kind not in _OPENAI_PARTS_BY_ROLE.get(role, set(_OPENAI_PART_TYPES)):
                raise _invalid(
                    f"Invalid '{at}.type': content parts of type '{kind}' are not allowed "
                    f"in messages with role '{role}'.",
                    f"{at}.type",
                    "invalid_value",
                )
            if kind == "text" and not isinstance(part.get("text"), str):
                raise _missing(f"{at}.text")
            if kind == "image_url" and not isinstance(
                (part.get("image_url") or {}).get("url"), str
            ):
                raise _missing(f"{at}.image_url.url")
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise _missing(f"{where}.tool_call_id")
    calls = message.get("tool_calls")
    if calls is not None and role == "assistant":
        if not isinstance(calls, list):
            raise _wrong_type(f"{where}.tool_calls", "an array", calls)
        for j, call in enumerate(calls):
            at = f"{where}.tool_calls[{j}]"
            if not isinstance(call, dict):
                raise _wrong_type(at, "an object", call)
            if not isinstance(call.get("id"), str):
                raise _missing(f"{at}.id")
            if "type" not in call:
                raise _missing(f"{at}.type")
            if call["type"] != "function":
                raise _invalid(
                    f"Invalid value: '{call['type']}'. Supported values are: 'function'.",
                    f"{at}.type",
                    "invalid_value",
                )
            function = call.get("function")
            if not isinstance(function, dict):
                raise _missing(f"{at}.function")
            if not isinstance(function.get("name"), str):
                raise _missing(f"{at}.function.name")
            if "arguments" not in function:
                raise _missing(f"{at}.function.arguments")
            if not isinstance(function["arguments"], str):
                raise _wrong_type(f"{at}.function.arguments", "a string", function["arguments"])


def _validate_tool_pairing(messages: list[dict[str, Any]]) -> None:
    """Every tool message answers a call of the assistant message before it, and every
    call is answered before the conversation goes on."""
    pending: list[str] = []
    start = 0
    for i, message in enumerate(messages):
        role = message["role"]
        if role == "tool":
            if message["tool_call_id"] not in pending:
                raise _invalid(
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'.",
                    f"messages.[{i}].role",
                )
            pending.remove(message["tool_call_id"])
            continue
        if pending:
            raise _unanswered(i - 1, pending)
        if role == "assistant":
            pending = [call["id"] for call in message.get("tool_calls") or []]
            start = i
    if pending:
        raise _unanswered(start, pending)


def _unanswered(i: int, ids: list[str]) -> _ApiError:
    return _invalid(
        "An assistant message with 'tool_calls' must be followed by tool messages responding "
        "to each 'tool_call_id'. The following tool_call_ids did not have response messages: "
        + ", ".join(ids),
        f"messages.[{i}].role",
    )


def _output_tokens(reply: Reply, text: str) -> int:
    if reply.output_tokens is not None:
        return reply.output_tokens
    chars = len(text) + len(reply.thinking or "") + len(reply.redacted_thinking or "")
    chars += sum(len(json.dumps(call.arguments)) + len(call.name) for call in reply.tool_calls)
    return max(1, _tokens(chars))


def _fit(reply: Reply, limit: Any) -> tuple[str | None, str]:
    """The reply's text and stop reason (Anthropic's words); a plain text longer than the
    request's max_tokens is cut to it, with stop max_tokens, as a model stops there."""
    text, stop = reply.text, reply.stop
    if stop is not None:
        return text, _TO_ANTHROPIC_STOP.get(stop, stop)
    if reply.tool_calls:
        return text, "tool_use"
    if text and _is_int(limit) and _output_tokens(reply, text) > limit:
        return text[: max(limit, 1) * 4], "max_tokens"
    return text, "end_turn"


class _OpenAIRendering:
    def __init__(self, reply: Reply, body: dict[str, Any]) -> None:
        self.reply = reply
        self.body = body
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        self.text, stop = _fit(reply, limit)
        self.finish_reason = _TO_OPENAI_STOP.get(stop, stop)
        self.id = f"chatcmpl-{uuid.uuid4().hex[:29]}"
        self.created = int(time.time())
        self.model = reply.model or body["model"]
        self.calls = [
            (call.id or f"call_{uuid.uuid4().hex[:24]}", call) for call in reply.tool_calls
        ]

    def usage(self) -> dict[str, Any]:
        reply = self.reply
        uncached = (
            reply.input_tokens
            if reply.input_tokens is not None
            else estimate_input_tokens(self.body)
        )
        cached = reply.cache_read_input_tokens
        prompt = uncached + cached + reply.cache_creation_input_tokens
        completion = _output_tokens(reply, self.text or "")
        reasoning = _tokens(len(reply.thinking)) if reply.thinking else 0
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": reasoning,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def completion(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": self.text if self.text is not None or not self.calls else None,
            "refusal": None,
            "annotations": [],
        }
        if message["content"] is None and not self.calls:
            message["content"] = ""
        if self.reply.thinking is not None:
            message["reasoning_content"] = self.reply.thinking
        if self.calls:
            message["tool_calls"] = [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
                }
                for call_id, call in self.calls
            ]
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": self.finish_reason,
                }
            ],
            "usage": self.usage(),
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if self._include_usage():
            chunk["usage"] = None
        return f"data: {json.dumps(chunk)}\n\n".encode()

    def _include_usage(self) -> bool:
        options = self.body.get("stream_options")
        return isinstance(options, dict) and options.get("include_usage") is True

    def chunks(self) -> Iterator[bytes]:
        """The stream OpenAI sends: the role, then the reasoning, text and tool-call deltas
        (a call's id and name first, then its arguments in fragments), a last chunk with the
        finish reason, the usage chunk when asked for, and ``[DONE]``."""
        yield self._chunk({"role": "assistant", "content": "", "refusal": None})
        if self.reply.thinking:
            for piece in _text_pieces(self.reply.thinking):
                yield self._chunk({"reasoning_content": piece})
        if self.text:
            for piece in _text_pieces(self.text):
                yield self._chunk({"content": piece})
        for index, (call_id, call) in enumerate(self.calls):
            head = {"name": call.name, "arguments": ""}
            yield self._chunk(
                {
                    "tool_calls": [
                        {"index": index, "id": call_id, "type": "function", "function": head}
                    ]
                }
            )
            for fragment in _fragments(json.dumps(call.arguments)):
                yield self._chunk(
                    {"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}
                )
        yield self._chunk({}, self.finish_reason)
        if self._include_usage():
            last: dict[str, Any] = {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "service_tier": "default",
                "system_fingerprint": "fp_fake",
                "choices": [],
                "usage": self.usage(),
            }
            yield f"data: {json.dumps(last)}\n\n".encode()
        yield b"data: [DONE]\n\n"


# ---------------------------------------------------------------------------------------------
# Anthropic Messages


_ANTHROPIC_ERRORS = {
    400: ("invalid_request_error", "Bad request"),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low to access the Anthropic API."),
    403: ("permission_error", "Your API key does not have permission to use this resource."),
    404: ("not_found_error", "Not found"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: (
        "rate_limit_error",
        "This request would exceed the rate limit for your organization. Please try again later.",
    ),
    500: ("api_error", "Internal server error"),
    502: ("api_error", "Bad gateway"),
    503: ("api_error", "Service unavailable"),
    504: ("timeout_error", "Request timeout"),
    529: ("overloaded_error", "Overloaded"),
}
# 2026-10-21 removed the sampling parameters and refuses citations in user text blocks;
# the older versions keep them.
_ANTHROPIC_VERSIONS = ("2023-01-01", "2023-06-01", "2026-10-21")
_NEW_VERSION = "2026-10-21"
# Blocks of Anthropic's server tools, which come back in an assistant turn's history.
_SERVER_TOOL_BLOCKS = (
    "server_tool_use",
    "web_search_tool_result",
    "web_fetch_tool_result",
    "code_execution_tool_result",
    "bash_code_execution_tool_result",
    "text_editor_code_execution_tool_result",
    "mcp_tool_use",
    "mcp_tool_result",
)
_BLOCK_TYPES = (
    "text",
    "image",
    "document",
    "tool_use",
    "tool_result",
    "thinking",
    "redacted_thinking",
    "search_result",
    "container_upload",
    *_SERVER_TOOL_BLOCKS,
)
_USER_ONLY = {"tool_result", "image", "document", "search_result", "container_upload"}
_ASSISTANT_ONLY = {"tool_use", "thinking", "redacted_thinking", *_SERVER_TOOL_BLOCKS}
_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
_ANTHROPIC_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")


def _bad(message: str) -> _ApiError:
    return _ApiError(400, "invalid_request_error", message)


class FakeAnthropic(_Fake):
    """Anthropic's Messages API at ``POST {prefix}/messages`` and
    ``POST {prefix}/messages/count_tokens`` (a query such as ``?beta=true`` is accepted).

    A key is always required (401): ``x-api-key``, or ``Authorization: Bearer`` as the 2.x
    SDKs send it; it must equal ``api_key`` when one is set. ``anthropic-version`` is
    required (400): 2023-06-01 (what the gateway sends) or 2026-10-21 (the 2.x SDKs' default,
    which refuses temperature/top_p/top_k). ``strict_alternation`` (default on) refuses
    consecutive turns of one role, which the API itself would combine into one turn: a
    gateway's translation should alternate them, not rely on that. ``verify_signatures``
    (default on) refuses a thinking block sent back with a signature this fake did not give
    it (see ``thinking_signature``), as the API refuses altered thinking. The SDK's base_url
    is ``fake.url`` when the prefix is ``/v1``. Other arguments as ``FakeOpenAI``.
    """

    def __init__(
        self,
        name: str,
        *,
        api_key: str | None = None,
        prefix: str = "/v1",
        tls: ssl.SSLContext | None = None,
        extra_headers: dict[str, str] | None = None,
        event_pause_s: float = 0.0,
        strict_alternation: bool = True,
        verify_signatures: bool = True,
    ) -> None:
        super().__init__(
            name,
            api_key=api_key,
            prefix=prefix,
            tls=tls,
            extra_headers=extra_headers,
            event_pause_s=event_pause_s,
        )
        self.strict_alternation = strict_alternation
        self.verify_signatures = verify_signatures

    def _request_id_header(self) -> tuple[str, str]:
        return ("request-id", f"req_{uuid.uuid4().hex[:24]}")

    def _error_payload(self, error: _ApiError, request_id: str) -> dict[str, Any]:
        return {
            "type": "error",
            "error": {"type": error.error_type, "message": error.message},
            "request_id": request_id,
        }

    def _injected_error(self, failure: Failure) -> _ApiError:
        default = "api_error" if failure.status >= 500 else "invalid_request_error"
        error_type, message = _ANTHROPIC_ERRORS.get(failure.status, (default, "Error"))
        return _InjectedError(failure, failure.error_type or error_type, failure.message or message)

    def _stream_error_event(self, failure: Failure) -> bytes:
        error_type, message = _ANTHROPIC_ERRORS.get(failure.status or 529, _ANTHROPIC_ERRORS[529])
        payload = {
            "type": "error",
            "error": {
                "type": failure.error_type or error_type,
                "message": failure.message or message,
            },
        }
        return f"event: error\ndata: {json.dumps(payload)}\n\n".encode()

    def _answer(self, handler: _Handler, recorded: Recorded, failure: Failure | None) -> None:
        # The key comes as x-api-key, or (as the 2.x SDKs send it) Authorization: Bearer;
        # with both, x-api-key is the one checked.
        key = recorded.headers.get("x-api-key")
        if not key:
            scheme, _, token = recorded.headers.get("authorization", "").partition(" ")
            key = token.strip() if scheme.lower() == "bearer" else ""
        if not key:
            raise _ApiError(401, "authentication_error", "x-api-key header is required")
        if self.api_key is not None and key != self.api_key:
            raise _ApiError(401, "authentication_error", "invalid x-api-key")
        version = recorded.headers.get("anthropic-version")
        if not version:
            raise _bad("anthropic-version: header is required")
        if version not in _ANTHROPIC_VERSIONS:
            raise _bad(f'anthropic-version: "{version}" is not a valid version')
        count_tokens = recorded.route == f"{self.prefix}/messages/count_tokens"
        if recorded.route != f"{self.prefix}/messages" and not count_tokens:
            raise _ApiError(404, "not_found_error", "Not Found")
        if recorded.method != "POST":
            raise _ApiError(405, "invalid_request_error", "Method Not Allowed")
        body = self._parse_json(recorded)
        if body is _NOT_JSON:
            raise _bad("There was an error parsing the body of your request: invalid JSON")
        if not isinstance(body, dict):
            raise _bad("body: Input should be a valid dictionary")
        self._validate(body, count_tokens, version)
        if count_tokens:
            self._send_json(handler, 200, {"input_tokens": estimate_input_tokens(body)})
            return
        reply = self._next_reply(recorded)
        if (
            failure is not None
            and failure.kind == "stream_error"
            and body.get("stream") is not True
        ):
            raise self._injected_error(failure)
        rendered = _AnthropicRendering(reply, body)
        if body.get("stream") is True:
            pause = self.event_pause_s if reply.pause_s is None else reply.pause_s
            stream = self._start_stream(handler, failure, pause)
            self._run_stream(handler, stream, rendered.events())
        else:
            cut = failure is not None and failure.kind == "cut"
            self._send_json(handler, 200, rendered.message(), cut=cut)

    def _default_reply(self, body: dict[str, Any]) -> Reply:
        text = self._last_user_text(body)
        thinking = body.get("thinking")
        if isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive"):
            return Reply(thinking=f"The user wrote: {text}", text=f"from {self.name}: {text}")
        return Reply(text=f"from {self.name}: {text}")

    # -- validation, as the Messages API checks a request before a model runs

    def _validate(self, body: dict[str, Any], count_tokens: bool, version: str) -> None:
        if "model" not in body:
            raise _bad("model: Field required")
        if not isinstance(body["model"], str) or not body["model"]:
            raise _bad("model: Input should be a valid string")
        max_tokens: Any = body.get("max_tokens")
        if not count_tokens:
            if "max_tokens" not in body:
                raise _bad("max_tokens: Field required")
            if not _is_int(max_tokens):
                raise _bad("max_tokens: Input should be a valid integer")
            if max_tokens < 1:
                raise _bad("max_tokens: Input should be greater than or equal to 1")
        if "messages" not in body:
            raise _bad("messages: Field required")
        messages = body["messages"]
        if not isinstance(messages, list):
            raise _bad("messages: Input should be a valid list")
        if not messages:
            raise _bad("messages: at least one message is required")
        _validate_system(body.get("system"))
        tool_names = _validate_tools(body.get("tools"))
        thinking = _validate_thinking(body, count_tokens)
        if version == _NEW_VERSION:
            for name in ("temperature", "top_p", "top_k"):
                if name in body:
                    raise _bad(f"{name}: Extra inputs are not permitted")
        _validate_sampling(body, thinking)
        _validate_tool_choice(body.get("tool_choice"), tool_names, thinking)
        for name in ("stop_sequences",):
            value = body.get(name)
            if value is not None and (
                not isinstance(value, list) or not all(isinstance(s, str) for s in value)
            ):
                raise _bad(f"{name}: Input should be a valid list of strings")
        if "stream" in body and not isinstance(body["stream"], bool):
            raise _bad("stream: Input should be a valid boolean")
        metadata = body.get("metadata")
        if metadata is not None:
            if not isinstance(metadata, dict):
                raise _bad("metadata: Input should be a valid dictionary")
            user_id = metadata.get("user_id")
            if user_id is not None and not isinstance(user_id, str):
                raise _bad("metadata.user_id: Input should be a valid string")
        self._validate_messages(messages, bool(tool_names), thinking, version)

    def _validate_messages(
        self, messages: list[Any], has_tools: bool, thinking: str | None, version: str
    ) -> None:
        turns: list[tuple[int, str, list[dict[str, Any]]]] = []  # (first index, role, blocks)
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                raise _bad(f"messages.{i}: Input should be a valid dictionary")
            role = message.get("role")
            if "role" not in message:
                raise _bad(f"messages.{i}.role: Field required")
            if role not in ("user", "assistant"):
                raise _bad(f"messages.{i}.role: Input should be 'user' or 'assistant'")
            if "content" not in message:
                raise _bad(f"messages.{i}.content: Field required")
            blocks = self._blocks(i, role, message["content"])
            if version == _NEW_VERSION and role == "user":
                for j, block in enumerate(blocks):
                    if block["type"] == "text" and block.get("citations"):
                        raise _bad(
                            f"messages.{i}.content.{j}.text.citations: citations are not "
                            "allowed on text blocks in user messages"
                        )
            last = i == len(messages) - 1
            if not blocks and not (last and role == "assistant"):
                raise _bad(
                    f"messages.{i}: all messages must have non-empty content except for the "
                    "optional final assistant message"
                )
            if i == 0 and role != "user":
                raise _bad('messages: first message must use the "user" role')
            if turns and turns[-1][1] == role:
                if self.strict_alternation:
                    raise _bad(
                        'messages: roles must alternate between "user" and "assistant", but '
                        f'found multiple "{role}" roles in a row'
                    )
                turns[-1][2].extend(blocks)
            else:
                turns.append((i, role, list(blocks)))
        uses_tools = any(
            block["type"] in ("tool_use", "tool_result")
            for _, _, blocks in turns
            for block in blocks
        )
        if uses_tools and not has_tools:
            raise _bad(
                "Requests which include `tool_use` or `tool_result` blocks must define tools."
            )
        for t, (i, role, blocks) in enumerate(turns):
            if role != "user":
                continue
            previous = turns[t - 1][2] if t else []
            ids = {block["id"] for block in previous if block["type"] == "tool_use"}
            for j, block in enumerate(blocks):
                if block["type"] == "tool_result" and block["tool_use_id"] not in ids:
                    raise _bad(
                        f"messages.{i}.content.{j}: unexpected `tool_use_id` found in "
                        f"`tool_result` blocks: {block['tool_use_id']}. Each `tool_result` "
                        "block must have a corresponding `tool_use` block in the previous "
                        "message."
                    )
        for t, (i, role, blocks) in enumerate(turns):
            if role != "assistant":
                continue
            calls = [block["id"] for block in blocks if block["type"] == "tool_use"]
            following = turns[t + 1][2] if t + 1 < len(turns) else None
            answered = [
                block["tool_use_id"] for block in following or [] if block["type"] == "tool_result"
            ]
            missing = ", ".join(a for a in calls if a not in answered)
            if following is not None and missing:
                raise _bad(
                    f"messages.{i}: `tool_use` ids were found without `tool_result` blocks "
                    f"immediately after: {missing}. Each `tool_use` block must have a "
                    "corresponding `tool_result` block in the next message."
                )
        if thinking == "enabled":
            # In a tool loop, the turn that called the tools must start with its thinking.
            assistants = [turn for turn in turns if turn[1] == "assistant"]
            if assistants:
                i, _, blocks = assistants[-1]
                called = any(block["type"] == "tool_use" for block in blocks)
                if called and blocks[0]["type"] not in ("thinking", "redacted_thinking"):
                    raise _bad(
                        f"messages.{i}.content.0.type: Expected `thinking` or "
                        f"`redacted_thinking`, but found `{blocks[0]['type']}`. When "
                        "`thinking` is enabled, a final `assistant` message must start with "
                        "a thinking block. To avoid this requirement, disable `thinking`."
                    )

    def _blocks(self, i: int, role: str, content: Any) -> list[dict[str, Any]]:
        if isinstance(content, str):
            return [{"type": "text", "text": content}] if content else []
        if not isinstance(content, list):
            raise _bad(f"messages.{i}.content: Input should be a valid string or list")
        for j, block in enumerate(content):
            at = f"messages.{i}.content.{j}"
            if not isinstance(block, dict):
                raise _bad(f"{at}: Input should be a valid dictionary")
            kind = block.get("type")
            if kind not in _BLOCK_TYPES:
                expected = ", ".join(f"'{t}'" for t in _BLOCK_TYPES)
                raise _bad(
                    f"{at}.type: Input tag '{kind}' found using 'type' does not match any of "
                    f"the expected tags: {expected}"
                )
            if role == "assistant" and kind in _USER_ONLY:
                raise _bad(f"{at}: `{kind}` blocks are only allowed in `user` messages")
            if role == "user" and kind in _ASSISTANT_ONLY:
                raise _bad(f"{at}: `{kind}` blocks are only allowed in `assistant` messages")
            self._validate_block(at, kind, block)
        return content

    def _validate_block(self, at: str, kind: str, block: dict[str, Any]) -> None:
        if kind == "text":
            if not isinstance(block.get("text"), str):
                raise _bad(f"{at}.text.text: Field required")
            if not block["text"]:
                raise _bad("messages: text content blocks must be non-empty")
        elif kind in ("image", "document"):
            _validate_source(f"{at}.{kind}.source", kind, block.get("source"))
        elif kind == "tool_use":
            for name in ("id", "name", "input"):
                if name not in block:
                    raise _bad(f"{at}.tool_use.{name}: Field required")
            if not isinstance(block["id"], str) or not _ID.match(block["id"]):
                raise _bad(f"{at}.tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$'")
            if not isinstance(block["input"], dict):
                raise _bad(f"{at}.tool_use.input: Input should be a valid dictionary")
        elif kind == "tool_result":
            if "tool_use_id" not in block:
                raise _bad(f"{at}.tool_result.tool_use_id: Field required")
            if not isinstance(block["tool_use_id"], str) or not _ID.match(block["tool_use_id"]):
                raise _bad(
                    f"{at}.tool_result.tool_use_id: String should match pattern '^[a-zA-Z0-9_-]+$'"
                )
            result = block.get("content")
            if result is not None and not isinstance(result, str):
                if not isinstance(result, list):
                    raise _bad(f"{at}.tool_result.content: Input should be a valid list")
                for k, part in enumerate(result):
                    if not isinstance(part, dict) or part.get("type") not in (
                        "text",
                        "image",
                        "document",
                        "search_result",
                    ):
                        raise _bad(
                            f"{at}.tool_result.content.{k}: Input tag does not match any of "
                            "the expected tags: 'text', 'image', 'document', 'search_result'"
                        )
            if "is_error" in block and not isinstance(block["is_error"], bool):
                raise _bad(f"{at}.tool_result.is_error: Input should be a valid boolean")
        elif kind == "thinking":
            for name in ("thinking", "signature"):
                if not isinstance(block.get(name), str):
                    raise _bad(f"{at}.thinking.{name}: Field required")
            if self.verify_signatures and block["signature"] != thinking_signature(
                block["thinking"]
            ):
                raise _bad(f"{at}: Invalid `signature` in `thinking` block")
        elif kind == "redacted_thinking" and not isinstance(block.get("data"), str):
            raise _bad(f"{at}.redacted_thinking.data: Field required")


def _validate_source(at: str, kind: str, source: Any) -> None:
    if not isinstance(source, dict):
        raise _bad(f"{at}: Field required")
    source_type = source.get("type")
    if source_type == "base64":
        for name in ("media_type", "data"):
            if not isinstance(source.get(name), str):
                raise _bad(f"{at}.base64.{name}: Field required")
        allowed = (
            ("image/jpeg", "image/png", "image/gif", "image/webp")
            if kind == "image"
            else ("application/pdf",)
        )
        if source["media_type"] not in allowed:
            raise _bad(
                f"{at}.base64.media_type: Input should be " + " or ".join(f"'{m}'" for m in allowed)
            )
    elif source_type == "url":
        if not isinstance(source.get("url"), str):
            raise _bad(f"{at}.url.url: Field required")
    elif not (kind == "document" and source_type in ("text", "content", "file")) and not (
        kind == "image" and source_type == "file"
    ):
        raise _bad(f"{at}: Input tag '{source_type}' found using 'type' does not match")


def _validate_system(system: Any) -> None:
    if system is None or isinstance(system, str):
        return
    if not isinstance(system, list):
        raise _bad("system: Input should be a valid string or list")
    for i, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise _bad(f"system.{i}.type: Input should be 'text'")
        if not isinstance(block.get("text"), str):
            raise _bad(f"system.{i}.text: Field required")
        if not block["text"]:
            raise _bad("system: text content blocks must be non-empty")


def _validate_tools(tools: Any) -> set[str]:
    if tools is None:
        return set()
    if not isinstance(tools, list):
        raise _bad("tools: Input should be a valid list")
    names: list[str] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise _bad(f"tools.{i}: Input should be a valid dictionary")
        name = tool.get("name")
        if not isinstance(name, str):
            raise _bad(f"tools.{i}.custom.name: Field required")
        if tool.get("type", "custom") == "custom":
            if not _ANTHROPIC_TOOL_NAME.match(name):
                raise _bad(
                    f"tools.{i}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'"
                )
            schema = tool.get("input_schema")
            if schema is None:
                raise _bad(f"tools.{i}.custom.input_schema: Field required")
            if not isinstance(schema, dict) or schema.get("type") != "object":
                raise _bad(f"tools.{i}.custom.input_schema.type: Input should be 'object'")
        names.append(name)
    if len(set(names)) != len(names):
        raise _bad("tools: Tool names must be unique.")
    return set(names)


def _validate_thinking(body: dict[str, Any], count_tokens: bool) -> str | None:
    thinking = body.get("thinking")
    if thinking is None:
        return None
    if not isinstance(thinking, dict) or thinking.get("type") not in (
        "enabled",
        "disabled",
        "adaptive",
    ):
        raise _bad(
            "thinking: Input tag found using 'type' does not match any of the expected "
            "tags: 'enabled', 'disabled', 'adaptive'"
        )
    if thinking["type"] != "enabled":
        return None if thinking["type"] == "disabled" else "adaptive"
    budget: Any = thinking.get("budget_tokens")
    if not _is_int(budget):
        raise _bad("thinking.enabled.budget_tokens: Field required")
    if budget < 1024:
        raise _bad("thinking.enabled.budget_tokens: Input should be greater than or equal to 1024")
    if not count_tokens and budget >= body["max_tokens"]:
        raise _bad(
            "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our "
            "documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
        )
    return "enabled"


def _validate_sampling(body: dict[str, Any], thinking: str | None) -> None:
    temperature = body.get("temperature")
    if temperature is not None:
        if not _is_number(temperature):
            raise _bad("temperature: Input should be a valid number")
        if not 0 <= temperature <= 1:
            raise _bad(
                "temperature: Input should be less than or equal to 1"
                if temperature > 1
                else "temperature: Input should be greater than or equal to 0"
            )
    top_p, top_k = body.get("top_p"), body.get("top_k")
    if top_p is not None and (not _is_number(top_p) or not 0 <= top_p <= 1):
        raise _bad("top_p: Input should be a number between 0 and 1")
    if top_k is not None and (not _is_int(top_k) or top_k < 0):
        raise _bad("top_k: Input should be a non-negative integer")
    if thinking is None:
        return
    if temperature is not None and temperature != 1:
        raise _bad(
            "`temperature` may only be set to 1 when thinking is enabled. Please consult our "
            "documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
        )
    if top_k is not None:
        raise _bad("`top_k` is not supported when thinking is enabled.")
    if top_p is not None and top_p < 0.95:
        raise _bad("`top_p` must be greater than or equal to 0.95 when thinking is enabled.")


def _validate_tool_choice(choice: Any, tool_names: set[str], thinking: str | None) -> None:
    if choice is None:
        return
    if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
        raise _bad(
            "tool_choice: Input tag found using 'type' does not match any of the expected tags: "
            "'auto', 'any', 'tool', 'none'"
        )
    if choice["type"] == "tool":
        if not isinstance(choice.get("name"), str):
            raise _bad("tool_choice.tool.name: Field required")
        if choice["name"] not in tool_names:
            raise _bad(f"tool_choice.tool.name: Tool '{choice['name']}' not found in tools")
    if "disable_parallel_tool_use" in choice and not isinstance(
        choice["disable_parallel_tool_use"], bool
    ):
        raise _bad("tool_choice.disable_parallel_tool_use: Input should be a valid boolean")
    if thinking is not None and choice["type"] in ("any", "tool"):
        raise _bad("Thinking may not be enabled when tool_choice forces tool use.")


class _AnthropicRendering:
    def __init__(self, reply: Reply, body: dict[str, Any]) -> None:
        self.reply = reply
        self.body = body
        self.text, self.stop = _fit(reply, body.get("max_tokens"))
        self.id = f"msg_{uuid.uuid4().hex[:24]}"
        self.model = reply.model or body["model"]
        self.calls = [
            (call.id or f"toolu_{uuid.uuid4().hex[:24]}", call) for call in reply.tool_calls
        ]
        self.signature = (
            reply.signature
            if reply.signature is not None
            else thinking_signature(reply.thinking or "")
        )

    def usage(self, output_tokens: int | None = None) -> dict[str, Any]:
        reply = self.reply
        return {
            "input_tokens": (
                reply.input_tokens
                if reply.input_tokens is not None
                else estimate_input_tokens(self.body)
            ),
            "cache_creation_input_tokens": reply.cache_creation_input_tokens,
            "cache_read_input_tokens": reply.cache_read_input_tokens,
            "output_tokens": (
                _output_tokens(reply, self.text or "") if output_tokens is None else output_tokens
            ),
            "service_tier": "standard",
        }

    def blocks(self) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        if self.reply.thinking is not None:
            blocks.append(
                {"type": "thinking", "thinking": self.reply.thinking, "signature": self.signature}
            )
        if self.reply.redacted_thinking is not None:
            blocks.append({"type": "redacted_thinking", "data": self.reply.redacted_thinking})
        if self.text is not None or not self.calls:
            blocks.append({"type": "text", "text": self.text or ""})
        for call_id, call in self.calls:
            blocks.append(
                {"type": "tool_use", "id": call_id, "name": call.name, "input": call.arguments}
            )
        return blocks

    def message(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": self.blocks(),
            "stop_reason": self.stop,
            "stop_sequence": self.reply.stop_sequence,
            "usage": self.usage(),
        }

    @staticmethod
    def _event(name: str, payload: dict[str, Any]) -> bytes:
        return f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode()

    def events(self) -> Iterator[bytes]:
        """The stream in the API's order: message_start (empty content), then per block a
        content_block_start, its deltas and a content_block_stop (a ping after the first
        start), message_delta (stop reason, final usage), message_stop."""
        start = self.message() | {
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": self.usage(output_tokens=1),
        }
        yield self._event("message_start", {"type": "message_start", "message": start})
        for index, block in enumerate(self.blocks()):
            kind = block["type"]
            if kind == "thinking":
                head: dict[str, Any] = {"type": "thinking", "thinking": "", "signature": ""}
                deltas = [
                    {"type": "thinking_delta", "thinking": piece}
                    for piece in _text_pieces(block["thinking"])
                ] + [{"type": "signature_delta", "signature": block["signature"]}]
            elif kind == "text":
                head = {"type": "text", "text": ""}
                deltas = [
                    {"type": "text_delta", "text": piece}
                    for piece in _text_pieces(block["text"])
                    if piece
                ]
            elif kind == "tool_use":
                head = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
                # The API opens a tool's input with an empty fragment, then the JSON in pieces.
                deltas = [
                    {"type": "input_json_delta", "partial_json": piece}
                    for piece in ["", *_fragments(json.dumps(block["input"]))]
                ]
            else:  # redacted_thinking arrives whole in its start event
                head, deltas = block, []
            yield self._event(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": head},
            )
            if index == 0:
                yield self._event("ping", {"type": "ping"})
            for delta in deltas:
                yield self._event(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
            yield self._event("content_block_stop", {"type": "content_block_stop", "index": index})
        yield self._event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": self.stop, "stop_sequence": self.reply.stop_sequence},
                "usage": self.usage(),
            },
        )
        yield self._event("message_stop", {"type": "message_stop"})


# ---------------------------------------------------------------------------------------------
# Azure OpenAI chat completions (the deployment API)


# Data-plane inference versions that serve chat completions: the GA ones and recent previews.
AZURE_API_VERSIONS = (
    "2023-05-15",
    "2024-02-01",
    "2024-06-01",
    "2024-10-21",
    "2024-12-01-preview",
    "2025-01-01-preview",
    "2025-03-01-preview",
    "2025-04-01-preview",
)
# Azure's own (not OpenAI's) errors carry this type: their body is {"error": {code, message}}.
_AZURE = "azure"
_AZURE_DENIED = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide "
    "a valid key for an active subscription and use a correct regional API endpoint for your "
    "resource."
)
_AZURE_BAD_TOKEN = (
    "Unauthorized. Access token is missing, invalid, audience is incorrect "
    "(https://cognitiveservices.azure.com), or has expired."
)
_AZURE_ERRORS = {
    429: (
        "429",
        "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version "
        "2024-10-21 have exceeded token rate limit of your current OpenAI S0 pricing tier. "
        "Please retry after 1 second.",
    ),
    500: ("InternalServerError", "The server had an error while processing your request."),
    503: ("ServiceUnavailable", "The service is temporarily unable to process your request."),
}
# What Azure's content filters report for a prompt and a choice that passed them.
_FILTERS_PASSED = {
    name: {"filtered": False, "severity": "safe"}
    for name in ("hate", "self_harm", "sexual", "violence")
}


def _azure_error(status: int, code: str, message: str) -> _ApiError:
    return _ApiError(status, _AZURE, message, code=code)


_RESOURCE_NOT_FOUND = (404, "404", "Resource not found")


class FakeAzureOpenAI(FakeOpenAI):
    """Azure OpenAI's chat completions: ``POST {prefix}/openai/deployments/{deployment-id}/
    chat/completions?api-version=...``, the resource endpoint being ``fake.url`` (prefix "").

    ``deployments``: deployment name -> the model it runs (what answers name in ``model``;
    the body's ``model`` is not needed and is ignored, as Azure ignores it). What Azure
    refuses, in the order it is checked, with Azure's status and body
    ``{"error": {"code", "message"}}``:

    - another path, or no ``api-version`` query: 404 ``Resource not found``;
    - an ``api-version`` it does not serve (``api_versions``), or more than one: 400
      ``BadRequest`` ``API version not supported``;
    - no ``api-key`` header (a ``Bearer`` Authorization is taken for an Entra ID token,
      which this fake never accepts), or one other than ``api_key``: 401;
    - a deployment not in ``deployments``: 404 ``DeploymentNotFound``.

    A request that passes is checked and answered as ``FakeOpenAI`` does (its errors in
    OpenAI's shape, as Azure passes them on), with Azure's additions: ``prompt_filter_results``
    and each choice's ``content_filter_results``; a stream starts with the chunk that carries
    only the prompt's filter results (empty ``choices``, empty ``id`` and ``model``), as
    Azure's streams do. ``content_filters=False`` leaves them out. Injected failures
    (``fail``) answer in Azure's error shape.
    """

    def __init__(
        self,
        name: str,
        *,
        api_key: str,
        deployments: dict[str, str],
        api_versions: Sequence[str] = AZURE_API_VERSIONS,
        prefix: str = "",
        tls: ssl.SSLContext | None = None,
        extra_headers: dict[str, str] | None = None,
        event_pause_s: float = 0.0,
        content_filters: bool = True,
    ) -> None:
        super().__init__(
            name,
            api_key=api_key,
            prefix=prefix,
            tls=tls,
            extra_headers=extra_headers,
            event_pause_s=event_pause_s,
        )
        self.deployments = dict(deployments)
        self.api_versions = tuple(api_versions)
        self.content_filters = content_filters
        self._path = re.compile(
            re.escape(self.prefix) + r"/openai/deployments/([^/]+)/chat/completions"
        )

    def deployment(self, recorded: Recorded) -> str | None:
        """The deployment a recorded request named in its path (None: not a deployment path)."""
        match = self._path.fullmatch(recorded.route)
        return match.group(1) if match else None

    def _request_id_header(self) -> tuple[str, str]:
        return ("apim-request-id", str(uuid.uuid4()))

    def _error_payload(self, error: _ApiError, request_id: str) -> dict[str, Any]:
        if error.error_type == _AZURE:
            return {"error": {"code": error.code, "message": error.message}}
        return super()._error_payload(error, request_id)

    def _injected_error(self, failure: Failure) -> _ApiError:
        code, message = _AZURE_ERRORS.get(failure.status, (str(failure.status), "Error."))
        return _InjectedError(failure, _AZURE, failure.message or message, code)

    def _answer(self, handler: _Handler, recorded: Recorded, failure: Failure | None) -> None:
        deployment = self.deployment(recorded)
        versions = recorded.query.get("api-version")
        if deployment is None or recorded.method != "POST" or not versions:
            raise _azure_error(*_RESOURCE_NOT_FOUND)
        if len(versions) > 1 or versions[0] not in self.api_versions:
            raise _azure_error(400, "BadRequest", "API version not supported")
        key = recorded.headers.get("api-key")
        if not key:
            bearer = recorded.headers.get("authorization", "").lower().startswith("bearer ")
            raise _azure_error(401, "401", _AZURE_BAD_TOKEN if bearer else _AZURE_DENIED)
        if key != self.api_key:
            raise _azure_error(401, "401", _AZURE_DENIED)
        if deployment not in self.deployments:
            raise _azure_error(
                404,
                "DeploymentNotFound",
                "The API deployment for this resource does not exist. If you created the "
                "deployment within the last 5 minutes, please wait a moment and try again.",
            )
        body = self._parse_json(recorded)
        if body is _NOT_JSON or not isinstance(body, dict):
            raise _invalid("We could not parse the JSON body of your request.")
        # The deployment names the model: the body needs none.
        _validate_chat({"model": deployment, **body})
        reply = self._next_reply(recorded)
        if failure is not None and failure.kind == "stream_error" and not body.get("stream"):
            raise self._injected_error(failure)
        reply = dataclasses.replace(reply, model=reply.model or self.deployments[deployment])
        rendered = _AzureRendering(reply, body, self.content_filters)
        if body.get("stream") is True:
            pause = self.event_pause_s if reply.pause_s is None else reply.pause_s
            stream = self._start_stream(handler, failure, pause)
            self._run_stream(handler, stream, rendered.chunks())
        else:
            cut = failure is not None and failure.kind == "cut"
            self._send_json(handler, 200, rendered.completion(), cut=cut)


class _AzureRendering(_OpenAIRendering):
    def __init__(self, reply: Reply, body: dict[str, Any], filters: bool) -> None:
        super().__init__(reply, body)
        self.filters = filters

    def _prompt_filters(self) -> list[dict[str, Any]]:
        return [{"prompt_index": 0, "content_filter_results": _FILTERS_PASSED}]

    def completion(self) -> dict[str, Any]:
        completion = super().completion()
        if self.filters:
            completion["prompt_filter_results"] = self._prompt_filters()
            for choice in completion["choices"]:
                choice["content_filter_results"] = _FILTERS_PASSED
        return completion

    def chunks(self) -> Iterator[bytes]:
        if self.filters:
            head = {
                "choices": [],
                "created": 0,
                "id": "",
                "model": "",
                "object": "",
                "prompt_filter_results": self._prompt_filters(),
            }
            yield f"data: {json.dumps(head)}\n\n".encode()
        yield from super().chunks()

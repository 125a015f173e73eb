"""The interface every translation pair implements, and what the pairs share.

A pair translates one client API to one upstream API, per message, with no I/O:

- ``request(body, model_id)``: the client's JSON body to the upstream's, ``model`` set to the
  provider's bare model id. Raises ``TranslationError`` (and nothing else) for a request
  the upstream cannot be asked; ``refusal`` turns it into the client's 4xx reply.
- ``response(body)``: the upstream's non-streamed JSON to the client's shape. Never raises:
  a body that is not a response becomes the client's error shape. ``response_bytes`` takes
  the raw reply (status and bytes) and gives the client's status and bytes, error or not.
- ``stream(client_request)``: a ``StreamTranslator`` for one streamed response.
  ``feed(chunk)`` takes upstream SSE bytes split anywhere and returns the client's SSE bytes
  ready to send (often ``b""``); ``finish()`` at the upstream's end of stream flushes and
  closes the client's stream properly: the terminal events after a complete upstream
  stream, a client-shaped error event after one that was cut short. Neither raises.
- ``error(status, body)``: an upstream error response (any bytes) to the status and body of
  the client's error shape. Never raises.

Where each upstream API is and the headers it needs are upstreams/'s (the Envoy routes set
them). ``wants_stream`` tells whether a client request (either API) asks for streaming.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, TypeGuard

from ..upstreams import ANTHROPIC_NATIVE, OPENAI_COMPATIBLE
from .sse import Event, SSEParser, dumps

OPENAI = OPENAI_COMPATIBLE.name
ANTHROPIC = ANTHROPIC_NATIVE.name
# What a bug in a translator is turned into rather than an exception out of it.
_UNEXPECTED = (
    TypeError,
    ValueError,
    AttributeError,
    KeyError,
    IndexError,
    RecursionError,
    OverflowError,  # an integer past a double's range where a float is wanted
)

JSON = dict[str, Any]


class TranslationError(Exception):
    """A client request that cannot be put to the upstream API (a 400 unless told)."""

    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status


class StreamTranslator(Protocol):
    def feed(self, chunk: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


class Translator(ABC):
    """One (client API, upstream API) pair. Stateless: one instance serves every request."""

    client_api: ClassVar[str]
    upstream_api: ClassVar[str]

    def request(self, body: Mapping[str, Any], model_id: str) -> JSON:
        if not isinstance(body, Mapping):
            raise TranslationError("The request body must be a JSON object.")
        try:
            return self._request(body, model_id)
        except TranslationError:
            raise
        except _UNEXPECTED as exc:
            raise TranslationError(f"The request could not be translated: {exc!r}") from exc

    def response(self, body: object) -> JSON:
        try:
            if self.is_response(body):
                return self._response(body)
        except _UNEXPECTED:
            pass
        return self.client_error(502, "The upstream's response could not be read.")

    def response_bytes(self, status: int, body: bytes) -> tuple[int, bytes]:
        """A whole upstream reply to the client's status and body, whatever the bytes.

        Error statuses go through ``error``; a 2xx body that is not a response (not JSON, or
        an error body that an upstream sent with a 200) becomes a 502 in the client's shape.
        """
        if not 200 <= status < 300:
            return self.error(status, body)
        try:
            parsed = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return self.error(status, body)
        if not self.is_response(parsed):
            return self.error(status, body)
        return status, dumps(self.response(parsed)).encode()

    def error(self, status: int, body: bytes) -> tuple[int, bytes]:
        try:
            return self._error(status, body)
        except _UNEXPECTED:
            return 502, dumps(self.client_error(502, "The upstream failed.")).encode()

    def refusal(self, error: TranslationError) -> tuple[int, bytes]:
        """A request that ``request`` refused, as the client's error reply."""
        return error.status, dumps(
            self.client_error(error.status, error.message, error.param)
        ).encode()

    @abstractmethod
    def stream(self, client_request: Mapping[str, Any] | None = None) -> StreamTranslator: ...

    @abstractmethod
    def is_response(self, body: object) -> TypeGuard[JSON]:
        """Whether an upstream body is a non-streamed response, not an error or garbage."""

    @abstractmethod
    def client_error(self, status: int, message: str, param: str | None = None) -> JSON:
        """An error body in the client's shape, its type following from the status."""

    @abstractmethod
    def _request(self, body: Mapping[str, Any], model_id: str) -> JSON: ...

    @abstractmethod
    def _response(self, body: JSON) -> JSON: ...

    @abstractmethod
    def _error(self, status: int, body: bytes) -> tuple[int, bytes]: ...


class EventStream(ABC):
    """A ``StreamTranslator`` over parsed upstream events, with the never-raise guarantee.

    A subclass turns one upstream event into client bytes (``_event``), says what the end
    of the upstream stream means (``_end``: the terminal events, or an error when the
    upstream stream was cut short), and writes the client's error event (``_fail``). Once
    the client's stream is closed (``done``), everything after is ignored.
    """

    def __init__(self) -> None:
        self._parser = SSEParser()
        self.done = False

    def feed(self, chunk: bytes) -> bytes:
        if self.done:
            return b""
        try:
            return self._events(self._parser.feed(chunk))
        except Exception as exc:  # a translator bug must end the stream, not the server
            return self._fail(
                "api_error", f"The upstream's stream could not be translated: {exc!r}"
            )

    def finish(self) -> bytes:
        if self.done:
            return b""
        try:
            out = self._events(self._parser.finish())
            return out if self.done else out + self._end()
        except Exception as exc:  # as in feed
            return self._fail(
                "api_error", f"The upstream's stream could not be translated: {exc!r}"
            )

    def _events(self, events: list[Event]) -> bytes:
        out = bytearray()
        for event in events:
            out += self._event(event)
            if self.done:
                break
        return bytes(out)

    @abstractmethod
    def _event(self, event: Event) -> bytes: ...

    @abstractmethod
    def _end(self) -> bytes: ...

    @abstractmethod
    def _fail(self, anthropic_type: str, message: str) -> bytes:
        """The client's error event (the category in Anthropic's terms); closes the stream."""


def wants_stream(body: Mapping[str, Any]) -> bool:
    """Whether a client request (either API) asks for a streamed response."""
    return body.get("stream") is True


def parse_data(event: Event) -> JSON | None:
    """An event's data as a JSON object, or None."""
    try:
        value = json.loads(event.data)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def as_int(value: object) -> int:
    """A token count from an upstream: an int, or 0 for anything else."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def as_str(value: object, default: str = "") -> str:
    return value if isinstance(value, str) else default


def as_dict(value: object) -> JSON:
    return value if isinstance(value, dict) else {}


def as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []

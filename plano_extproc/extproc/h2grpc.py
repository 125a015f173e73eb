"""One gRPC method, a bidirectional stream, served straight on HTTP/2.

Why not grpcio's server: it spent about 280 µs of CPU per ext_proc request here, most of it
in its own machinery; the h2 library's general state machine still spent about 100 µs per
request on framing alone (bench/RESULTS.md). Envoy is the only client and ext_proc needs a
small part of HTTP/2 and gRPC: one method, requests that never carry priority or push,
messages that are never compressed, one answer per message in order, a status in the
trailers. So this module reads and writes HTTP/2 frames itself (RFC 9113: SETTINGS, PING,
WINDOW_UPDATE, RST_STREAM, GOAWAY, HEADERS with CONTINUATION and padding, DATA with flow
control both ways) and leaves HPACK, the one intricate part, to the hpack library. Our
own header blocks are constant and use no dynamic table, so they are written once, here.

``handle`` gets each request message (bytes) and returns the answer, or an awaitable of it
when the answer must wait (the preference router); a stream's next message is handled only
once the previous one is answered. An answer that is a ``FinalAnswer`` ends the call.

Whatever a peer sends, what the server holds stays bounded (``Limits``): connections,
streams per connection, the header block, unanswered data server-wide, and what waits to be
written (reading stops while the socket's write buffer is full). A peer that breaks the
protocol gets the RFC 9113 connection error (GOAWAY, then close) or stream error
(RST_STREAM); a bug of ours costs the connection an INTERNAL_ERROR, never the server.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import hpack

log = logging.getLogger("plano_extproc.h2grpc")

Handler = Callable[[bytes], "bytes | Awaitable[bytes]"]
# A new stream's handler, from the metadata its caller sent (the request headers that start
# with x-plano-, and the trace context Envoy sends when its listener traces; the rest is
# gRPC's and HTTP/2's own).
OpenStream = Callable[[Mapping[str, str]], Handler]
_OUR_METADATA = (b"x-plano-", b"traceparent")


class FinalAnswer(bytes):
    """An answer after which the call is over: the transport sends it, then ends the call
    with status OK (for ext_proc: the processor needs no further message on this stream)."""


class AnswerThenMore(bytes):
    """An answer after which the server has more to say unasked (the server-streaming half
    of a call, such as the health service's Watch): once it is sent, ``follow`` is awaited
    and its result sent in turn, which may itself be an ``AnswerThenMore`` or end the call
    (``FinalAnswer``). The call stays open meanwhile, even after the peer half-closed."""

    follow: Awaitable[bytes]

    def __new__(cls, data: bytes, follow: Awaitable[bytes]) -> AnswerThenMore:
        answer = super().__new__(cls, data)
        answer.follow = follow
        return answer


class CallError(Exception):
    """Raised by a handler (or a stream's opener) to end its call with a gRPC status other
    than OK, e.g. NOT_FOUND for a health check of an unknown service."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Limits:
    """What one server holds at most, whatever its peers send.

    The defaults leave Envoy (one pooled connection per worker thread, streams that each
    last one request) far from every bound.
    """

    # Past it, a new connection takes the place of the oldest one without an open stream
    # (GOAWAY NO_ERROR to that one, which is told to reconnect: idle connections held by
    # someone else must not lock Envoy out); when every connection has a stream in flight,
    # the new one gets GOAWAY ENHANCE_YOUR_CALM and is closed at once.
    max_connections: int = 256
    # Advertised in SETTINGS; a stream past it is refused (RST_STREAM REFUSED_STREAM).
    max_concurrent_streams: int = 1000
    # Advertised as SETTINGS_MAX_HEADER_LIST_SIZE; the same cap applies to the compressed
    # block as it grows over CONTINUATION frames and to the decoded list.
    max_header_list_size: int = 16 * 1024
    # Seconds for a new connection to send the preface and its SETTINGS; also how long a
    # closing connection may take to drain what is left to write before it is cut.
    handshake_timeout: float = 10.0
    # Seconds without any open stream after which a connection is shut down gracefully
    # (GOAWAY NO_ERROR); long enough that Envoy's pooled connection is not churned.
    idle_timeout: float = 300.0
    # Request data not yet answered (arriving, queued, or with the handler) plus answers
    # waiting for flow-control window, over all connections; a stream whose data would pass
    # it ends with RESOURCE_EXHAUSTED. Raised to four of the largest messages if smaller, so
    # that a few of those can always be in flight at once.
    max_buffered: int = 128 * 1024 * 1024
    # Bytes queued on a socket past which we stop reading from it until it drains: a peer
    # that sends (PINGs, requests) without reading our replies cannot grow our memory.
    write_high_water: int = 256 * 1024


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# Frame types and flags (RFC 9113, section 6).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE = 0, 1, 2, 3, 4, 5
PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 6, 7, 8, 9
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20
# Settings (section 6.5.2) and error codes (section 7).
SETTINGS_HEADER_TABLE_SIZE, SETTINGS_ENABLE_PUSH, SETTINGS_MAX_CONCURRENT_STREAMS = 1, 2, 3
SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE, SETTINGS_MAX_HEADER_LIST_SIZE = 4, 5, 6
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0, 1, 2, 3
SETTINGS_TIMEOUT, STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM = 4, 5, 6, 7
COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 9, 11
# gRPC status codes (grpc/status.h).
OK = 0
INVALID_ARGUMENT = 3
NOT_FOUND = 5
RESOURCE_EXHAUSTED = 8
UNIMPLEMENTED = 12
INTERNAL = 13
UNAVAILABLE = 14

_FRAME = struct.Struct(">HBBBL")  # length (24 bits, split 16 + 8), type, flags, stream id
_MESSAGE = struct.Struct(">BL")  # gRPC framing: compressed flag, length
_SETTING = struct.Struct(">HL")
_GOAWAY = struct.Struct(">LL")
_MAX_WINDOW = 2**31 - 1
_WINDOW = _MAX_WINDOW  # what we let Envoy send ahead: bodies never wait on us
# The largest frame we accept (once the peer has our SETTINGS). Envoy's own DATA frames are
# 16 KiB; a larger cap would only let a peer park more of a half-sent frame with us.
_MAX_FRAME = 64 * 1024
_DEFAULT_WINDOW = 65535
_DEFAULT_MAX_FRAME = 16384
# What a queued message costs besides its bytes (a bytes object and its slot), so that a
# flood of empty messages counts too.
_MESSAGE_COST = 64
# Our PING when an idle connection shuts down: its ACK shows the peer has seen our first
# GOAWAY, so no stream it opened before that can still be on the way (section 6.8).
_DRAIN_PING = b"plano-gw"

# Our header blocks, HPACK without the dynamic table: ":status: 200" (static index 8),
# "content-type: application/grpc" (literal, name at static index 31), and the trailers.
_RESPONSE_HEADERS = b"\x88\x0f\x10\x10application/grpc"


def _literal(name: bytes, value: bytes) -> bytes:
    """A header field, literal without indexing with a literal name (RFC 7541, 6.2.2)."""
    return b"\x00" + _length(name) + name + _length(value) + value


def _length(data: bytes) -> bytes:
    # A 7-bit prefixed integer, no Huffman (RFC 7541, 5.1).
    n = len(data)
    if n < 127:
        return bytes([n])
    out = bytearray([127])
    n -= 127
    while n >= 128:
        out.append((n & 127) | 128)
        n >>= 7
    out.append(n)
    return bytes(out)


def _trailers(code: int, message: str = "") -> bytes:
    block = _literal(b"grpc-status", str(code).encode())
    if message:
        block += _literal(b"grpc-message", message.encode("ascii", "replace"))
    return block


_OK_TRAILERS = _trailers(0)
_RST_NO_ERROR = NO_ERROR.to_bytes(4, "big")


def _frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return _FRAME.pack(n >> 8, n & 0xFF, kind, flags, stream_id) + payload


def _goaway(last_stream: int, code: int, reason: str = "") -> bytes:
    return _frame(GOAWAY, 0, 0, _GOAWAY.pack(last_stream, code) + reason.encode()[:256])


class ConnectionError_(Exception):
    """The peer broke the protocol: the connection ends with GOAWAY and this code."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class _Stream:
    """One gRPC call: its unread bytes, its queue of messages, what waits to be sent."""

    __slots__ = (
        "closing",
        "credit",
        "ended",
        "handle",
        "headers_sent",
        "held",
        "inbox",
        "outbox",
        "parked",
        "queue",
        "queued",
        "received",
        "task",
        "task_cost",
    )

    def __init__(self) -> None:
        self.handle: Handler | None = None  # set once the call's method is known
        self.inbox = bytearray()
        self.queue: deque[bytes] = deque()  # messages not handled yet
        self.queued = 0  # what the queue costs (bytes + _MESSAGE_COST each)
        self.outbox = bytearray()  # DATA waiting for flow-control window
        self.parked = False  # in _blocked or _waiting
        # Our send window is credit + the peer's initial window, so a change of the initial
        # window (SETTINGS) needs no walk over every stream.
        self.credit = 0
        self.received = 0  # DATA bytes since our last WINDOW_UPDATE for this stream
        self.held = 0  # bytes of ours counted in the server's buffered total
        self.headers_sent = False
        self.ended = False  # the peer half-closed: trailers go once every answer is out
        self.closing = False  # trailers are due once the outbox is empty
        self.task: asyncio.Task[bytes] | None = None
        self.task_cost = 0


class _Connection(asyncio.Protocol):
    def __init__(self, server: H2GrpcServer) -> None:
        self._server = server
        self._limits = server.limits
        self._decoder = hpack.Decoder(max_header_list_size=server.limits.max_header_list_size)
        self._inbox = bytearray()
        self._out = bytearray()
        self._preface = False
        self._settled = False  # the peer's preface and first SETTINGS are in
        self._streams: dict[int, _Stream] = {}
        # Streams with answers waiting: on the connection window, or on their own window.
        self._blocked: dict[int, _Stream] = {}
        self._waiting: dict[int, _Stream] = {}
        # Streams we ended while the peer could still send on them (section 5.1, "closed"):
        # what it sends there is discarded, not an error. Oldest first, bounded.
        self._reset: dict[int, None] = {}
        self._last_stream = 0
        self._block: tuple[int, int, bool, bytearray] | None = None  # awaiting CONTINUATION
        self._peer_window = _DEFAULT_WINDOW  # connection-level window the peer grants us
        self._peer_initial = _DEFAULT_WINDOW  # its initial window for each stream
        self._peer_max_frame = _DEFAULT_MAX_FRAME
        self._received = 0  # DATA bytes since our last connection WINDOW_UPDATE
        self._peer_goaway = False
        self._draining = False  # our first GOAWAY of an idle shutdown is out
        self._goaway_last: int | None = None  # the last stream our final GOAWAY promised
        self._active = False  # a stream opened since the last idle check
        self._closed = False
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        server, limits = self._server, self._limits
        if len(server.connections) >= limits.max_connections and not server.make_room():
            self._closed = True
            server.note(
                logging.WARNING,
                "refusing an ext_proc connection: %d open already",
                len(server.connections),
            )
            transport.write(
                _frame(SETTINGS, 0, 0) + _goaway(0, ENHANCE_YOUR_CALM, "too many connections")
            )
            transport.close()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=limits.write_high_water)
        server.connections[self] = None
        settings = b"".join(
            _SETTING.pack(key, value)
            for key, value in (
                (SETTINGS_ENABLE_PUSH, 0),
                (SETTINGS_MAX_CONCURRENT_STREAMS, limits.max_concurrent_streams),
                (SETTINGS_INITIAL_WINDOW_SIZE, _WINDOW),
                (SETTINGS_MAX_FRAME_SIZE, _MAX_FRAME),
                (SETTINGS_MAX_HEADER_LIST_SIZE, limits.max_header_list_size),
            )
        )
        self._out += _frame(SETTINGS, 0, 0, settings)
        self._out += _frame(WINDOW_UPDATE, 0, 0, (_WINDOW - _DEFAULT_WINDOW).to_bytes(4, "big"))
        self._write()
        self._schedule(limits.handshake_timeout)

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        inbox = self._inbox
        inbox += data
        try:
            if not self._preface:
                if len(inbox) < len(PREFACE):
                    if not PREFACE.startswith(bytes(inbox)):
                        raise ConnectionError_(PROTOCOL_ERROR, "not an HTTP/2 client")
                    return
                if inbox[: len(PREFACE)] != PREFACE:
                    raise ConnectionError_(PROTOCOL_ERROR, "not an HTTP/2 client")
                del inbox[: len(PREFACE)]
                self._preface = True
            at, size = 0, len(inbox)
            while size - at >= 9:
                high, low, kind, flags, stream_id = _FRAME.unpack_from(inbox, at)
                length = high << 8 | low
                if length > _MAX_FRAME:
                    raise ConnectionError_(FRAME_SIZE_ERROR, f"frame of {length} bytes")
                end = at + 9 + length
                if end > size:
                    break
                self._on_frame(kind, flags, stream_id & 0x7FFFFFFF, bytes(inbox[at + 9 : end]))
                at = end
                if self._closed:
                    return
            del inbox[:at]
        except Exception as exc:
            self._on_error(exc)
            return
        self._write()

    def pause_writing(self) -> None:
        # The socket's write buffer is past the high-water mark: whatever the peer sends
        # next (a PING flood, more requests) would only add to it, so read nothing more
        # until it drains.
        if self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._cancel_timer()
        self._drop_streams()
        self._server.connections.pop(self, None)

    # --- frames in ---

    def _on_frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._block is not None and kind != CONTINUATION:
            raise ConnectionError_(PROTOCOL_ERROR, "header block interrupted")
        if not self._settled:
            if kind != SETTINGS or flags & ACK:
                raise ConnectionError_(PROTOCOL_ERROR, "the first frame must be SETTINGS")
            self._settled = True
            self._schedule(self._limits.idle_timeout)
        if kind == DATA:
            self._on_data(flags, stream_id, payload)
        elif kind == HEADERS:
            self._on_headers(flags, stream_id, payload)
        elif kind == CONTINUATION:
            self._on_continuation(flags, stream_id, payload)
        elif kind == RST_STREAM:
            self._on_rst_stream(stream_id, payload)
        elif kind == SETTINGS:
            self._on_settings(flags, stream_id, payload)
        elif kind == WINDOW_UPDATE:
            self._on_window_update(stream_id, payload)
        elif kind == PING:
            self._on_ping(flags, stream_id, payload)
        elif kind == GOAWAY:
            self._on_goaway(stream_id, payload)
        elif kind == PRIORITY:
            self._on_priority(stream_id, payload)
        elif kind == PUSH_PROMISE:
            raise ConnectionError_(PROTOCOL_ERROR, "a client may not push")
        # Frames of unknown types are ignored, as section 5.5 asks.

    def _is_idle(self, stream_id: int) -> bool:
        """Not opened yet (section 5.1): above the last stream, or even (ours, and we never
        open one). After our final GOAWAY, streams past it are ignored instead (6.8)."""
        if self._goaway_last is not None and stream_id > self._goaway_last:
            return False
        return stream_id > self._last_stream or not stream_id & 1

    def _on_settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise ConnectionError_(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise ConnectionError_(FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise ConnectionError_(FRAME_SIZE_ERROR, "bad SETTINGS length")
        grown = False
        for i in range(0, len(payload), 6):
            key, value = _SETTING.unpack_from(payload, i)
            if key == SETTINGS_INITIAL_WINDOW_SIZE:
                if value > _MAX_WINDOW:
                    raise ConnectionError_(FLOW_CONTROL_ERROR, "initial window too large")
                grown = grown or value > self._peer_initial
                self._peer_initial = value
            elif key == SETTINGS_MAX_FRAME_SIZE:
                if not _DEFAULT_MAX_FRAME <= value <= 2**24 - 1:
                    raise ConnectionError_(PROTOCOL_ERROR, "bad max frame size")
                self._peer_max_frame = value
            elif key == SETTINGS_ENABLE_PUSH and value > 1:
                raise ConnectionError_(PROTOCOL_ERROR, "bad ENABLE_PUSH")
            # HEADER_TABLE_SIZE limits a dynamic table our constant blocks never use.
        self._out += _frame(SETTINGS, ACK, 0)
        if grown:
            # Only streams stalled on their own window can move; each that does sends.
            for waiting_id, waiting in list(self._waiting.items()):
                self._flush(waiting_id, waiting)

    def _on_window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ConnectionError_(FRAME_SIZE_ERROR, "bad WINDOW_UPDATE length")
        increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if stream_id == 0:
            if not increment:
                raise ConnectionError_(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            was = self._peer_window
            self._peer_window += increment
            if self._peer_window > _MAX_WINDOW:
                raise ConnectionError_(FLOW_CONTROL_ERROR, "connection window past 2^31-1")
            if was <= 0:
                # Only a window that was spent can have stalled a stream; so a flood of
                # small updates costs one look at the stalled streams per spent window.
                for blocked_id, blocked in list(self._blocked.items()):
                    if self._peer_window <= 0:
                        break
                    self._flush(blocked_id, blocked)
            return
        stream = self._streams.get(stream_id)
        if stream is None:
            if self._is_idle(stream_id):
                raise ConnectionError_(PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream")
            return  # a closed stream: allowed (section 6.9), nothing to do
        if not increment:
            self._stream_error(stream_id, PROTOCOL_ERROR)
            return
        stream.credit += increment
        if stream.credit + self._peer_initial > _MAX_WINDOW:
            self._stream_error(stream_id, FLOW_CONTROL_ERROR)
            return
        if stream.outbox:
            self._flush(stream_id, stream)

    def _on_ping(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise ConnectionError_(PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise ConnectionError_(FRAME_SIZE_ERROR, "PING not of 8 bytes")
        if not flags & ACK:
            self._out += _frame(PING, ACK, 0, payload)
        elif payload == _DRAIN_PING and self._draining:
            self._final_goaway()

    def _on_goaway(self, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise ConnectionError_(PROTOCOL_ERROR, "GOAWAY on a stream")
        if len(payload) < 8:
            raise ConnectionError_(FRAME_SIZE_ERROR, "GOAWAY shorter than 8 bytes")
        self._peer_goaway = True
        if not self._streams:
            self._out += _goaway(self._last_stream, NO_ERROR)
            self._write()
            self._close()

    def _on_priority(self, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise ConnectionError_(PROTOCOL_ERROR, "PRIORITY on stream 0")
        if len(payload) == 5 and int.from_bytes(payload[:4], "big") & 0x7FFFFFFF != stream_id:
            return  # priority is deprecated (section 5.3.2): nothing to do
        # A stream error (section 6.3), but RST_STREAM may only go to an open stream.
        code = FRAME_SIZE_ERROR if len(payload) != 5 else PROTOCOL_ERROR
        if stream_id not in self._streams:
            raise ConnectionError_(code, "bad PRIORITY")
        self._stream_error(stream_id, code)

    def _on_rst_stream(self, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise ConnectionError_(PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise ConnectionError_(FRAME_SIZE_ERROR, "bad RST_STREAM length")
        if stream_id in self._streams:
            self._forget(stream_id)
        elif self._is_idle(stream_id):
            raise ConnectionError_(PROTOCOL_ERROR, "RST_STREAM on an idle stream")
        else:
            self._reset.pop(stream_id, None)

    @staticmethod
    def _unpad(payload: bytes, fixed: int) -> bytes:
        """The payload of a PADDED frame without its padding; ``fixed`` bytes of fields
        follow the pad length (section 6.1, 6.2)."""
        if len(payload) < 1 + fixed:
            raise ConnectionError_(FRAME_SIZE_ERROR, "PADDED frame too short")
        pad = payload[0]
        if pad > len(payload) - 1 - fixed:
            raise ConnectionError_(PROTOCOL_ERROR, "padding as long as the frame")
        return payload[1 : len(payload) - pad]

    def _on_headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise ConnectionError_(PROTOCOL_ERROR, "HEADERS on stream 0")
        if not stream_id & 1:
            raise ConnectionError_(PROTOCOL_ERROR, "HEADERS on an even (server) stream")
        fixed = 5 if flags & PRIORITY_FLAG else 0
        if flags & PADDED:
            payload = self._unpad(payload, fixed)
        self_dependent = False
        if fixed:
            if len(payload) < 5:
                raise ConnectionError_(FRAME_SIZE_ERROR, "HEADERS too short for its priority")
            self_dependent = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF == stream_id
            payload = payload[5:]
        if len(payload) > self._limits.max_header_list_size:
            raise ConnectionError_(ENHANCE_YOUR_CALM, "header block too large")
        if flags & END_HEADERS:
            self._on_header_block(stream_id, flags, self_dependent, payload)
        else:
            self._block = (stream_id, flags, self_dependent, bytearray(payload))

    def _on_continuation(self, flags: int, stream_id: int, payload: bytes) -> None:
        if self._block is None or self._block[0] != stream_id:
            raise ConnectionError_(PROTOCOL_ERROR, "unexpected CONTINUATION")
        block = self._block[3]
        block += payload
        # Checked before decoding: a CONTINUATION flood must not grow the block unbounded.
        if len(block) > self._limits.max_header_list_size:
            raise ConnectionError_(ENHANCE_YOUR_CALM, "header block too large")
        if flags & END_HEADERS:
            _, block_flags, self_dependent, _ = self._block
            self._block = None
            self._on_header_block(stream_id, block_flags, self_dependent, bytes(block))

    def _on_header_block(
        self, stream_id: int, flags: int, self_dependent: bool, block: bytes
    ) -> None:
        try:
            # Decoded even when unused: the dynamic table must follow every block.
            headers = self._decoder.decode(block, raw=True)
        except hpack.OversizedHeaderListError as exc:
            raise ConnectionError_(ENHANCE_YOUR_CALM, "header list too large") from exc
        except hpack.HPACKError as exc:
            raise ConnectionError_(COMPRESSION_ERROR, f"bad header block: {exc}") from exc
        stream = self._streams.get(stream_id)
        if stream is not None:  # trailers
            if stream.ended:
                self._stream_error(stream_id, STREAM_CLOSED)
            elif not flags & END_STREAM:
                self._stream_error(stream_id, PROTOCOL_ERROR)  # trailers must end the stream
            else:
                self._on_end(stream_id, stream)
            return
        if stream_id <= self._last_stream:
            if stream_id in self._reset:  # we ended it; the peer had not seen that yet
                if flags & END_STREAM:
                    del self._reset[stream_id]
                return
            raise ConnectionError_(PROTOCOL_ERROR, "HEADERS on a closed stream")
        if self._goaway_last is not None:
            return  # a stream past our final GOAWAY: ignored (section 6.8)
        self._last_stream = stream_id
        if self_dependent:
            self._stream_error(stream_id, PROTOCOL_ERROR)
            return
        if len(self._streams) >= self._limits.max_concurrent_streams:
            self._stream_error(stream_id, REFUSED_STREAM)  # the peer may retry it
            return
        stream = self._streams[stream_id] = _Stream()
        self._active = True
        path = next((value for name, value in headers if name == b":path"), None)
        open_stream = self._server.methods.get(path) if path is not None else None
        if open_stream is None:
            stream.ended = bool(flags & END_STREAM)
            self._refuse(stream_id, UNIMPLEMENTED, "unknown method")
            return
        metadata = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in headers
            if name.startswith(_OUR_METADATA)
        }
        try:
            stream.handle = open_stream(metadata)
        except CallError as exc:
            stream.ended = bool(flags & END_STREAM)
            self._refuse(stream_id, exc.code, exc.message)
            return
        except Exception as exc:  # the handler's factory answers its own failures: a bug
            self._server.note(logging.ERROR, "an ext_proc stream could not open: %r", exc)
            stream.ended = bool(flags & END_STREAM)
            self._refuse(stream_id, INTERNAL, "internal error")
            return
        if flags & END_STREAM:
            self._on_end(stream_id, stream)

    def _on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise ConnectionError_(PROTOCOL_ERROR, "DATA on stream 0")
        flow_length = len(payload)  # padding counts against the window too
        if flags & PADDED:
            payload = self._unpad(payload, 0)
        # Counted for every DATA frame, even on closed streams (section 6.9).
        self._received += flow_length
        if self._received > _WINDOW // 2:
            self._out += _frame(WINDOW_UPDATE, 0, 0, self._received.to_bytes(4, "big"))
            self._received = 0
        stream = self._streams.get(stream_id)
        if stream is None:
            if self._is_idle(stream_id):
                raise ConnectionError_(PROTOCOL_ERROR, "DATA on an idle stream")
            if stream_id in self._reset:  # we ended it; the peer had not seen that yet
                if flags & END_STREAM:
                    del self._reset[stream_id]
            elif self._goaway_last is None or stream_id <= self._goaway_last:
                self._stream_error(stream_id, STREAM_CLOSED)
            return
        if stream.ended:  # half-closed by the peer (section 5.1)
            self._stream_error(stream_id, STREAM_CLOSED)
            return
        if stream.closing:  # answered for good (FinalAnswer): the rest is not read
            if flags & END_STREAM:
                stream.ended = True
            return
        stream.received += flow_length
        if stream.received > _WINDOW // 2:
            self._out += _frame(WINDOW_UPDATE, 0, stream_id, stream.received.to_bytes(4, "big"))
            stream.received = 0
        if payload:
            inbox = stream.inbox
            inbox += payload
            server = self._server
            # Held bytes are counted inline on this path (no method call per step): it is
            # the one every request takes.
            stream.held += len(payload)
            server.buffered += len(payload)
            if server.buffered > server.max_buffered:
                self._refuse(stream_id, RESOURCE_EXHAUSTED, "the server is holding too much data")
                return
            extra = 0
            while len(inbox) >= 5:
                compressed, length = _MESSAGE.unpack_from(inbox)
                if compressed:
                    self._refuse(stream_id, UNIMPLEMENTED, "compressed messages are not supported")
                    return
                if length > server.max_message:
                    limit = server.max_message
                    self._refuse(
                        stream_id,
                        RESOURCE_EXHAUSTED,
                        f"message of {length} bytes is over the limit of {limit}",
                    )
                    return
                if len(inbox) < 5 + length:
                    break
                stream.queue.append(bytes(inbox[5 : 5 + length]))
                del inbox[: 5 + length]
                stream.queued += length + _MESSAGE_COST
                extra += _MESSAGE_COST - 5  # a queued message costs more than its framing
            stream.held += extra
            server.buffered += extra
        if flags & END_STREAM:
            self._on_end(stream_id, stream)
        else:
            self._pump(stream_id, stream)
        if stream.task is not None and stream.queued > self._server.max_message + _MESSAGE_COST:
            # Messages waiting behind one being answered: at most one largest message.
            self._refuse(stream_id, RESOURCE_EXHAUSTED, "too many messages waiting")

    def _on_end(self, stream_id: int, stream: _Stream) -> None:
        """The peer half-closed the stream."""
        stream.ended = True
        if stream.closing:
            return
        if stream.inbox:
            # The call ends inside a message: never an OK status for what was cut off.
            self._refuse(stream_id, INTERNAL, "truncated message")
            return
        self._pump(stream_id, stream)

    # --- answers out ---

    def _pump(self, stream_id: int, stream: _Stream) -> None:
        """Handle queued messages in order until one must wait; end the call when done."""
        handle = stream.handle
        assert handle is not None  # messages are queued only on a stream of our method
        while stream.task is None and stream.queue and not stream.closing:
            message = stream.queue.popleft()
            cost = len(message) + _MESSAGE_COST
            stream.queued -= cost
            try:
                answer = handle(message)
            except CallError as exc:
                self._refuse(stream_id, exc.code, exc.message)
                return
            except Exception as exc:  # the handler answers its own failures: a bug
                self._server.note(logging.ERROR, "an ext_proc handler raised %r", exc)
                self._refuse(stream_id, INTERNAL, "internal error")
                return
            if isinstance(answer, bytes):
                stream.held -= cost
                self._server.buffered -= cost
                self._send(stream_id, stream, answer)
            else:
                task = stream.task = asyncio.ensure_future(answer)
                stream.task_cost = cost  # held until the answer is in
                task.add_done_callback(functools.partial(self._on_answer, stream_id))
        if stream.ended and stream.task is None and not stream.queue and not stream.closing:
            stream.closing = True
            self._flush(stream_id, stream)

    def _on_answer(self, stream_id: int, task: asyncio.Task[bytes]) -> None:
        stream = self._streams.get(stream_id)
        if stream is None or stream.task is not task or self._closed:
            return  # the stream ended meanwhile (and its task was cancelled)
        stream.task = None
        self._release(stream, stream.task_cost)
        try:
            exc = task.exception() if not task.cancelled() else asyncio.CancelledError()
            if isinstance(exc, CallError):
                self._refuse(stream_id, exc.code, exc.message)
            elif exc is not None:  # the handler answers its own failures: a bug
                self._server.note(logging.ERROR, "an ext_proc answer failed: %r", exc)
                self._refuse(stream_id, INTERNAL, "internal error")
            else:
                answer = task.result()
                if not isinstance(answer, bytes):
                    raise TypeError(f"an answer of type {type(answer).__name__}")
                self._send(stream_id, stream, answer)
                self._pump(stream_id, stream)
        except Exception as exc:
            self._on_error(exc)
            return
        self._write()

    def _send(self, stream_id: int, stream: _Stream, message: bytes) -> None:
        if not stream.headers_sent:
            self._out += _frame(HEADERS, END_HEADERS, stream_id, _RESPONSE_HEADERS)
            stream.headers_sent = True
        stream.outbox += _MESSAGE.pack(0, len(message))
        stream.outbox += message
        stream.held += 5 + len(message)
        self._server.buffered += 5 + len(message)
        if isinstance(message, AnswerThenMore):
            # The server's next answer is awaited like a handler's: the call stays open.
            task = stream.task = asyncio.ensure_future(message.follow)
            stream.task_cost = 0
            task.add_done_callback(functools.partial(self._on_answer, stream_id))
        elif isinstance(message, FinalAnswer):
            # The call is over: what the peer sent beyond is never read.
            stream.closing = True
            if stream.inbox or stream.queue:
                self._release(stream, len(stream.inbox) + stream.queued)
                stream.inbox.clear()
                stream.queue.clear()
                stream.queued = 0
        self._flush(stream_id, stream)

    def _flush(self, stream_id: int, stream: _Stream) -> None:
        """Send what the flow-control windows allow; the rest waits for WINDOW_UPDATE."""
        outbox = stream.outbox
        if outbox:
            window = stream.credit + self._peer_initial
            if window > _MAX_WINDOW:  # SETTINGS raised it past the limit (section 6.9.2)
                raise ConnectionError_(FLOW_CONTROL_ERROR, "stream window past 2^31-1")
            sent = 0
            while outbox:
                room = min(len(outbox), window, self._peer_window, self._peer_max_frame)
                if room <= 0:
                    break
                self._out += _frame(DATA, 0, stream_id, bytes(outbox[:room]))
                del outbox[:room]
                window -= room
                self._peer_window -= room
                sent += room
            stream.credit -= sent
            stream.held -= sent
            self._server.buffered -= sent
            if outbox:
                stream.parked = True
                if window > 0:
                    self._blocked[stream_id] = stream
                    self._waiting.pop(stream_id, None)
                else:
                    self._waiting[stream_id] = stream
                    self._blocked.pop(stream_id, None)
                return
            if stream.parked:
                stream.parked = False
                self._blocked.pop(stream_id, None)
                self._waiting.pop(stream_id, None)
        if stream.closing:
            block = _OK_TRAILERS if stream.headers_sent else _RESPONSE_HEADERS + _OK_TRAILERS
            self._out += _frame(HEADERS, END_HEADERS | END_STREAM, stream_id, block)
            self._ended_by_us(stream_id, stream)

    def _refuse(self, stream_id: int, code: int, message: str) -> None:
        """End a call with an error status (trailers only, if nothing was sent yet)."""
        stream = self._streams.get(stream_id)
        block = _trailers(code, message)
        if stream is None or not stream.headers_sent:
            block = _RESPONSE_HEADERS + block
        self._out += _frame(HEADERS, END_HEADERS | END_STREAM, stream_id, block)
        if stream is not None:
            self._ended_by_us(stream_id, stream)

    def _ended_by_us(self, stream_id: int, stream: _Stream) -> None:
        """Our END_STREAM is out. If the peer has not half-closed, ask it to stop sending
        (RST_STREAM NO_ERROR, section 8.1) and discard what it sent before it knew."""
        if not stream.ended:
            self._out += _frame(RST_STREAM, 0, stream_id, _RST_NO_ERROR)
            self._remember_reset(stream_id)
        self._forget(stream_id)

    def _stream_error(self, stream_id: int, code: int) -> None:
        """A stream error (section 5.4.2): RST_STREAM with ``code``."""
        self._out += _frame(RST_STREAM, 0, stream_id, code.to_bytes(4, "big"))
        self._remember_reset(stream_id)
        self._forget(stream_id)

    def _remember_reset(self, stream_id: int) -> None:
        reset = self._reset
        reset[stream_id] = None
        if len(reset) > self._limits.max_concurrent_streams:
            del reset[next(iter(reset))]

    def _forget(self, stream_id: int) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return
        if stream.task is not None:
            stream.task.cancel()
            stream.task = None
        if stream.held:
            self._release(stream, stream.held)
        if stream.parked:
            self._blocked.pop(stream_id, None)
            self._waiting.pop(stream_id, None)
        if not self._streams and (self._peer_goaway or self._goaway_last is not None):
            self._write()
            self._close()

    def _release(self, stream: _Stream, n: int) -> None:
        stream.held -= n
        self._server.buffered -= n

    def _drop_streams(self) -> None:
        for stream_id in list(self._streams):
            stream = self._streams.pop(stream_id)
            if stream.task is not None:
                stream.task.cancel()
            self._release(stream, stream.held)
        self._blocked.clear()
        self._waiting.clear()

    # --- connection ---

    def _on_error(self, exc: Exception) -> None:
        """Whatever went wrong becomes a GOAWAY and a close, logged in one line."""
        if isinstance(exc, ConnectionError_):
            code, reason = exc.code, str(exc)
            self._server.note(logging.WARNING, "closing an ext_proc connection: %s", reason)
        else:  # a bug of ours: the connection ends, the server goes on
            code, reason = INTERNAL_ERROR, "internal error"
            self._server.note(
                logging.ERROR, "ext_proc connection failed: %s: %s", type(exc).__name__, exc
            )
        self._out += _goaway(self._last_stream, code, reason)
        self._write()
        self._close()

    def _write(self) -> None:
        if self._out and self._transport is not None and not self._transport.is_closing():
            self._transport.write(bytes(self._out))
        self._out.clear()

    def _schedule(self, delay: float) -> None:
        self._cancel_timer()
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        try:
            if self._closed:
                # Closing, but the peer has not read what was left to write: cut it.
                if self._transport is not None:
                    self._transport.abort()
            elif not self._settled:
                raise ConnectionError_(SETTINGS_TIMEOUT, "no preface and SETTINGS in time")
            elif self._draining:
                self._final_goaway()  # the peer never answered our PING: close anyway
            elif self._streams or self._active:
                # Checked once per period rather than timed per stream: a request costs
                # nothing here, and an idle connection goes within two periods.
                self._active = False
                self._schedule(self._limits.idle_timeout)
            else:
                self._drain()
        except Exception as exc:
            self._on_error(exc)

    def _drain(self) -> None:
        """Shut an idle connection down without losing a stream the peer is opening right
        now: GOAWAY with the highest stream id and a PING, then the real last stream once
        the PING comes back (section 6.8)."""
        self._draining = True
        self._out += _goaway(_MAX_WINDOW, NO_ERROR, "idle")
        self._out += _frame(PING, 0, 0, _DRAIN_PING)
        self._write()
        self._schedule(self._limits.handshake_timeout)

    def _final_goaway(self) -> None:
        self._draining = False
        self._goaway_last = self._last_stream
        self._out += _goaway(self._last_stream, NO_ERROR, "idle")
        self._write()
        self._cancel_timer()
        if not self._streams:
            self._close()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._drop_streams()
        self._inbox.clear()
        self._block = None
        # No longer counted against the cap: nothing more is read or answered here.
        self._server.connections.pop(self, None)
        if self._transport is not None:
            self._transport.close()
            # close() waits for the write buffer to drain; a peer that never reads would
            # hold the socket for ever.
            self._schedule(self._limits.handshake_timeout)

    def close(self) -> None:
        self._close()

    @property
    def busy(self) -> bool:
        return bool(self._streams)

    @property
    def settled(self) -> bool:
        return self._settled

    def footprint(self) -> int:
        """Bytes this connection holds: unparsed input, a header block in progress, its
        streams' data and what waits in the socket's write buffer."""
        held = len(self._inbox) + (len(self._block[3]) if self._block is not None else 0)
        held += sum(stream.held for stream in self._streams.values())
        if self._transport is not None and not self._closed:
            held += self._transport.get_write_buffer_size()
        return held

    def go_away(self, reason: str = "") -> None:
        """Tell the peer to open no new streams here; the ones in flight may finish."""
        if self._closed:
            return
        self._goaway_last = self._last_stream
        self._out += _goaway(self._last_stream, NO_ERROR, reason)
        self._write()
        if not self._streams:
            self._close()


class H2GrpcServer:
    """Serves ``methods``, by path (e.g. b"/pkg.Service/Method"): each call's messages go to
    the handler that the method's opener gives for the call's metadata."""

    def __init__(
        self,
        methods: Mapping[bytes, OpenStream],
        max_message: int,
        limits: Limits | None = None,
    ) -> None:
        self.methods = dict(methods)
        self.max_message = max_message
        self.limits = limits or Limits()
        self.max_buffered = max(self.limits.max_buffered, 4 * (max_message + _MESSAGE_COST))
        self.buffered = 0  # bytes held for streams, over all connections
        self.connections: dict[_Connection, None] = {}  # oldest first
        self._server: asyncio.Server | None = None
        self._notes = 0
        self._notes_since = 0.0
        self._suppressed = 0

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (port 0 picks one); return the port."""
        loop = asyncio.get_running_loop()
        # No SO_REUSEPORT: a second server on the same port must fail, not share it.
        self._server = await loop.create_server(
            lambda: _Connection(self), host, port, reuse_address=True, backlog=1024
        )
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self, grace: float) -> None:
        """Stop accepting, let the streams in flight finish (up to ``grace`` s), close."""
        if self._server is None:
            return
        self._server.close()
        for connection in list(self.connections):
            connection.go_away()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while any(c.busy for c in self.connections) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        for connection in list(self.connections):
            connection.close()
        await self._server.wait_closed()

    def make_room(self) -> bool:
        """Close the oldest connection without an open stream, preferring one still in its
        handshake; False if every connection has a stream in flight."""
        idle = [c for c in self.connections if not c.busy]
        if not idle:
            return False
        victim = next((c for c in idle if not c.settled), idle[0])
        victim.go_away("too many connections")
        victim.close()
        return True

    def footprint(self) -> int:
        """Bytes all connections hold (see _Connection.footprint)."""
        return sum(connection.footprint() for connection in self.connections)

    def note(self, level: int, message: str, *args: object) -> None:
        """Log one line, at most 20 per 10 s: a flood of bad connections must not flood
        the log too."""
        now = time.monotonic()
        if now - self._notes_since >= 10:
            if self._suppressed:
                log.warning("%d more ext_proc connection messages suppressed", self._suppressed)
            self._notes, self._notes_since, self._suppressed = 0, now, 0
        if self._notes < 20:
            self._notes += 1
            log.log(level, message, *args)
        else:
            self._suppressed += 1

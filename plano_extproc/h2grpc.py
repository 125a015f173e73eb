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
once the previous one is answered.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import struct
from collections import deque
from collections.abc import Awaitable, Callable

import hpack

log = logging.getLogger("plano_extproc.h2grpc")

Handler = Callable[[bytes], "bytes | Awaitable[bytes]"]


class FinalAnswer(bytes):
    """An answer after which the call is over: the transport sends it, then ends the call
    with status OK (for ext_proc: the processor needs no further message on this stream)."""

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# Frame types and flags (RFC 9113, section 6).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE = 0, 1, 2, 3, 4, 5
PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 6, 7, 8, 9
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20
# Settings and error codes.
SETTINGS_HEADER_TABLE_SIZE, SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE = 1, 4, 5
SETTINGS_MAX_CONCURRENT_STREAMS = 3
NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR = 0, 1, 3, 6
COMPRESSION_ERROR = 9
# gRPC status codes (grpc/status.h).
RESOURCE_EXHAUSTED = 8
UNIMPLEMENTED = 12
INTERNAL = 13

_FRAME = struct.Struct(">HBBBL")  # length (24 bits, split 16 + 8), type, flags, stream id
_MESSAGE = struct.Struct(">BL")  # gRPC framing: compressed flag, length
_SETTING = struct.Struct(">HL")
_WINDOW = 2**31 - 1  # what we let Envoy send ahead: bodies never wait on us
_MAX_FRAME = 1 << 20  # the largest frame we accept (once Envoy has our SETTINGS)
_DEFAULT_WINDOW = 65535
_DEFAULT_MAX_FRAME = 16384

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


def _frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return _FRAME.pack(n >> 8, n & 0xFF, kind, flags, stream_id) + payload


class ConnectionError_(Exception):
    """The peer broke the protocol: the connection ends with GOAWAY and this code."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class _Stream:
    """One gRPC call: its unread bytes, its queue of messages, what waits to be sent."""

    __slots__ = (
        "closing",
        "ended",
        "headers_sent",
        "inbox",
        "outbox",
        "queue",
        "received",
        "task",
        "window",
    )

    def __init__(self, window: int) -> None:
        self.inbox = bytearray()
        self.queue: deque[bytes] = deque()  # messages not handled yet
        self.outbox = bytearray()  # DATA waiting for flow-control window
        self.window = window  # what Envoy lets us send on this stream
        self.received = 0  # DATA bytes since our last WINDOW_UPDATE for this stream
        self.headers_sent = False
        self.ended = False  # Envoy half-closed: trailers go once every answer is out
        self.closing = False  # trailers are due once the outbox is empty
        self.task: asyncio.Task[bytes] | None = None


class _Connection(asyncio.Protocol):
    def __init__(self, server: H2GrpcServer) -> None:
        self._server = server
        self._decoder = hpack.Decoder()
        self._inbox = bytearray()
        self._out = bytearray()
        self._preface = False
        self._streams: dict[int, _Stream] = {}
        self._last_stream = 0
        self._block: tuple[int, int, bytearray] | None = None  # HEADERS awaiting CONTINUATION
        self._peer_window = _DEFAULT_WINDOW  # connection-level window Envoy grants us
        self._peer_initial = _DEFAULT_WINDOW  # its initial window for each stream
        self._peer_max_frame = _DEFAULT_MAX_FRAME
        self._received = 0  # DATA bytes since our last connection WINDOW_UPDATE
        self._going_away = False
        self._transport: asyncio.Transport | None = None

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._server.connections.add(self)
        settings = b"".join(
            _SETTING.pack(key, value)
            for key, value in (
                (SETTINGS_MAX_CONCURRENT_STREAMS, 2**31 - 1),
                (SETTINGS_INITIAL_WINDOW_SIZE, _WINDOW),
                (SETTINGS_MAX_FRAME_SIZE, _MAX_FRAME),
            )
        )
        self._out += _frame(SETTINGS, 0, 0, settings)
        self._out += _frame(WINDOW_UPDATE, 0, 0, (_WINDOW - _DEFAULT_WINDOW).to_bytes(4, "big"))
        self._write()

    def data_received(self, data: bytes) -> None:
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
            del inbox[:at]
        except ConnectionError_ as exc:
            log.warning("closing an ext_proc connection: %s", exc)
            self._out += _frame(
                GOAWAY, 0, 0, struct.pack(">LL", self._last_stream, exc.code) + str(exc).encode()
            )
            self._write()
            self.close()
            return
        self._write()

    def connection_lost(self, exc: Exception | None) -> None:
        for stream_id in list(self._streams):
            self._forget(stream_id)
        self._server.connections.discard(self)

    # --- frames in ---

    def _on_frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._block is not None and kind != CONTINUATION:
            raise ConnectionError_(PROTOCOL_ERROR, "header block interrupted")
        if kind == DATA:
            self._on_data(flags, stream_id, payload)
        elif kind == HEADERS:
            self._on_headers(flags, stream_id, payload)
        elif kind == CONTINUATION:
            if self._block is None or self._block[0] != stream_id:
                raise ConnectionError_(PROTOCOL_ERROR, "unexpected CONTINUATION")
            self._block[2].extend(payload)
            if flags & END_HEADERS:
                block_stream, block_flags, block = self._block
                self._block = None
                self._on_header_block(block_stream, block_flags, bytes(block))
        elif kind == RST_STREAM:
            self._forget(stream_id)
        elif kind == SETTINGS:
            if not flags & ACK:
                self._on_settings(payload)
        elif kind == WINDOW_UPDATE:
            self._on_window_update(stream_id, payload)
        elif kind == PING:
            if not flags & ACK:
                self._out += _frame(PING, ACK, 0, payload)
        elif kind == GOAWAY:
            self._going_away = True
            if not self._streams:
                self.close()
        elif kind == PUSH_PROMISE:
            raise ConnectionError_(PROTOCOL_ERROR, "a client may not push")
        # PRIORITY and unknown frame types are ignored, as RFC 9113 asks.

    def _on_settings(self, payload: bytes) -> None:
        if len(payload) % 6:
            raise ConnectionError_(FRAME_SIZE_ERROR, "bad SETTINGS length")
        for i in range(0, len(payload), 6):
            key, value = _SETTING.unpack_from(payload, i)
            if key == SETTINGS_INITIAL_WINDOW_SIZE:
                if value > 2**31 - 1:
                    raise ConnectionError_(FLOW_CONTROL_ERROR, "initial window too large")
                delta, self._peer_initial = value - self._peer_initial, value
                for stream in self._streams.values():
                    stream.window += delta
            elif key == SETTINGS_MAX_FRAME_SIZE:
                if not _DEFAULT_MAX_FRAME <= value <= 2**24 - 1:
                    raise ConnectionError_(PROTOCOL_ERROR, "bad max frame size")
                self._peer_max_frame = value
            # HEADER_TABLE_SIZE limits a dynamic table our constant blocks never use.
        self._out += _frame(SETTINGS, ACK, 0)
        self._flush_all()

    def _on_window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ConnectionError_(FRAME_SIZE_ERROR, "bad WINDOW_UPDATE length")
        increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if stream_id == 0:
            self._peer_window += increment
            self._flush_all()
            return
        stream = self._streams.get(stream_id)
        if stream is not None:
            stream.window += increment
            self._flush(stream_id, stream)

    def _on_headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if flags & PADDED:
            payload = payload[1 : len(payload) - payload[0]]
        if flags & PRIORITY_FLAG:
            payload = payload[5:]
        if flags & END_HEADERS:
            self._on_header_block(stream_id, flags, payload)
        else:
            self._block = (stream_id, flags, bytearray(payload))

    def _on_header_block(self, stream_id: int, flags: int, block: bytes) -> None:
        try:
            # Decoded even when unused: the dynamic table must follow every block.
            headers = self._decoder.decode(block, raw=True)
        except hpack.HPACKError as exc:
            raise ConnectionError_(COMPRESSION_ERROR, f"bad header block: {exc}") from exc
        stream = self._streams.get(stream_id)
        if stream is None:
            if stream_id <= self._last_stream or not stream_id & 1:
                return  # a stream we already ended (or reset): nothing to do
            self._last_stream = stream_id
            stream = self._streams[stream_id] = _Stream(self._peer_initial)
            stream.ended = bool(flags & END_STREAM)
            path = next((value for name, value in headers if name == b":path"), None)
            if path != self._server.method:
                self._refuse(stream_id, UNIMPLEMENTED, "unknown method")
                return
        if flags & END_STREAM:
            stream.ended = True
            self._pump(stream_id, stream)

    def _on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        flow_length = len(payload)  # padding counts against the window too
        if flags & PADDED:
            payload = payload[1 : len(payload) - payload[0]]
        self._received += flow_length
        if self._received > _WINDOW // 2:
            self._out += _frame(WINDOW_UPDATE, 0, 0, self._received.to_bytes(4, "big"))
            self._received = 0
        stream = self._streams.get(stream_id)
        if stream is None:
            return  # a stream we ended or refused
        stream.received += flow_length
        if stream.received > _WINDOW // 2:
            self._out += _frame(WINDOW_UPDATE, 0, stream_id, stream.received.to_bytes(4, "big"))
            stream.received = 0
        inbox = stream.inbox
        inbox += payload
        while len(inbox) >= 5:
            compressed, length = _MESSAGE.unpack_from(inbox)
            if compressed:
                self._refuse(stream_id, UNIMPLEMENTED, "compressed messages are not supported")
                return
            if length > self._server.max_message:
                limit = self._server.max_message
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
        if flags & END_STREAM:
            stream.ended = True
        self._pump(stream_id, stream)

    # --- answers out ---

    def _pump(self, stream_id: int, stream: _Stream) -> None:
        """Handle queued messages in order until one must wait; end the call when done."""
        while stream.task is None and stream.queue:
            answer = self._server.handle(stream.queue.popleft())
            if isinstance(answer, bytes):
                self._send(stream_id, stream, answer)
            else:
                stream.task = asyncio.ensure_future(answer)
                stream.task.add_done_callback(functools.partial(self._on_answer, stream_id))
        if stream.ended and stream.task is None and not stream.queue and not stream.closing:
            if not stream.headers_sent:
                self._out += _frame(HEADERS, END_HEADERS, stream_id, _RESPONSE_HEADERS)
                stream.headers_sent = True
            stream.closing = True
            self._flush(stream_id, stream)

    def _on_answer(self, stream_id: int, task: asyncio.Task[bytes]) -> None:
        stream = self._streams.get(stream_id)
        if stream is None or task.cancelled():
            return
        stream.task = None
        exc = task.exception()
        if exc is not None:  # the handler answers its own failures; this is a bug of ours
            log.error("an ext_proc answer failed", exc_info=exc)
            self._refuse(stream_id, INTERNAL, "internal error")
        else:
            self._send(stream_id, stream, task.result())
            self._pump(stream_id, stream)
        self._write()

    def _send(self, stream_id: int, stream: _Stream, message: bytes) -> None:
        if not stream.headers_sent:
            self._out += _frame(HEADERS, END_HEADERS, stream_id, _RESPONSE_HEADERS)
            stream.headers_sent = True
        stream.outbox += _MESSAGE.pack(0, len(message))
        stream.outbox += message
        self._flush(stream_id, stream)

    def _flush(self, stream_id: int, stream: _Stream) -> None:
        """Send what the flow-control windows allow; the rest waits for WINDOW_UPDATE."""
        outbox = stream.outbox
        while outbox:
            room = min(len(outbox), stream.window, self._peer_window, self._peer_max_frame)
            if room <= 0:
                return
            self._out += _frame(DATA, 0, stream_id, bytes(outbox[:room]))
            del outbox[:room]
            stream.window -= room
            self._peer_window -= room
        if stream.closing:
            self._out += _frame(HEADERS, END_HEADERS | END_STREAM, stream_id, _OK_TRAILERS)
            self._streams.pop(stream_id, None)
            if self._going_away and not self._streams:
                self._write()
                self.close()

    def _flush_all(self) -> None:
        for stream_id, stream in list(self._streams.items()):
            if stream.outbox or stream.closing:
                self._flush(stream_id, stream)

    def _refuse(self, stream_id: int, code: int, message: str) -> None:
        """End a call with an error status (trailers only, if nothing was sent yet)."""
        stream = self._streams.get(stream_id)
        block = _trailers(code, message)
        if stream is None or not stream.headers_sent:
            block = _RESPONSE_HEADERS + block
        self._out += _frame(HEADERS, END_HEADERS | END_STREAM, stream_id, block)
        if stream is not None and not stream.ended:
            # We will read no more of it: tell Envoy to stop sending (NO_ERROR).
            self._out += _frame(RST_STREAM, 0, stream_id, NO_ERROR.to_bytes(4, "big"))
        self._forget(stream_id)

    def _forget(self, stream_id: int) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is not None and stream.task is not None:
            stream.task.cancel()

    # --- connection ---

    def _write(self) -> None:
        if self._out and self._transport is not None and not self._transport.is_closing():
            self._transport.write(bytes(self._out))
        self._out.clear()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    @property
    def busy(self) -> bool:
        return bool(self._streams)

    def go_away(self) -> None:
        """Tell Envoy to open no new streams here; the ones in flight may finish."""
        self._going_away = True
        self._out += _frame(GOAWAY, 0, 0, struct.pack(">LL", self._last_stream, NO_ERROR))
        self._write()
        if not self._streams:
            self.close()


class H2GrpcServer:
    """Serves ``method`` (e.g. b"/pkg.Service/Method") with ``handle``."""

    def __init__(self, method: bytes, handle: Handler, max_message: int) -> None:
        self.method = method
        self.handle = handle
        self.max_message = max_message
        self.connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None

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

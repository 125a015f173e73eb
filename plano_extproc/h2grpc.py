"""One gRPC method, a bidirectional stream, served straight on HTTP/2 with the h2 library.

Why not grpcio's server: it spent about 330 µs of CPU per ext_proc request here, most of it
in its own machinery, against about 150 µs for this (bench/RESULTS.md). Envoy is the only
client and ext_proc needs little of gRPC: one method, messages that are never compressed,
one answer per message in order, a status in the trailers. HTTP/2 itself (framing, HPACK,
flow control, settings, pings) is the h2 library's, a well-tried implementation.

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

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

log = logging.getLogger("plano_extproc.h2grpc")

Handler = Callable[[bytes], "bytes | Awaitable[bytes]"]

_PREFIX = struct.Struct(">BI")  # gRPC message framing: compressed flag, length
_HEADERS = [(b":status", b"200"), (b"content-type", b"application/grpc")]
_OK = [(b"grpc-status", b"0")]
# Envoy may send this much before we acknowledge it: bodies arrive without waiting on us.
_WINDOW = 2**31 - 1
_MAX_FRAME = 1 << 20

# gRPC status codes (grpc/status.h).
RESOURCE_EXHAUSTED = 8
UNIMPLEMENTED = 12
INTERNAL = 13


def _status(code: int, message: str) -> list[tuple[bytes, bytes]]:
    return [(b"grpc-status", str(code).encode()), (b"grpc-message", message.encode())]


class _Stream:
    """One gRPC call: its unread bytes, its queue of messages, what waits to be sent."""

    __slots__ = ("closed", "ended", "headers_sent", "inbox", "outbox", "queue", "task")

    def __init__(self) -> None:
        self.inbox = bytearray()
        self.queue: deque[bytes] = deque()  # messages not handled yet
        self.outbox = bytearray()  # answers waiting for flow-control window
        self.headers_sent = False
        self.ended = False  # Envoy half-closed: trailers go once every answer is out
        self.task: asyncio.Task[bytes] | None = None
        self.closed = False


class _Connection(asyncio.Protocol):
    def __init__(self, server: H2GrpcServer) -> None:
        self._server = server
        self._h2 = h2.connection.H2Connection(
            config=h2.config.H2Configuration(
                client_side=False,
                header_encoding=None,
                # Envoy's headers are well-formed; checking them costs on every stream.
                validate_inbound_headers=False,
                normalize_inbound_headers=False,
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
            )
        )
        self._streams: dict[int, _Stream] = {}
        self._transport: asyncio.Transport | None = None

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._server.connections.add(self)
        codes = h2.settings.SettingCodes
        self._h2.initiate_connection()
        # In force once Envoy acknowledges them (h2 applies them then).
        self._h2.update_settings(
            {
                codes.INITIAL_WINDOW_SIZE: _WINDOW,
                codes.MAX_FRAME_SIZE: _MAX_FRAME,
                codes.MAX_CONCURRENT_STREAMS: 2**31 - 1,
            }
        )
        self._h2.increment_flow_control_window(_WINDOW - self._h2.inbound_flow_control_window)
        self._write()

    def data_received(self, data: bytes) -> None:
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            log.warning("closing an ext_proc connection: HTTP/2 protocol error: %s", exc)
            self._write()
            self._close()
            return
        for event in events:
            if isinstance(event, h2.events.DataReceived):
                self._on_data(event)
            elif isinstance(event, h2.events.RequestReceived):
                self._on_request(event)
            elif isinstance(event, h2.events.StreamEnded):
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream.ended = True
                    self._pump(event.stream_id, stream)
            elif isinstance(event, h2.events.StreamReset):
                self._forget(event.stream_id)
            elif isinstance(event, h2.events.WindowUpdated):
                self._on_window(event.stream_id)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._write()
                self._close()
                return
        self._write()

    def connection_lost(self, exc: Exception | None) -> None:
        for stream_id in list(self._streams):
            self._forget(stream_id)
        self._server.connections.discard(self)

    # --- streams ---

    def _on_request(self, event: h2.events.RequestReceived) -> None:
        headers = dict(event.headers or ())
        if headers.get(b":path") != self._server.method:
            self._refuse(event.stream_id, UNIMPLEMENTED, "unknown method")
            return
        self._streams[event.stream_id] = _Stream()

    def _on_data(self, event: h2.events.DataReceived) -> None:
        stream_id = event.stream_id
        if event.flow_controlled_length:
            self._h2.acknowledge_received_data(event.flow_controlled_length, stream_id)
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        inbox = stream.inbox
        inbox += event.data
        while len(inbox) >= 5:
            compressed, length = _PREFIX.unpack_from(inbox)
            if compressed:
                self._refuse(stream_id, UNIMPLEMENTED, "compressed messages are not supported")
                return
            if length > self._server.max_message:
                self._refuse(
                    stream_id,
                    RESOURCE_EXHAUSTED,
                    f"message of {length} bytes is over the limit of {self._server.max_message}",
                )
                return
            if len(inbox) < 5 + length:
                break
            stream.queue.append(bytes(inbox[5 : 5 + length]))
            del inbox[: 5 + length]
        self._pump(stream_id, stream)

    def _pump(self, stream_id: int, stream: _Stream) -> None:
        """Handle queued messages in order until one must wait; end the call when done."""
        try:
            while stream.task is None and stream.queue:
                answer = self._server.handle(stream.queue.popleft())
                if isinstance(answer, bytes):
                    self._send(stream_id, stream, answer)
                else:
                    stream.task = asyncio.ensure_future(answer)
                    stream.task.add_done_callback(functools.partial(self._on_answer, stream_id))
            if stream.ended and stream.task is None and not stream.queue:
                self._finish(stream_id, stream)
        except h2.exceptions.ProtocolError:
            # Envoy reset the stream, in the same read as the frames just handled.
            self._forget(stream_id)

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
            try:
                self._send(stream_id, stream, task.result())
            except h2.exceptions.ProtocolError:
                self._forget(stream_id)
            else:
                self._pump(stream_id, stream)
        self._write()

    def _send(self, stream_id: int, stream: _Stream, message: bytes) -> None:
        if not stream.headers_sent:
            self._h2.send_headers(stream_id, _HEADERS)
            stream.headers_sent = True
        stream.outbox += _PREFIX.pack(0, len(message))
        stream.outbox += message
        self._flush(stream_id, stream)

    def _flush(self, stream_id: int, stream: _Stream) -> None:
        """Send what the peer's flow-control window allows; the rest waits for WINDOW_UPDATE."""
        outbox = stream.outbox
        while outbox:
            room = min(self._h2.local_flow_control_window(stream_id), len(outbox))
            if room <= 0:
                return
            room = min(room, self._h2.max_outbound_frame_size)
            self._h2.send_data(stream_id, bytes(outbox[:room]))
            del outbox[:room]
        if stream.closed:
            self._h2.send_headers(stream_id, _OK, end_stream=True)
            del self._streams[stream_id]

    def _finish(self, stream_id: int, stream: _Stream) -> None:
        if not stream.headers_sent:
            self._h2.send_headers(stream_id, _HEADERS)
            stream.headers_sent = True
        stream.closed = True  # trailers follow the last answer out (see _flush)
        self._flush(stream_id, stream)

    def _on_window(self, stream_id: int) -> None:
        targets = list(self._streams.items()) if stream_id == 0 else []
        if stream_id:
            stream = self._streams.get(stream_id)
            targets = [(stream_id, stream)] if stream is not None else []
        for sid, stream in targets:
            if stream.outbox:
                try:
                    self._flush(sid, stream)
                except h2.exceptions.ProtocolError:
                    self._forget(sid)

    def _refuse(self, stream_id: int, code: int, message: str) -> None:
        """End a call with an error status (a trailers-only answer if nothing was sent)."""
        stream = self._streams.get(stream_id)
        trailers = _status(code, message)
        try:
            if stream is None or not stream.headers_sent:
                self._h2.send_headers(stream_id, [*_HEADERS, *trailers], end_stream=True)
            else:
                self._h2.send_headers(stream_id, trailers, end_stream=True)
        except h2.exceptions.ProtocolError:
            pass  # Envoy closed it already
        self._forget(stream_id)

    def _forget(self, stream_id: int) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is not None and stream.task is not None:
            stream.task.cancel()

    # --- connection ---

    def _write(self) -> None:
        data = self._h2.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    @property
    def busy(self) -> bool:
        return bool(self._streams)

    def go_away(self) -> None:
        """Tell Envoy to open no new streams here; the ones in flight may finish."""
        try:
            self._h2.close_connection()
        except h2.exceptions.ProtocolError:
            return
        self._write()


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
        deadline = asyncio.get_running_loop().time() + grace
        while any(c.busy for c in self.connections):
            if asyncio.get_running_loop().time() >= deadline:
                break
            await asyncio.sleep(0.01)
        for connection in list(self.connections):
            connection._close()
        await self._server.wait_closed()

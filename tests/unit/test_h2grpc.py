"""The HTTP/2 transport frame by frame: what grpcio's client never sends (padding,
CONTINUATION, PING, tiny windows, resets, a bad preface, every protocol violation of RFC
9113's frame definitions), its bounds (header size, streams, connections, buffered data,
unread replies, handshake and idle time), driven over a raw socket."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Awaitable, Callable

import hpack
import pytest

from plano_extproc.extproc import h2grpc
from plano_extproc.extproc.h2grpc import FinalAnswer, H2GrpcServer, Limits
from tests.unit.h2client import Client, data_frames, frame, message

pytestmark = pytest.mark.unit

METHOD = b"/test.Service/Echo"
Handle = Callable[[bytes], "bytes | Awaitable[bytes]"]
Test = Callable[[Client, H2GrpcServer], Awaitable[None]]


def echo(m: bytes) -> bytes:
    return m[::-1]


async def serve_and_check(
    test: Test, handle: Handle = echo, limits: Limits | None = None, max_message: int = 1 << 20
) -> None:
    server = H2GrpcServer({METHOD: lambda _: handle}, max_message=max_message, limits=limits)
    port = await server.start("127.0.0.1", 0)
    client = await Client.connect(port, METHOD)
    try:
        await test(client, server)
        # Whatever the test did, the server still serves a call on a new connection.
        fresh = await Client.connect(port, METHOD)
        fresh.send(fresh.call(1, b"after"))
        data, trailers = await fresh.answer(1)
        assert data[5:] in (b"after", b"retfa") and trailers[b"grpc-status"] == b"0"
        fresh.close()
    finally:
        client.close()
        await server.stop(0.5)
    assert server.buffered == 0  # every byte held for a stream was given back


def with_server(
    test: Test, handle: Handle = echo, limits: Limits | None = None, max_message: int = 1 << 20
) -> None:
    asyncio.run(serve_and_check(test, handle, limits, max_message))


async def eventually(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("still not so after 5 s")


def settings_of(payload: bytes) -> dict[int, int]:
    return dict(struct.unpack(">HL", payload[i : i + 6]) for i in range(0, len(payload), 6))


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(h2grpc.WINDOW_UPDATE, 0, stream_id, increment.to_bytes(4, "big"))


class Gate:
    """A handler whose answers to b"wait..." wait until ``release`` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        self.handled: list[bytes] = []

    def __call__(self, m: bytes) -> bytes | Awaitable[bytes]:
        self.handled.append(m)
        if m.startswith(b"wait"):
            return self._wait(m)
        if m.startswith(b"final"):
            return FinalAnswer(m[::-1])
        return m[::-1]

    async def _wait(self, m: bytes) -> bytes:
        self.started.set()
        await self.release.wait()
        return m[::-1]


# --- the protocol as Envoy speaks it ---


def test_settings_ping_and_an_answer_in_padded_continued_frames() -> None:
    async def test(client: Client, server: H2GrpcServer) -> None:
        _, payload = await client.until(h2grpc.SETTINGS)
        settings = settings_of(payload)
        assert settings[h2grpc.SETTINGS_MAX_CONCURRENT_STREAMS] == 1000
        assert settings[h2grpc.SETTINGS_MAX_HEADER_LIST_SIZE] == 16 * 1024
        assert settings[h2grpc.SETTINGS_ENABLE_PUSH] == 0
        block = client.headers()
        padded = bytes([3]) + block[:5] + b"\x00\x00\x00"
        client.send(frame(h2grpc.PING, 0, 0, b"12345678"))
        flags, payload = await client.until(h2grpc.PING)
        assert flags & h2grpc.ACK and payload == b"12345678"
        client.send(
            frame(h2grpc.HEADERS, h2grpc.PADDED, 1, padded),
            frame(h2grpc.CONTINUATION, h2grpc.END_HEADERS, 1, block[5:]),
            frame(h2grpc.DATA, h2grpc.PADDED, 1, bytes([2]) + message(b"abc") + b"\x00\x00"),
            # Padding may fill all but the pad length itself.
            frame(h2grpc.DATA, h2grpc.PADDED | h2grpc.END_STREAM, 1, b"\x04" + b"\x00" * 4),
        )
        data, trailers = await client.answer(1)
        assert data == message(b"cba")
        assert trailers[b"grpc-status"] == b"0"

    with_server(test)


def test_answers_wait_for_window_updates() -> None:
    big = bytes(range(256)) * 400  # 100 KB

    async def test(client: Client, server: H2GrpcServer) -> None:
        # Envoy could grant as little as 10 bytes per stream: the answer waits for more.
        client.send(frame(h2grpc.SETTINGS, 0, 0, struct.pack(">HL", 4, 10)))
        client.send(client.call(1, big))
        got = b""
        while len(got) < 10:
            kind, _, _, payload = await client.read()
            if kind == h2grpc.DATA:
                got += payload
        assert len(got) == 10  # nothing beyond the window
        client.send(window_update(1, 1 << 20), window_update(0, 1 << 20))
        rest, trailers = await client.answer(1)
        assert got + rest == message(big[::-1])
        assert trailers[b"grpc-status"] == b"0"

    with_server(test)


def test_a_larger_initial_window_releases_waiting_answers() -> None:
    async def test(client: Client, server: H2GrpcServer) -> None:
        client.send(frame(h2grpc.SETTINGS, 0, 0, struct.pack(">HL", 4, 0)))
        client.send(client.call(1, b"x" * 100), client.call(3, b"y" * 100))
        await asyncio.sleep(0.05)  # both answers now wait on a window of 0
        client.send(frame(h2grpc.SETTINGS, 0, 0, struct.pack(">HL", 4, 1000)))
        assert (await client.answer(1))[0] == message(b"x" * 100)
        assert (await client.answer(3))[0] == message(b"y" * 100)

    with_server(test)


def test_messages_are_answered_in_order_when_one_waits() -> None:
    gate = Gate()

    async def test(client: Client, server: H2GrpcServer) -> None:
        client.send(client.call(1, b"wait-1", b"two", end=False))
        await asyncio.wait_for(gate.started.wait(), 5)
        assert gate.handled == [b"wait-1"]  # the next message waits for the first answer
        gate.release.set()
        client.send(data_frames(1, b"", end=True))
        data, trailers = await client.answer(1)
        assert data == message(b"1-tiaw") + message(b"owt")
        assert trailers[b"grpc-status"] == b"0"

    with_server(test, gate)


def test_a_reset_stream_cancels_its_pending_answer_and_others_go_on() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def slow(m: bytes) -> bytes:
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return m

    def handle(m: bytes) -> bytes | Awaitable[bytes]:
        return slow(m) if m == b"slow" else m

    async def test(client: Client, server: H2GrpcServer) -> None:
        client.send(client.call(1, b"slow", end=False))
        await asyncio.wait_for(started.wait(), 5)
        client.send(frame(h2grpc.RST_STREAM, 0, 1, b"\x00\x00\x00\x08"))
        await asyncio.wait_for(cancelled.wait(), 5)
        client.send(client.call(3, b"fast"))
        data, trailers = await client.answer(3)
        assert data == message(b"fast") and trailers[b"grpc-status"] == b"0"

    with_server(test, handle)


def test_a_compressed_message_is_refused() -> None:
    async def test(client: Client, server: H2GrpcServer) -> None:
        client.send(
            frame(h2grpc.HEADERS, h2grpc.END_HEADERS, 1, client.headers()),
            frame(h2grpc.DATA, 0, 1, b"\x01" + (3).to_bytes(4, "big") + b"abc"),
        )
        data, trailers = await client.answer(1)
        assert data == b""
        assert trailers[b"grpc-status"] == str(h2grpc.UNIMPLEMENTED).encode()
        _, payload = await client.until(h2grpc.RST_STREAM, 1)  # we read no more of it
        assert payload == b"\x00\x00\x00\x00"

    with_server(test)


def test_an_unknown_method_is_unimplemented() -> None:
    async def test(client: Client, server: H2GrpcServer) -> None:
        client.path = b"/other.Service/Method"
        client.send(client.call(1, b"x"))
        data, trailers = await client.answer(1)
        assert data == b"" and trailers[b"grpc-status"] == str(h2grpc.UNIMPLEMENTED).encode()

    with_server(test)


# --- gRPC semantics ---


def test_a_truncated_message_is_never_ok() -> None:
    async def test(client: Client, server: H2GrpcServer) -> None:
        whole = message(b"abcdef")
        client.send(frame(h2grpc.HEADERS, h2grpc.END_HEADERS, 1, client.headers()))
        client.send(frame(h2grpc.DATA, h2grpc.END_STREAM, 1, whole[:-2]))
        data, trailers = await client.answer(1)
        assert data == b""
        assert trailers[b"grpc-status"] == str(h2grpc.INTERNAL).encode()
        assert trailers[b"grpc-message"] == b"truncated message"
        # Cut inside the 5-byte prefix, and ended by trailers instead of DATA.
        client.send(frame(h2grpc.HEADERS, h2grpc.END_HEADERS, 3, client.headers()))
        client.send(frame(h2grpc.DATA, 0, 3, message(b"ok") + whole[:3]))
        client.send(
            frame(h2grpc.HEADERS, h2grpc.END_HEADERS | h2grpc.END_STREAM, 3, client.headers([]))
        )
        data, trailers = await client.answer(3)
        assert trailers[b"grpc-status"] == str(h2grpc.INTERNAL).encode()

    with_server(test)


def test_a_final_answer_ends_the_call_at_once() -> None:
    gate = Gate()

    async def test(client: Client, server: H2GrpcServer) -> None:
        # The client has not half-closed: the call still ends, status OK, and RST_STREAM
        # NO_ERROR asks it to send nothing more.
        client.send(client.call(1, b"final", end=False))
        data, trailers = await client.answer(1)
        assert data == message(b"lanif") and trailers[b"grpc-status"] == b"0"
        _, payload = await client.until(h2grpc.RST_STREAM, 1)
        assert payload == b"\x00\x00\x00\x00"
        # What it sent before it knew is discarded: no error, no second handling.
        client.send(data_frames(1, message(b"late"), end=False))
        client.send(frame(h2grpc.HEADERS, h2grpc.END_HEADERS | h2grpc.END_STREAM, 1, b"\x88"))
        client.send(client.call(3, b"final-2"))  # half-closed: no reset needed
        data, trailers = await client.answer(3)
        assert data == message(b"2-lanif") and trailers[b"grpc-status"] == b"0"
        client.send(frame(h2grpc.PING, 0, 0, b"after..."))
        kinds = []
        while True:
            kind, _, _, _ = await client.read()
            if kind == h2grpc.PING:
                break
            kinds.append(kind)
        assert h2grpc.RST_STREAM not in kinds and h2grpc.GOAWAY not in kinds
        assert gate.handled == [b"final", b"final-2"]

    with_server(test, gate)


def test_a_handler_that_raises_costs_one_call() -> None:
    def handle(m: bytes) -> bytes:
        if m == b"boom":
            raise RuntimeError("boom")
        return m

    async def test(client: Client, server: H2GrpcServer) -> None:
        client.send(client.call(1, b"boom"), client.call(3, b"fine"))
        _, trailers = await client.answer(1)
        assert trailers[b"grpc-status"] == str(h2grpc.INTERNAL).encode()
        data, trailers = await client.answer(3)
        assert data == message(b"fine") and trailers[b"grpc-status"] == b"0"

    with_server(test, handle)


# --- protocol violations: connection errors ---


def _open(c: Client) -> list[bytes]:
    return [frame(h2grpc.HEADERS, h2grpc.END_HEADERS, 1, c.headers())]


def _priority(depends: int) -> bytes:
    return depends.to_bytes(4, "big") + b"\x10"


CONNECTION_ERRORS: dict[str, tuple[Callable[[Client], list[bytes]], int]] = {
    "empty PADDED DATA": (
        lambda c: [*_open(c), frame(h2grpc.DATA, h2grpc.PADDED, 1)],
        h2grpc.FRAME_SIZE_ERROR,
    ),
    "empty PADDED HEADERS": (
        lambda c: [frame(h2grpc.HEADERS, h2grpc.PADDED | h2grpc.END_HEADERS, 1)],
        h2grpc.FRAME_SIZE_ERROR,
    ),
    "DATA padding as long as the frame": (
        lambda c: [*_open(c), frame(h2grpc.DATA, h2grpc.PADDED, 1, b"\x05abcd")],
        h2grpc.PROTOCOL_ERROR,
    ),
    "HEADERS padding past the frame": (
        lambda c: [
            frame(h2grpc.HEADERS, h2grpc.PADDED | h2grpc.END_HEADERS, 1, b"\xff" + c.headers())
        ],
        h2grpc.PROTOCOL_ERROR,
    ),
    "HEADERS too short for its priority": (
        lambda c: [frame(h2grpc.HEADERS, h2grpc.PRIORITY_FLAG | h2grpc.END_HEADERS, 1, b"\x00")],
        h2grpc.FRAME_SIZE_ERROR,
    ),
    "WINDOW_UPDATE of 0 on the connection": (
        lambda c: [window_update(0, 0)],
        h2grpc.PROTOCOL_ERROR,
    ),
    "connection window past 2^31-1": (
        lambda c: [window_update(0, 2**31 - 1)],
        h2grpc.FLOW_CONTROL_ERROR,
    ),
    "WINDOW_UPDATE of 3 bytes": (
        lambda c: [frame(h2grpc.WINDOW_UPDATE, 0, 0, b"\x00\x00\x01")],
        h2grpc.FRAME_SIZE_ERROR,
    ),
    "PING of 7 bytes": (lambda c: [frame(h2grpc.PING, 0, 0, b"1234567")], h2grpc.FRAME_SIZE_ERROR),
    "PING of 9 bytes": (
        lambda c: [frame(h2grpc.PING, 0, 0, b"123456789")],
        h2grpc.FRAME_SIZE_ERROR,
    ),
    "PING on a stream": (
        lambda c: [*_open(c), frame(h2grpc.PING, 0, 1, b"12345678")],
        h2grpc.PROTOCOL_ERROR,
    ),
    "HEADERS on stream 0": (
        lambda c: [frame(h2grpc.HEADERS, h2grpc.END_HEADERS, 0, c.headers())],
        h2grpc.PROTOCOL_ERROR,
    ),
    "DATA on stream 0": (lambda c: [frame(h2grpc.DATA, 0, 0, b"x")], h2grpc.PROTOCOL_ERROR),
    "RST_STREAM on stream 0": (
        lambda c: [frame(h2grpc.RST_STREAM, 0, 0, b"\x00\x00\x00\x08")],
        h2grpc.PROTOCOL_ERROR,
    ),
    "PRIORITY on stream 0": (
        lambda c: [frame(h2grpc.PRIORITY, 0, 0, _priority(1))],
        h2grpc.PROTOCOL_ERROR,
    ),
    "SETTINGS on a stream": (
        lambda c: [*_open(c), frame(h2grpc.SETTINGS, 0, 1)],
        h2grpc.PROTOCOL_ERROR,
    ),
    "GOAWAY on a stream": (
        lambda c: [*_open(c), frame(h2grpc.GOAWAY, 0, 1, bytes(8))],
        h2grpc.PROTOCOL_ERROR,
    ),
    "GOAWAY of 4 bytes": (
        lambda c: [frame(h2grpc.GOAWAY, 0, 0, bytes(4))],
        h2grpc.FRAME_SIZE_ERROR,
    ),
    "SETTINGS ACK with a payload": (
        lambda c: [frame(h2grpc.SETTINGS, h2grpc.ACK, 0, struct.pack(">HL", 4, 1))],
        h2grpc.FRAME_SIZE_ERROR,
    ),
    "SETTINGS of 5 bytes": (
        lambda c: [frame(h2grpc.SETTINGS, 0, 0, bytes(5))],
        h2grpc.FRAME_SIZE_ERROR,
    ),
    "ENABLE_PUSH of 2": (
        lambda c: [frame(h2grpc.SETTINGS, 0, 0, struct.pack(">HL", 2, 2))],
        h2grpc.PROTOCOL_ERROR,
    ),
    "initial window past 2^31-1": (
        lambda c: [frame(h2grpc.SETTINGS, 0, 0, struct.pack(">HL", 4, 2**31))],
        h2grpc.FLOW_CONTROL_ERROR,
    ),
    "max frame size under 16 KiB": (
        lambda c: [frame(h2grpc.SETTINGS, 0, 0, struct.pack(">HL", 5, 100))],
        h2grpc.PROTOCOL_ERROR,
    ),
    "RST_STREAM of 3 bytes": (
        lambda c: [*_open(c), frame(h2grpc.RST_STREAM, 0, 1, b"\x00\x00\x08")],
        h2grpc.FRAME_SIZE_ERROR,
    ),
    "PRIORITY of 4 bytes on an idle stream": (
        lambda c: [frame(h2grpc.PRIORITY, 0, 5, bytes(4))],
        h2grpc.FRAME_SIZE_ERROR,
    ),
    "DATA on an idle stream": (
        lambda c: [frame(h2grpc.DATA, 0, 1, message(b"x"))],
        h2grpc.PROTOCOL_ERROR,
    ),
    "WINDOW_UPDATE on an idle stream": (
        lambda c: [window_update(7, 1)],
        h2grpc.PROTOCOL_ERROR,
    ),
    "RST_STREAM on an idle stream": (
        lambda c: [frame(h2grpc.RST_STREAM, 0, 7, bytes(4))],
        h2grpc.PROTOCOL_ERROR,
    ),
    "CONTINUATION without HEADERS": (
        lambda c: [frame(h2grpc.CONTINUATION, h2grpc.END_HEADERS, 1, c.headers())],
        h2grpc.PROTOCOL_ERROR,
    ),
    "CONTINUATION on another stream": (
        lambda c: [
            frame(h2grpc.HEADERS, 0, 1, c.headers()[:3]),
            frame(h2grpc.CONTINUATION, h2grpc.END_HEADERS, 3, b""),
        ],
        h2grpc.PROTOCOL_ERROR,
    ),
    "PING inside a header block": (
        lambda c: [
            frame(h2grpc.HEADERS, 0, 1, c.headers()[:3]),
            frame(h2grpc.PING, 0, 0, bytes(8)),
        ],
        h2grpc.PROTOCOL_ERROR,
    ),
    "HEADERS on an even (server) stream": (
        lambda c: [frame(h2grpc.HEADERS, h2grpc.END_HEADERS, 2, c.headers())],
        h2grpc.PROTOCOL_ERROR,
    ),
    "stream ids going backwards": (
        lambda c: [
            frame(h2grpc.HEADERS, h2grpc.END_HEADERS, 5, c.headers()),
            frame(h2grpc.HEADERS, h2grpc.END_HEADERS, 3, c.headers()),
        ],
        h2grpc.PROTOCOL_ERROR,
    ),
    "a stream id used again": (
        lambda c: [c.call(1, b"x"), c.call(1, b"y")],
        h2grpc.PROTOCOL_ERROR,
    ),
    "PUSH_PROMISE from the client": (
        lambda c: [frame(h2grpc.PUSH_PROMISE, h2grpc.END_HEADERS, 1, b"\x00\x00\x00\x02")],
        h2grpc.PROTOCOL_ERROR,
    ),
    "a frame past our max frame size": (
        # Only the frame header: the server must not wait for the payload to refuse it.
        lambda c: [struct.pack(">L", h2grpc._MAX_FRAME + 1)[1:] + bytes([h2grpc.PING]) + bytes(5)],
        h2grpc.FRAME_SIZE_ERROR,
    ),
    "a header block that is not HPACK": (
        lambda c: [frame(h2grpc.HEADERS, h2grpc.END_HEADERS, 1, b"\xff\xff\xff\xff\xff\xff")],
        h2grpc.COMPRESSION_ERROR,
    ),
    "an HPACK table past what we allow": (
        lambda c: [frame(h2grpc.HEADERS, h2grpc.END_HEADERS, 1, b"\x3f\xe2\x1f" + c.headers())],
        h2grpc.COMPRESSION_ERROR,
    ),
}


@pytest.mark.parametrize("case", list(CONNECTION_ERRORS))
def test_a_protocol_violation_is_a_connection_error(case: str) -> None:
    frames, code = CONNECTION_ERRORS[case]

    async def test(client: Client, server: H2GrpcServer) -> None:
        client.send(*frames(client))
        assert (await client.goaway())[1] == code
        assert await client.closed()

    with_server(test)


def test_the_first_frame_must_be_settings() -> None:
    async def run() -> None:
        server = H2GrpcServer({METHOD: lambda _: echo}, max_message=100)
        port = await server.start("127.0.0.1", 0)
        client = await Client.connect(port, METHOD, handshake=False)
        client.send(h2grpc.PREFACE, frame(h2grpc.PING, 0, 0, bytes(8)))
        assert (await client.goaway())[1] == h2grpc.PROTOCOL_ERROR
        assert await client.closed()
        client.close()
        await server.stop(0)

    asyncio.run(run())


def test_not_http2_at_all_is_closed() -> None:
    async def run() -> None:
        server = H2GrpcServer({METHOD: lambda _: echo}, max_message=100)
        port = await server.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        rest = await asyncio.wait_for(reader.read(), 5)
        assert rest == b"" or rest[3] in (h2grpc.SETTINGS, h2grpc.GOAWAY)  # then closed
        writer.close()
        await server.stop(0)

    asyncio.run(run())


def test_an_unexpected_failure_is_an_internal_error_logged_in_one_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(self: object, flags: int, stream_id: int, payload: bytes) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(h2grpc._Connection, "_on_ping", broken)

    async def test(client: Client, server: H2GrpcServer) -> None:
        client.send(frame(h2grpc.PING, 0, 0, bytes(8)))
        assert (await client.goaway())[1] == h2grpc.INTERNAL_ERROR
        assert await client.closed()

    with caplog.at_level(logging.WARNING, logger="plano_extproc.extproc.h2grpc"):
        with_server(test)
    (record,) = caplog.records
    assert record.levelno == logging.ERROR and record.exc_info is None
    assert "KeyError" in record.getMessage()


# --- protocol violations: stream errors, the connection goes on ---

STREAM_ERRORS: dict[str, tuple[Callable[[Client], list[bytes]], int]] = {
    "WINDOW_UPDATE of 0 on a stream": (
        lambda c: [*_open(c), window_update(1, 0)],
        h2grpc.PROTOCOL_ERROR,
    ),
    "stream window past 2^31-1": (
        lambda c: [*_open(c), window_update(1, 2**31 - 1)],
        h2grpc.FLOW_CONTROL_ERROR,
    ),
    "DATA after the client half-closed": (
        lambda c: [c.call(1, b"wait"), frame(h2grpc.DATA, 0, 1, b"x")],
        h2grpc.STREAM_CLOSED,
    ),
    "trailers that do not end the stream": (
        lambda c: [*_open(c), frame(h2grpc.HEADERS, h2grpc.END_HEADERS, 1, b"\x88")],
        h2grpc.PROTOCOL_ERROR,
    ),
    "a stream that depends on itself": (
        lambda c: [
            frame(
                h2grpc.HEADERS,
                h2grpc.PRIORITY_FLAG | h2grpc.END_HEADERS,
                1,
                _priority(1) + c.headers(),
            )
        ],
        h2grpc.PROTOCOL_ERROR,
    ),
    "PRIORITY of 4 bytes on an open stream": (
        lambda c: [*_open(c), frame(h2grpc.PRIORITY, 0, 1, bytes(4))],
        h2grpc.FRAME_SIZE_ERROR,
    ),
}


@pytest.mark.parametrize("case", list(STREAM_ERRORS))
def test_a_stream_violation_resets_only_that_stream(case: str) -> None:
    frames, code = STREAM_ERRORS[case]
    gate = Gate()

    async def test(client: Client, server: H2GrpcServer) -> None:
        client.send(*frames(client))
        _, payload = await client.until(h2grpc.RST_STREAM, 1)
        assert int.from_bytes(payload, "big") == code
        client.send(client.call(3, b"next"))
        data, trailers = await client.answer(3)
        assert data == message(b"txen") and trailers[b"grpc-status"] == b"0"

    with_server(test, gate)


def test_data_on_a_stream_that_ended_is_a_stream_error() -> None:
    async def test(client: Client, server: H2GrpcServer) -> None:
        client.send(client.call(1, b"x"))
        await client.answer(1)
        client.send(frame(h2grpc.DATA, 0, 1, b"late"), window_update(1, 10))
        _, payload = await client.until(h2grpc.RST_STREAM, 1)
        assert int.from_bytes(payload, "big") == h2grpc.STREAM_CLOSED
        client.send(client.call(3, b"y"))
        assert (await client.answer(3))[1][b"grpc-status"] == b"0"

    with_server(test)


# --- bounds ---


def test_a_continuation_flood_is_cut_at_the_header_limit() -> None:
    largest: list[int] = []

    async def test(client: Client, server: H2GrpcServer) -> None:
        client.send(frame(h2grpc.HEADERS, 0, 1, client.headers()))
        # CONTINUATION after CONTINUATION until the server gives up on the connection (and
        # no further: writing to a closed socket could cost us its GOAWAY).
        for _ in range(1000):
            client.send(frame(h2grpc.CONTINUATION, 0, 1, b"\x00" * 1000))
            await asyncio.sleep(0.001)
            if not server.connections:
                break
            largest.append(server.footprint())
        assert (await client.goaway())[1] == h2grpc.ENHANCE_YOUR_CALM
        assert await client.closed()

    with_server(test, limits=Limits(max_header_list_size=4096))
    assert 3000 < max(largest) <= 4096 + 1009


def test_a_header_list_over_the_limit_once_decoded() -> None:
    # 60 bytes on the wire that decode to 20 KB: one large entry in HPACK's dynamic table,
    # then 40 one-byte references to it.
    entry = hpack.Encoder().encode([(b"x-big", b"v" * 400)], huffman=False)  # indexed (62)

    async def test(client: Client, server: H2GrpcServer) -> None:
        block = client.headers() + entry + b"\xbe" * 40
        client.send(frame(h2grpc.HEADERS, h2grpc.END_HEADERS, 1, block))
        assert (await client.goaway())[1] == h2grpc.ENHANCE_YOUR_CALM

    with_server(test, limits=Limits(max_header_list_size=4096))


def test_streams_past_the_limit_are_refused() -> None:
    gate = Gate()

    async def test(client: Client, server: H2GrpcServer) -> None:
        _, payload = await client.until(h2grpc.SETTINGS)
        assert settings_of(payload)[h2grpc.SETTINGS_MAX_CONCURRENT_STREAMS] == 3
        client.send(*(client.call(i, b"wait") for i in (1, 3, 5, 7, 9)))
        refused: list[int] = []
        while len(refused) < 2:
            kind, _, stream_id, payload = await client.read()
            if kind == h2grpc.RST_STREAM:
                assert int.from_bytes(payload, "big") == h2grpc.REFUSED_STREAM
                refused.append(stream_id)
        assert refused == [7, 9]
        gate.release.set()
        for stream_id in (1, 3, 5):
            assert (await client.answer(stream_id))[1][b"grpc-status"] == b"0"
        client.send(client.call(11, b"then"))  # room again
        assert (await client.answer(11))[0] == message(b"neht")

    with_server(test, gate, Limits(max_concurrent_streams=3))


def test_a_ping_flood_that_is_never_read_stops_the_reading() -> None:
    pings = frame(h2grpc.PING, 0, 0, b"flooding") * 1024  # 17 KB of PINGs

    async def run() -> None:
        server = H2GrpcServer({METHOD: lambda _: echo}, 100, Limits(write_high_water=16 * 1024))
        port = await server.start("127.0.0.1", 0)
        # Small socket buffers both ways, so that what the server holds shows soon.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
        writer.transport.set_write_buffer_limits(high=1 << 30)
        writer.write(h2grpc.PREFACE + frame(h2grpc.SETTINGS, 0, 0))
        await eventually(lambda: len(server.connections) == 1)
        (connection,) = server.connections
        server_sock = connection._transport.get_extra_info("socket")  # type: ignore[union-attr]
        server_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sent, largest = 0, 0
        for _ in range(2000):
            writer.write(pings)
            sent += 1024
            await asyncio.sleep(0.001)
            largest = max(largest, server.footprint())
            if writer.transport.get_write_buffer_size() > 1 << 20:
                break  # the server stopped reading
        else:
            raise AssertionError("the server read 34 MB of PINGs whose answers nobody read")
        # What it holds: its write buffer up to the mark, plus the answers to one read (at
        # most 256 KiB of PINGs).
        assert largest < 16 * 1024 + 300 * 1024
        # Reading again, every PING is answered.
        received = b""
        while received.count(b"\x00\x00\x08\x06\x01\x00\x00\x00\x00flooding") < sent:
            received += await asyncio.wait_for(reader.read(1 << 20), 5)
        writer.close()
        await server.stop(0)
        assert server.buffered == 0

    asyncio.run(run())


def test_past_the_cap_a_new_connection_replaces_an_idle_one() -> None:
    gate = Gate()

    async def test(client: Client, server: H2GrpcServer) -> None:
        port = client.writer.get_extra_info("peername")[1]
        client.send(client.call(1, b"wait"))  # busy: never the one to go
        await asyncio.wait_for(gate.started.wait(), 5)
        idle = await Client.connect(port, METHOD)
        await idle.until(h2grpc.SETTINGS)
        silent = await Client.connect(port, METHOD, handshake=False)
        await eventually(lambda: len(server.connections) == 3)
        # At the cap: the connection still in its handshake goes first, then the idle one.
        newer = await Client.connect(port, METHOD)
        assert await silent.goaway() == (0, h2grpc.NO_ERROR)
        assert await silent.closed(1)
        newest = await Client.connect(port, METHOD)
        assert await idle.goaway() == (0, h2grpc.NO_ERROR)
        assert await idle.closed(1)
        newest.send(newest.call(1, b"served"))
        assert (await newest.answer(1))[0] == message(b"devres")
        gate.release.set()  # the busy connection was left alone
        assert (await client.answer(1))[1][b"grpc-status"] == b"0"
        for other in (idle, silent, newer, newest):
            other.close()
        await eventually(lambda: len(server.connections) == 1)

    with_server(test, gate, Limits(max_connections=3))


def test_past_the_cap_with_every_connection_busy_a_new_one_is_closed_at_once() -> None:
    gate = Gate()

    async def test(client: Client, server: H2GrpcServer) -> None:
        port = client.writer.get_extra_info("peername")[1]
        second = await Client.connect(port, METHOD)
        for c in (client, second):
            c.send(c.call(1, b"wait"))
        await eventually(lambda: all(c.busy for c in server.connections))
        third = await Client.connect(port, METHOD)
        assert (await third.goaway()) == (0, h2grpc.ENHANCE_YOUR_CALM)
        assert await third.closed(1)
        gate.release.set()
        for c in (client, second):
            assert (await c.answer(1))[1][b"grpc-status"] == b"0"
        second.close()  # room for the check on a fresh connection after the test
        await eventually(lambda: len(server.connections) == 1)

    with_server(test, gate, Limits(max_connections=2))


def test_a_silent_connection_is_closed_after_the_handshake_timeout() -> None:
    async def run() -> None:
        server = H2GrpcServer({METHOD: lambda _: echo}, 100, Limits(handshake_timeout=0.2))
        port = await server.start("127.0.0.1", 0)
        silent = await Client.connect(port, METHOD, handshake=False)
        preface_only = await Client.connect(port, METHOD, handshake=False)
        preface_only.send(h2grpc.PREFACE)
        for client in (silent, preface_only):
            assert (await client.goaway())[1] == h2grpc.SETTINGS_TIMEOUT
            assert await client.closed(2)
            client.close()
        await eventually(lambda: not server.connections)
        await server.stop(0)

    asyncio.run(run())


def test_an_idle_connection_is_shut_down_without_losing_a_stream() -> None:
    async def test(client: Client, server: H2GrpcServer) -> None:
        client.send(client.call(1, b"one"))
        await client.answer(1)
        # No stream for a while: GOAWAY with the highest id (streams on the way still
        # count), and a PING to learn when the client has seen it.
        last, code = await client.goaway()
        assert (last, code) == (2**31 - 1, h2grpc.NO_ERROR)
        _, ping = await client.until(h2grpc.PING)
        client.send(client.call(3, b"raced"))  # opened before the client saw the GOAWAY
        client.send(frame(h2grpc.PING, h2grpc.ACK, 0, ping))
        data, trailers = await client.answer(3)
        assert data == message(b"decar") and trailers[b"grpc-status"] == b"0"
        assert (await client.goaway()) == (3, h2grpc.NO_ERROR)
        assert await client.closed(2)

    with_server(test, limits=Limits(idle_timeout=0.1))


def test_an_open_stream_keeps_its_connection() -> None:
    gate = Gate()

    async def test(client: Client, server: H2GrpcServer) -> None:
        client.send(client.call(1, b"wait"))
        await asyncio.sleep(0.3)  # three idle periods with the stream open
        gate.release.set()
        data, trailers = await client.answer(1)  # no GOAWAY before it
        assert data == message(b"tiaw") and trailers[b"grpc-status"] == b"0"
        last, _ = await client.goaway()  # then, idle: shut down
        assert last == 2**31 - 1
        assert await client.closed(2)  # never answering the PING: closed anyway

    with_server(test, gate, Limits(idle_timeout=0.1, handshake_timeout=0.2))


def test_unanswered_data_is_bounded_over_the_whole_server() -> None:
    # Budget raised to four largest messages: 4 * (1000 + 64) bytes.
    limits = Limits(max_buffered=0)

    async def test(client: Client, server: H2GrpcServer) -> None:
        part = message(b"x" * 1000)[:900]
        for stream_id in (1, 3, 5, 7, 9):
            client.send(frame(h2grpc.HEADERS, h2grpc.END_HEADERS, stream_id, client.headers()))
            client.send(frame(h2grpc.DATA, 0, stream_id, part))
        _, trailers = await client.answer(9)
        assert trailers[b"grpc-status"] == str(h2grpc.RESOURCE_EXHAUSTED).encode()
        assert server.buffered == 3600
        client.send(frame(h2grpc.DATA, h2grpc.END_STREAM, 1, message(b"x" * 1000)[900:]))
        assert (await client.answer(1))[0] == message(b"x" * 1000)
        for stream_id in (3, 5, 7):
            client.send(frame(h2grpc.RST_STREAM, 0, stream_id, bytes(4)))

    with_server(test, limits=limits, max_message=1000)


def test_messages_waiting_behind_a_slow_answer_are_bounded() -> None:
    gate = Gate()

    async def test(client: Client, server: H2GrpcServer) -> None:
        client.send(client.call(1, b"wait", *[b""] * 20, end=False))
        _, trailers = await client.answer(1)
        assert trailers[b"grpc-status"] == str(h2grpc.RESOURCE_EXHAUSTED).encode()
        assert gate.handled == [b"wait"]

    with_server(test, gate, max_message=1000)


def test_stop_lets_the_stream_in_flight_finish() -> None:
    release = asyncio.Event()

    async def waits(m: bytes) -> bytes:
        await release.wait()
        return m

    async def run() -> None:
        server = H2GrpcServer({METHOD: lambda _: waits}, max_message=100)
        port = await server.start("127.0.0.1", 0)
        client = await Client.connect(port, METHOD)
        client.send(client.call(1, b"x"))
        await asyncio.sleep(0.05)
        stopping = asyncio.ensure_future(server.stop(5))
        _, payload = await client.until(h2grpc.GOAWAY)
        assert int.from_bytes(payload[:4], "big") == 1  # stream 1 will still be answered
        release.set()
        data, trailers = await client.answer(1)
        assert data == message(b"x") and trailers[b"grpc-status"] == b"0"
        await stopping
        client.close()

    asyncio.run(run())


def test_hand_written_header_blocks_decode_as_meant() -> None:
    decoder = hpack.Decoder()
    assert decoder.decode(h2grpc._RESPONSE_HEADERS, raw=True) == [
        (b":status", b"200"),
        (b"content-type", b"application/grpc"),
    ]
    long_message = "x" * 300  # a length past the 7-bit prefix
    assert decoder.decode(h2grpc._trailers(13, long_message), raw=True) == [
        (b"grpc-status", b"13"),
        (b"grpc-message", long_message.encode()),
    ]
    assert decoder.header_table_size == 4096 and not decoder.header_table.dynamic_entries

"""The HTTP/2 transport frame by frame: what grpcio's client never sends (padding,
CONTINUATION, PING, tiny windows, resets, a bad preface), driven over a raw socket."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable

import hpack
import pytest

from plano_extproc import h2grpc
from plano_extproc.h2grpc import H2GrpcServer

pytestmark = pytest.mark.unit

METHOD = b"/test.Service/Echo"
REQUEST_HEADERS = [
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":path", METHOD),
    (b":authority", b"x"),
    (b"content-type", b"application/grpc"),
    (b"te", b"trailers"),
]


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return (
        struct.pack(">L", len(payload))[1:]
        + bytes([kind, flags])
        + stream_id.to_bytes(4, "big")
        + payload
    )


def message(data: bytes) -> bytes:
    return b"\x00" + len(data).to_bytes(4, "big") + data


class Client:
    """A raw HTTP/2 client: writes frames, reads them back one by one."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.encoder, self.decoder = hpack.Encoder(), hpack.Decoder()

    def send(self, *frames: bytes) -> None:
        self.writer.write(b"".join(frames))

    def headers(self, headers: list[tuple[bytes, bytes]] = REQUEST_HEADERS) -> bytes:
        return self.encoder.encode(headers)

    async def read(self) -> tuple[int, int, int, bytes]:
        head = await asyncio.wait_for(self.reader.readexactly(9), 5)
        length = int.from_bytes(head[:3], "big")
        payload = await self.reader.readexactly(length)
        return head[3], head[4], int.from_bytes(head[5:], "big") & 0x7FFFFFFF, payload

    async def until(self, kind: int, stream_id: int | None = None) -> tuple[int, bytes]:
        while True:
            got, flags, sid, payload = await self.read()
            if got == kind and (stream_id is None or sid == stream_id):
                return flags, payload

    async def answer(self, stream_id: int) -> tuple[bytes, dict[bytes, bytes]]:
        """The DATA of a stream and its trailers."""
        data = b""
        while True:
            kind, flags, sid, payload = await self.read()
            if sid != stream_id:
                continue
            if kind == h2grpc.DATA:
                data += payload
            elif kind == h2grpc.HEADERS:
                headers = dict(self.decoder.decode(payload, raw=True))
                if flags & h2grpc.END_STREAM:
                    return data, headers


async def with_server(
    test: Callable[[Client], Awaitable[None]],
    handle: Callable[[bytes], bytes | Awaitable[bytes]] = lambda m: m[::-1],
) -> None:
    server = H2GrpcServer(METHOD, handle, max_message=1 << 20)
    port = await server.start("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    client = Client(reader, writer)
    try:
        client.send(h2grpc.PREFACE, frame(h2grpc.SETTINGS, 0, 0))
        await test(client)
    finally:
        writer.close()
        await server.stop(0.5)


def test_settings_ping_and_an_answer_in_padded_continued_frames() -> None:
    async def test(client: Client) -> None:
        flags, _ = await client.until(h2grpc.SETTINGS)
        block = client.headers()
        padded = bytes([3]) + block[:5] + b"\x00\x00\x00"
        client.send(frame(h2grpc.PING, 0, 0, b"12345678"))
        flags, payload = await client.until(h2grpc.PING)
        assert flags & h2grpc.ACK and payload == b"12345678"
        client.send(
            frame(h2grpc.HEADERS, h2grpc.PADDED, 1, padded),
            frame(h2grpc.CONTINUATION, h2grpc.END_HEADERS, 1, block[5:]),
            frame(h2grpc.DATA, h2grpc.PADDED, 1, bytes([2]) + message(b"abc") + b"\x00\x00"),
            frame(h2grpc.DATA, h2grpc.END_STREAM, 1),
        )
        data, trailers = await client.answer(1)
        assert data == message(b"cba")
        assert trailers[b"grpc-status"] == b"0"

    asyncio.run(with_server(test))


def test_answers_wait_for_window_updates() -> None:
    big = bytes(range(256)) * 400  # 100 KB

    async def test(client: Client) -> None:
        # Envoy could grant as little as 10 bytes per stream: the answer waits for more.
        client.send(frame(h2grpc.SETTINGS, 0, 0, struct.pack(">HL", 4, 10)))
        client.send(
            frame(h2grpc.HEADERS, h2grpc.END_HEADERS, 1, client.headers()),
            frame(h2grpc.DATA, h2grpc.END_STREAM, 1, message(big)),
        )
        got = b""
        while len(got) < 10:
            kind, _, _, payload = await client.read()
            if kind == h2grpc.DATA:
                got += payload
        assert len(got) == 10  # nothing beyond the window
        client.send(frame(h2grpc.WINDOW_UPDATE, 0, 1, (1 << 20).to_bytes(4, "big")))
        client.send(frame(h2grpc.WINDOW_UPDATE, 0, 0, (1 << 20).to_bytes(4, "big")))
        rest, trailers = await client.answer(1)
        assert got + rest == message(big[::-1])
        assert trailers[b"grpc-status"] == b"0"

    asyncio.run(with_server(test))


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

    async def test(client: Client) -> None:
        client.send(
            frame(h2grpc.HEADERS, h2grpc.END_HEADERS, 1, client.headers()),
            frame(h2grpc.DATA, 0, 1, message(b"slow")),
        )
        await asyncio.wait_for(started.wait(), 5)
        client.send(frame(h2grpc.RST_STREAM, 0, 1, b"\x00\x00\x00\x08"))
        await asyncio.wait_for(cancelled.wait(), 5)
        client.send(
            frame(h2grpc.HEADERS, h2grpc.END_HEADERS, 3, client.headers()),
            frame(h2grpc.DATA, h2grpc.END_STREAM, 3, message(b"fast")),
        )
        data, trailers = await client.answer(3)
        assert data == message(b"fast") and trailers[b"grpc-status"] == b"0"

    asyncio.run(with_server(test, handle))


def test_a_compressed_message_is_refused() -> None:
    async def test(client: Client) -> None:
        client.send(
            frame(h2grpc.HEADERS, h2grpc.END_HEADERS, 1, client.headers()),
            frame(h2grpc.DATA, 0, 1, b"\x01" + (3).to_bytes(4, "big") + b"abc"),
        )
        data, trailers = await client.answer(1)
        assert data == b""
        assert trailers[b"grpc-status"] == str(h2grpc.UNIMPLEMENTED).encode()
        _, payload = await client.until(h2grpc.RST_STREAM, 1)  # we read no more of it
        assert payload == b"\x00\x00\x00\x00"

    asyncio.run(with_server(test))


def test_a_broken_client_gets_goaway_and_the_connection_closes() -> None:
    async def test(client: Client) -> None:
        await client.until(h2grpc.SETTINGS)
        client.send(frame(h2grpc.PUSH_PROMISE, 0, 1, b"\x00\x00\x00\x02"))
        _, payload = await client.until(h2grpc.GOAWAY)
        assert int.from_bytes(payload[4:8], "big") == h2grpc.PROTOCOL_ERROR
        assert await client.reader.read() == b""  # closed

    asyncio.run(with_server(test))


def test_not_http2_at_all_is_closed() -> None:
    async def run() -> None:
        server = H2GrpcServer(METHOD, lambda m: m, max_message=100)
        port = await server.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        rest = await asyncio.wait_for(reader.read(), 5)
        assert rest == b"" or rest[3] in (h2grpc.SETTINGS, h2grpc.GOAWAY)  # then closed
        writer.close()
        await server.stop(0)

    asyncio.run(run())


def test_stop_lets_the_stream_in_flight_finish() -> None:
    release = asyncio.Event()

    async def waits(m: bytes) -> bytes:
        await release.wait()
        return m

    async def run() -> None:
        server = H2GrpcServer(METHOD, waits, max_message=100)
        port = await server.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = Client(reader, writer)
        client.send(h2grpc.PREFACE, frame(h2grpc.SETTINGS, 0, 0))
        client.send(
            frame(h2grpc.HEADERS, h2grpc.END_HEADERS, 1, client.headers()),
            frame(h2grpc.DATA, h2grpc.END_STREAM, 1, message(b"x")),
        )
        await asyncio.sleep(0.05)
        stopping = asyncio.ensure_future(server.stop(5))
        _, payload = await client.until(h2grpc.GOAWAY)
        assert int.from_bytes(payload[:4], "big") == 1  # stream 1 will still be answered
        release.set()
        data, trailers = await client.answer(1)
        assert data == message(b"x") and trailers[b"grpc-status"] == b"0"
        await stopping
        writer.close()

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

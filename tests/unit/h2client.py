"""A raw HTTP/2 client for the transport tests: writes any frame, valid or not, and reads
the server's frames back one by one."""

from __future__ import annotations

import asyncio
import struct

import hpack

from plano_extproc.extproc import h2grpc

EXT_PROC = b"/envoy.service.ext_proc.v3.ExternalProcessor/Process"


def request_headers(path: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", path),
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


def data_frames(stream_id: int, data: bytes, end: bool = True, size: int = 16384) -> bytes:
    """``data`` as DATA frames of at most ``size`` bytes (the default frame size)."""
    chunks = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
    return b"".join(
        frame(h2grpc.DATA, h2grpc.END_STREAM if end and i == len(chunks) - 1 else 0, stream_id, c)
        for i, c in enumerate(chunks)
    )


def parse_frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """Whole frames in ``data``: (type, flags, stream id, payload)."""
    frames, at = [], 0
    while len(data) - at >= 9:
        length = int.from_bytes(data[at : at + 3], "big")
        if len(data) - at - 9 < length:
            break
        stream_id = int.from_bytes(data[at + 5 : at + 9], "big") & 0x7FFFFFFF
        frames.append((data[at + 3], data[at + 4], stream_id, data[at + 9 : at + 9 + length]))
        at += 9 + length
    return frames


class Client:
    """A raw HTTP/2 client: writes frames, reads them back one by one."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: bytes
    ) -> None:
        self.reader, self.writer = reader, writer
        self.encoder, self.decoder = hpack.Encoder(), hpack.Decoder()
        self.path = path

    @classmethod
    async def connect(cls, port: int, path: bytes, handshake: bool = True) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer, path)
        if handshake:
            client.send(h2grpc.PREFACE, frame(h2grpc.SETTINGS, 0, 0))
        return client

    def send(self, *frames: bytes) -> None:
        self.writer.write(b"".join(frames))

    def headers(self, headers: list[tuple[bytes, bytes]] | None = None) -> bytes:
        return self.encoder.encode(headers if headers is not None else request_headers(self.path))

    def call(self, stream_id: int, *messages: bytes, end: bool = True) -> bytes:
        """HEADERS and DATA frames for one call carrying ``messages``."""
        return frame(h2grpc.HEADERS, h2grpc.END_HEADERS, stream_id, self.headers()) + data_frames(
            stream_id, b"".join(message(m) for m in messages), end
        )

    async def read(self, timeout: float = 5) -> tuple[int, int, int, bytes]:
        head = await asyncio.wait_for(self.reader.readexactly(9), timeout)
        length = int.from_bytes(head[:3], "big")
        payload = await asyncio.wait_for(self.reader.readexactly(length), timeout)
        return head[3], head[4], int.from_bytes(head[5:], "big") & 0x7FFFFFFF, payload

    async def until(self, kind: int, stream_id: int | None = None) -> tuple[int, bytes]:
        while True:
            got, flags, sid, payload = await self.read()
            if got == kind and (stream_id is None or sid == stream_id):
                return flags, payload

    async def goaway(self) -> tuple[int, int]:
        """The (last stream, error code) of the server's GOAWAY."""
        _, payload = await self.until(h2grpc.GOAWAY)
        last, code = struct.unpack(">LL", payload[:8])
        return last, code

    async def closed(self, timeout: float = 5) -> bool:
        """Whether the server closes the connection (everything before is read)."""
        try:
            while await asyncio.wait_for(self.reader.read(65536), timeout):
                pass
        except TimeoutError:
            return False
        except ConnectionResetError:
            pass
        return True

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
            elif kind == h2grpc.RST_STREAM:
                raise AssertionError(f"stream {stream_id} reset: {payload.hex()}")

    def close(self) -> None:
        self.writer.close()

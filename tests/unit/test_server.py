"""The gRPC shell: Envoy's method path, and a failure of ours costs one request only."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import grpc
import pytest

from plano_extproc._proto import ext_proc_pb2 as pb
from plano_extproc.config import parse_config
from plano_extproc.processor import Processor
from plano_extproc.server import METHOD, build_server

pytestmark = pytest.mark.unit

CONFIG = "llm_providers:\n  - model: openai/gpt-5\n    default: true\n"
CHAT = b'{"model": "gpt-5", "messages": [{"role": "user", "content": "x"}]}'


def headers(path: str) -> pb.ProcessingRequest:
    pairs = [(":method", b"POST"), (":path", path.encode())]
    header_map = pb.HeaderMap(headers=[pb.HeaderValue(key=k, raw_value=v) for k, v in pairs])
    return pb.ProcessingRequest(request_headers=pb.HttpHeaders(headers=header_map))


def body(raw: bytes) -> pb.ProcessingRequest:
    return pb.ProcessingRequest(request_body=pb.HttpBody(body=raw, end_of_stream=True))


async def exchange(messages: list[pb.ProcessingRequest]) -> list[pb.ProcessingResponse]:
    """One Process stream over a real gRPC channel, on the path Envoy calls."""
    server, port = build_server(parse_config(CONFIG, "t.yaml", {}), "127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.stream_stream(
                METHOD,
                request_serializer=pb.ProcessingRequest.SerializeToString,
                response_deserializer=pb.ProcessingResponse.FromString,
            )

            async def requests() -> AsyncIterator[pb.ProcessingRequest]:
                for message in messages:
                    yield message

            return [response async for response in call(requests())]
    finally:
        await server.stop(None)


def test_envoy_method_path_is_served() -> None:
    first, second = asyncio.run(exchange([headers("/v1/chat/completions"), body(CHAT)]))
    assert first.WhichOneof("response") == "request_headers"
    assert second.request_body.response.clear_route_cache


def test_a_bug_is_a_500_for_that_request_only(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(self: Processor, raw: bytes, query: str) -> pb.ProcessingResponse:
        raise RuntimeError("boom")

    monkeypatch.setattr(Processor, "on_request_body", explode)
    first, second = asyncio.run(exchange([headers("/v1/chat/completions"), body(CHAT)]))
    assert first.WhichOneof("response") == "request_headers"
    assert second.immediate_response.status.code == 500
    assert json.loads(second.immediate_response.body)["error"]["code"] == "internal_error"

"""The gRPC shell, on both transports, driven by grpcio's own client: Envoy's method path,
answers in order, a failure of ours costs one request only, limits and unknown methods."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest

from plano_extproc._proto import ext_proc_pb2 as pb
from plano_extproc.apis import OPENAI_CHAT, ClientApi
from plano_extproc.config import parse_config
from plano_extproc.extproc.h2grpc import Limits
from plano_extproc.extproc.processor import Processor
from plano_extproc.extproc.server import ENGINES, METHOD, Engine, build_server
from plano_extproc.router.base import RouteChoice

pytestmark = pytest.mark.unit

CONFIG = """
listeners:
  egress_traffic:
    max_body_size: 64KiB
llm_providers:
  - model: openai/gpt-5
    default: true
  - model: openai/gpt-5.2
    routing_preferences:
      - name: code
        description: writing code
"""
CHAT = b'{"model": "openai/gpt-5", "messages": [{"role": "user", "content": "x"}]}'
NO_MODEL = b'{"messages": [{"role": "user", "content": "write code"}]}'


def body(raw: bytes) -> pb.ProcessingRequest:
    return pb.ProcessingRequest(request_body=pb.HttpBody(body=raw, end_of_stream=True))


class SlowRouter:
    """Stands in for RouterService: answers "code" after a pause, off the event loop."""

    def __init__(self, pause: float = 0.05) -> None:
        self.pause = pause

    async def choose(self, messages: Sequence[object]) -> RouteChoice | None:
        await asyncio.sleep(self.pause)
        return RouteChoice("code", 0.9, {"code": 0.9})


@asynccontextmanager
async def serving(
    engine: Engine, router: object = None, method: str = METHOD, limits: Limits | None = None
) -> AsyncIterator[Callable[..., Any]]:
    """A started server and a grpcio client stub for ``method`` on it (Envoy's path)."""
    config = parse_config(CONFIG, "t.yaml", {})
    server = build_server(config, "127.0.0.1:0", router, engine, limits)  # type: ignore[arg-type]
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel.stream_stream(
                method,
                request_serializer=pb.ProcessingRequest.SerializeToString,
                response_deserializer=pb.ProcessingResponse.FromString,
            )
    finally:
        await server.stop(0.5)


async def exchange(
    engine: Engine,
    messages: list[pb.ProcessingRequest],
    router: object = None,
    method: str = METHOD,
) -> list[pb.ProcessingResponse]:
    """One Process stream over a real gRPC channel."""
    async with serving(engine, router, method) as call:
        return [response async for response in call(iter(messages))]


def model_of(response: pb.ProcessingResponse) -> str:
    return str(response.dynamic_metadata.fields["plano"].struct_value.fields["model"].string_value)


@pytest.mark.parametrize("engine", ENGINES)
def test_envoy_method_path_is_served(engine: Engine) -> None:
    (answer,) = asyncio.run(exchange(engine, [body(CHAT)]))
    assert answer.request_body.response.clear_route_cache
    assert model_of(answer) == "openai/gpt-5"


def headers() -> pb.ProcessingRequest:
    return pb.ProcessingRequest(request_headers=pb.HttpHeaders())


async def calls(
    engine: Engine, requests: list[list[pb.ProcessingRequest]], router: object = None
) -> list[list[pb.ProcessingResponse]]:
    """Several Process streams at once over one channel (one connection)."""
    async with serving(engine, router) as call:

        async def one(messages: list[pb.ProcessingRequest]) -> list[pb.ProcessingResponse]:
            return [response async for response in call(iter(messages))]

        return list(await asyncio.gather(*(one(messages) for messages in requests)))


@pytest.mark.parametrize("engine", ENGINES)
def test_the_headers_answer_comes_before_the_body_answer_that_waits(engine: Engine) -> None:
    answers = asyncio.run(exchange(engine, [headers(), body(NO_MODEL)], router=SlowRouter()))
    assert answers[0].HasField("request_headers")
    assert model_of(answers[1]) == "openai/gpt-5.2"
    routing = answers[1].dynamic_metadata.fields["plano"].struct_value.fields["route"]
    assert routing.string_value == "code"


@pytest.mark.parametrize("engine", ENGINES)
def test_the_body_answer_ends_the_call_without_waiting_for_envoy(engine: Engine) -> None:
    # Envoy keeps its side of the stream open (more messages could follow): the decision
    # ends the call anyway, status OK, so the stream is freed at once.
    async def run() -> tuple[list[pb.ProcessingResponse], grpc.StatusCode]:
        never = asyncio.Event()

        async def requests() -> AsyncIterator[pb.ProcessingRequest]:
            yield headers()
            yield body(CHAT)
            await never.wait()

        async with serving(engine) as call:
            stream = call(requests())
            answers = [answer async for answer in stream]
            return answers, await stream.code()

    answers, code = asyncio.run(asyncio.wait_for(run(), 10))
    assert code == grpc.StatusCode.OK
    assert len(answers) == 2 and model_of(answers[1]) == "openai/gpt-5"


@pytest.mark.parametrize("engine", ENGINES)
def test_calls_on_one_connection_are_answered_each_even_when_one_waits(engine: Engine) -> None:
    results = asyncio.run(
        calls(engine, [[body(NO_MODEL)], [body(CHAT)], [body(b"{oops")]], router=SlowRouter())
    )
    assert [model_of(r[0]) for r in results[:2]] == ["openai/gpt-5.2", "openai/gpt-5"]
    assert results[2][0].immediate_response.status.code == 400


@pytest.mark.parametrize("engine", ENGINES)
def test_a_bug_is_a_500_for_that_request_only(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(self: Processor, raw: bytes, api: ClientApi = OPENAI_CHAT) -> object:
        if b"boom" in raw:
            raise RuntimeError("boom")
        return original(self, raw, api)

    original = Processor.on_request_body
    monkeypatch.setattr(Processor, "on_request_body", explode)
    (first,), (second,) = asyncio.run(calls(engine, [[body(b'{"boom": 1}')], [body(CHAT)]]))
    assert first.immediate_response.status.code == 500
    assert json.loads(first.immediate_response.body)["error"]["code"] == "internal_error"
    assert model_of(second) == "openai/gpt-5"


@pytest.mark.parametrize("engine", ENGINES)
def test_a_message_over_the_limit_fails_the_call(engine: Engine) -> None:
    huge = b'{"messages": [{"content": "' + b"x" * 200_000 + b'"}]}'
    with pytest.raises(grpc.aio.AioRpcError) as info:
        asyncio.run(exchange(engine, [body(huge)]))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize("engine", ENGINES)
def test_an_unknown_method_is_unimplemented(engine: Engine) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        # No message: the client would fail sending it after the server has ended the call.
        asyncio.run(exchange(engine, [], method="/some.Other/Method"))
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.parametrize("engine", ENGINES)
def test_a_client_goes_on_after_the_server_closed_its_idle_connection(engine: Engine) -> None:
    # The server ends a connection without streams (GOAWAY NO_ERROR); a client such as
    # Envoy opens a new one for its next call, and no call is lost.
    async def run() -> list[str]:
        async with serving(engine, limits=Limits(idle_timeout=0.2)) as call:
            models = []
            for pause in (0, 0.7, 0.7):
                await asyncio.sleep(pause)
                models += [model_of(r) async for r in call(iter([body(CHAT)]))]
            return models

    assert asyncio.run(run()) == ["openai/gpt-5"] * 3


def test_large_answers_respect_the_peers_frame_size_and_windows() -> None:
    # 60 KB in, 60 KB out: several HTTP/2 frames each way, beyond grpcio's 64 KiB window.
    request = [body(b'{"model": "openai/gpt-5", "messages": ["' + b"y" * 60_000 + b'"]}')]
    results = asyncio.run(calls("h2", [request] * 6))
    assert len(results) == 6
    for (answer,) in results:
        assert json.loads(answer.request_body.response.body_mutation.body)["model"] == "gpt-5"


def test_many_concurrent_streams_on_one_connection() -> None:
    async def run() -> list[list[pb.ProcessingResponse]]:
        async with serving("h2", SlowRouter(0.01)) as call:

            async def one(raw: bytes) -> list[pb.ProcessingResponse]:
                return [r async for r in call(iter([body(raw)]))]

            return await asyncio.gather(*(one(NO_MODEL if i % 2 else CHAT) for i in range(64)))

    results = asyncio.run(run())
    assert [model_of(r[0]) for r in results] == [
        "openai/gpt-5.2" if i % 2 else "openai/gpt-5" for i in range(64)
    ]


def test_a_second_server_on_the_same_port_fails() -> None:
    async def run() -> None:
        config = parse_config(CONFIG, "t.yaml", {})
        first = build_server(config, "127.0.0.1:0")
        port = await first.start()
        try:
            with pytest.raises(OSError):
                await build_server(config, f"127.0.0.1:{port}").start()
        finally:
            await first.stop(0)

    asyncio.run(run())

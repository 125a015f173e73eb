"""The standard gRPC health service on both transports, asked by grpcio's own client (the
client Kubernetes' grpc probe and grpc_health_probe are built on): NOT_SERVING while the
router loads, SERVING once it has, NOT_SERVING for good on a stop; Check and Watch; the
health-only listener; how a SIGTERM drains and a SIGINT does not."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]

from plano_extproc._proto import ext_proc_pb2 as pb
from plano_extproc.config import Config, parse_config
from plano_extproc.extproc import server as server_module
from plano_extproc.extproc.health import EXT_PROC_SERVICE, probe
from plano_extproc.extproc.server import ENGINES, METHOD, Engine, ServeOptions, serve
from tests.fakes import free_ports

pytestmark = pytest.mark.unit

CONFIG = """
llm_providers:
  - model: openai/gpt-5
    default: true
"""
CHAT = b'{"model": "openai/gpt-5", "messages": [{"role": "user", "content": "x"}]}'
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class Gate:
    """Holds load_service until the test lets it go: the "router still loading" window."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.open = threading.Event()

        def load_service(config: Config) -> None:
            self.open.wait(10)

        monkeypatch.setattr(server_module, "load_service", load_service)


@asynccontextmanager
async def running(
    engine: Engine, health_listen: bool = False, drain_s: float = 25.0
) -> AsyncIterator[tuple[str, str, asyncio.Task[None]]]:
    """serve() in this process on free ports: (ext_proc target, health-only target, task).
    Stopped by SIGINT if the test has not stopped it."""
    config = parse_config(CONFIG, "t.yaml", {})
    port = free_ports(2)
    health_port = port + 1
    task = asyncio.create_task(
        serve(
            config,
            ServeOptions(
                f"127.0.0.1:{port}",
                engine=engine,
                health_listen=f"127.0.0.1:{health_port}" if health_listen else None,
                drain_s=drain_s,
                watch=False,
            ),
        )
    )
    target = f"127.0.0.1:{port}"
    await until(lambda: _answers(target))
    try:
        yield target, f"127.0.0.1:{health_port}", task
    finally:
        if not task.done():
            os.kill(os.getpid(), signal.SIGINT)
        await asyncio.wait_for(task, 15)


@asynccontextmanager
async def serving(
    engine: Engine, health_listen: bool = False, drain_s: float = 25.0
) -> AsyncIterator[tuple[str, str, asyncio.Task[None]]]:
    """running(), once the (already opened) router has loaded and health says SERVING."""
    async with running(engine, health_listen, drain_s) as (target, health_target, task):
        await until(lambda: probe(target) == "SERVING")
        yield target, health_target, task


def _answers(target: str) -> bool:
    try:
        probe(target, timeout=0.5)
    except grpc.RpcError:
        return False
    return True


async def until(condition: Callable[[], bool], timeout: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await loop.run_in_executor(None, condition):
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def check(target: str, service: str = "") -> int:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        answer = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
    return int(answer.status)


async def ext_proc_call(target: str) -> pb.ProcessingResponse:
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.stream_stream(
            METHOD,
            request_serializer=pb.ProcessingRequest.SerializeToString,
            response_deserializer=pb.ProcessingResponse.FromString,
        )
        request = pb.ProcessingRequest(request_body=pb.HttpBody(body=CHAT, end_of_stream=True))
        answers = [answer async for answer in call(iter([request]), timeout=5)]
    assert len(answers) == 1
    return answers[0]


async def refusal(target: str) -> grpc.StatusCode:
    """The status of an ext_proc call the server refuses. The call sends no message: the
    client would fail sending it after the server has ended the call."""
    async with grpc.aio.insecure_channel(target) as channel:
        call: grpc.aio.StreamStreamMultiCallable[bytes, bytes] = channel.stream_stream(METHOD)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            [answer async for answer in call(iter([]), timeout=5)]
    code: grpc.StatusCode = refused.value.code()
    return code


@pytest.mark.parametrize("engine", ENGINES)
def test_not_serving_until_the_router_is_loaded_then_serving(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = Gate(monkeypatch)

    async def run() -> None:
        async with running(engine) as (target, _, _task):
            # Loading: the port answers health checks, and ext_proc calls with UNAVAILABLE.
            assert await check(target) == NOT_SERVING
            assert await check(target, EXT_PROC_SERVICE) == NOT_SERVING
            assert await refusal(target) == grpc.StatusCode.UNAVAILABLE
            gate.open.set()
            await until(lambda: probe(target) == "SERVING")
            assert await check(target, EXT_PROC_SERVICE) == SERVING
            answer = await ext_proc_call(target)
            assert answer.request_body.response.clear_route_cache

    asyncio.run(run())


@pytest.mark.parametrize("engine", ENGINES)
def test_check_of_an_unknown_service_is_not_found(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    Gate(monkeypatch).open.set()

    async def run() -> None:
        async with running(engine) as (target, _, _task):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await check(target, "no.such.Service")
            assert refused.value.code() == grpc.StatusCode.NOT_FOUND

    asyncio.run(run())


@pytest.mark.parametrize("engine", ENGINES)
def test_watch_follows_every_change_and_ends_on_stop(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = Gate(monkeypatch)

    async def run() -> None:
        async with running(engine) as (target, _, task):
            async with grpc.aio.insecure_channel(target) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                known = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
                unknown = stub.Watch(health_pb2.HealthCheckRequest(service="x.Y"), timeout=10)
                assert (await known.read()).status == NOT_SERVING
                assert (await unknown.read()).status == SERVICE_UNKNOWN
                gate.open.set()
                assert (await known.read()).status == SERVING
                os.kill(os.getpid(), signal.SIGINT)
                assert (await known.read()).status == NOT_SERVING
                # The server is stopping: both calls end, with OK.
                assert await known.read() is grpc.aio.EOF
                assert await unknown.read() is grpc.aio.EOF
                assert await known.code() == grpc.StatusCode.OK
                assert await unknown.code() == grpc.StatusCode.OK
            await asyncio.wait_for(task, 10)

    asyncio.run(run())


@pytest.mark.parametrize("engine", ENGINES)
def test_the_health_listener_serves_health_and_nothing_else(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    Gate(monkeypatch).open.set()

    async def run() -> None:
        async with serving(engine, health_listen=True) as (_, health_target, _task):
            assert await check(health_target) == SERVING
            assert await check(health_target, EXT_PROC_SERVICE) == SERVING
            assert await refusal(health_target) == grpc.StatusCode.UNIMPLEMENTED

    asyncio.run(run())


def test_sigterm_serves_on_until_the_last_client_has_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What Envoy sees when the server is told to stop while Envoy still drains: health says
    NOT_SERVING at once, yet ext_proc calls on its open connection are still answered; the
    server exits once that connection has gone, long before the drain period's end."""
    Gate(monkeypatch).open.set()

    async def run() -> None:
        async with serving("h2", drain_s=20) as (target, _, task):
            loop = asyncio.get_running_loop()
            async with grpc.aio.insecure_channel(target) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                call = channel.stream_stream(
                    METHOD,
                    request_serializer=pb.ProcessingRequest.SerializeToString,
                    response_deserializer=pb.ProcessingResponse.FromString,
                )
                request = pb.ProcessingRequest(
                    request_body=pb.HttpBody(body=CHAT, end_of_stream=True)
                )
                assert [a async for a in call(iter([request]), timeout=5)]
                os.kill(os.getpid(), signal.SIGTERM)
                await asyncio.sleep(0.3)
                assert not task.done()
                answer = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                assert answer.status == NOT_SERVING
                answers = [a async for a in call(iter([request]), timeout=5)]
                assert answers[0].request_body.response.clear_route_cache
                closed = loop.time()
            await asyncio.wait_for(task, 10)
            assert loop.time() - closed < 5, "the server waited out the drain period"

    asyncio.run(run())


def test_sigint_does_not_wait_for_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    Gate(monkeypatch).open.set()

    async def run() -> None:
        async with serving("h2", drain_s=20) as (target, _, task):
            loop = asyncio.get_running_loop()
            async with grpc.aio.insecure_channel(target) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                asked = loop.time()
                os.kill(os.getpid(), signal.SIGINT)
                await asyncio.wait_for(task, 10)
                assert loop.time() - asked < 5

    asyncio.run(run())

"""The standard gRPC health service (``grpc.health.v1.Health``: Check and Watch), on both
transports, so that Kubernetes' native ``grpc:`` probe, Envoy's gRPC health checker and
``grpc_health_probe`` can all ask the server whether it serves.

The messages are grpcio-health-checking's (the standard protos, compiled and maintained with
grpcio); the status is ours: NOT_SERVING until the config and the router are loaded, SERVING
then, NOT_SERVING for good once a stop was asked. Two service names are known: "" (the
server as a whole, what a probe asks by default) and the ext_proc service's full name.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Mapping

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]

from .h2grpc import (
    INVALID_ARGUMENT,
    NOT_FOUND,
    OK,
    AnswerThenMore,
    CallError,
    FinalAnswer,
    Handler,
    OpenStream,
)

SERVICE = "grpc.health.v1.Health"
CHECK = f"/{SERVICE}/Check".encode()
WATCH = f"/{SERVICE}/Watch".encode()
EXT_PROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"
SERVICES = ("", EXT_PROC_SERVICE)

# HealthCheckResponse.ServingStatus, an enum: its values are ints.
Status = int
SERVING: Status = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING: Status = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN: Status = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class Health:
    """The server's serving status, and what waits for it to change. Every known service
    shares it: the server serves ext_proc or nothing."""

    def __init__(self) -> None:
        self.status: Status = NOT_SERVING
        self.stopping = False
        # Set (and replaced) at each change: a watcher awaits the one current when it looked.
        self._changed = asyncio.Event()

    def serving(self) -> None:
        """Config and router are loaded: serving, unless a stop was asked meanwhile."""
        if not self.stopping:
            self._set(SERVING)

    def stop(self) -> None:
        """NOT_SERVING for good: new work should go elsewhere. Watches end with it."""
        self.stopping = True
        self._set(NOT_SERVING)

    def _set(self, status: Status) -> None:
        self.status = status
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def check(self, service: str) -> Status:
        """Check's answer; CallError NOT_FOUND for a service this server does not know."""
        if service not in SERVICES:
            raise CallError(NOT_FOUND, f"unknown service {service[:100]!r}")
        return self.status

    async def change(self, since: Status) -> Status:
        """The status once it differs from ``since`` (at once if it does already), or once a
        stop was asked."""
        while self.status == since and not self.stopping:
            await self._changed.wait()
        return self.status

    async def stopped(self) -> None:
        while not self.stopping:
            await self._changed.wait()


def _request(payload: bytes) -> health_pb2.HealthCheckRequest:
    try:
        return health_pb2.HealthCheckRequest.FromString(payload)
    except Exception as exc:  # DecodeError, or a message protobuf refuses some other way
        raise CallError(INVALID_ARGUMENT, "not a HealthCheckRequest") from exc


def _answer(status: Status) -> bytes:
    serialized: bytes = health_pb2.HealthCheckResponse(status=status).SerializeToString()
    return serialized


async def _watch(health: Health, service: str) -> AsyncIterator[Status]:
    """What Watch sends: the status now, then each change, until a stop was asked (whose
    NOT_SERVING is the last word; the call then ends with OK). A service this server does
    not know stays SERVICE_UNKNOWN (a server never learns one it did not start with)."""
    if service not in SERVICES:
        yield SERVICE_UNKNOWN
        await health.stopped()
        return
    status = health.status
    yield status
    while not health.stopping:
        changed = await health.change(status)
        if changed != status:
            status = changed
            yield status


def h2_methods(health: Health) -> dict[bytes, OpenStream]:
    """Check and Watch for the h2 transport (h2grpc.py)."""

    def check(payload: bytes) -> bytes:
        return FinalAnswer(_answer(health.check(_request(payload).service)))

    async def next_answer(statuses: AsyncIterator[Status]) -> bytes:
        try:
            status = await anext(statuses)
        except StopAsyncIteration:
            raise CallError(OK, "") from None  # the server is stopping: the call ends
        return AnswerThenMore(_answer(status), next_answer(statuses))

    def watch(payload: bytes) -> Awaitable[bytes]:
        return next_answer(_watch(health, _request(payload).service))

    def check_opener(metadata: Mapping[str, str]) -> Handler:
        return check

    def watch_opener(metadata: Mapping[str, str]) -> Handler:
        return watch

    return {CHECK: check_opener, WATCH: watch_opener}


def add_to_grpcio(server: grpc.aio.Server, health: Health) -> None:
    """Check and Watch for the grpcio transport, over the same ``Health``."""

    async def check(payload: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        try:
            return _answer(health.check(_request(payload).service))
        except CallError as exc:
            await context.abort(grpc.StatusCode(_STATUS_CODES[exc.code]), exc.message)
            raise  # not reached: abort raises

    async def watch(
        payload: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> AsyncIterator[bytes]:
        try:
            service = _request(payload).service
        except CallError as exc:
            await context.abort(grpc.StatusCode(_STATUS_CODES[exc.code]), exc.message)
            raise
        async for status in _watch(health, service):
            yield _answer(status)

    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Check": grpc.unary_unary_rpc_method_handler(check),
            "Watch": grpc.unary_stream_rpc_method_handler(watch),
        },
    )
    server.add_generic_rpc_handlers((handler,))


# CallError's codes as grpcio's StatusCode values ((number, name) pairs).
_STATUS_CODES = {code.value[0]: code.value for code in grpc.StatusCode}


def probe(target: str, service: str = "", timeout: float = 1.0) -> str:
    """Ask the health service at ``target`` (host:port) once; the status's name, e.g.
    "SERVING". Raises ``grpc.RpcError`` when it cannot be asked (nothing listening, the
    deadline passed, an unknown service)."""
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))

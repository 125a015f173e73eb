"""The ext_proc gRPC server: a thin shell that feeds Envoy's messages to the processor."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator

import grpc

from ._proto import ext_proc_pb2 as pb
from .config import Config
from .errors import ErrorReply
from .processor import PendingRoute, Processor, error_response
from .router import load_router
from .router.service import RouterService

log = logging.getLogger("plano_extproc.server")

SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"
METHOD = f"/{SERVICE}/Process"
INTERNAL_ERROR = ErrorReply(
    500, "The gateway failed to process this request.", type="server_error", code="internal_error"
)
# Room for the protobuf framing around the largest body the listener accepts.
_FRAMING_BYTES = 64 * 1024


class ExternalProcessor:
    """Envoy opens one Process stream per HTTP request; each message gets one answer."""

    def __init__(self, processor: Processor, router: RouterService | None) -> None:
        self._processor = processor
        self._router = router

    async def Process(
        self,
        requests: AsyncIterator[pb.ProcessingRequest],
        context: grpc.aio.ServicerContext[pb.ProcessingRequest, pb.ProcessingResponse],
    ) -> AsyncIterator[pb.ProcessingResponse]:
        exchange = self._processor.exchange()
        async for request in requests:
            try:
                response = exchange.handle(request)
                if isinstance(response, PendingRoute):
                    response = await self._route(response)
            except Exception:
                # A bug of ours must cost one request a clear 500, never the stream or server.
                log.exception("failed to process a %s message", request.WhichOneof("request"))
                response = error_response(INTERNAL_ERROR)
            yield response

    async def _route(self, pending: PendingRoute) -> pb.ProcessingResponse:
        choice = None
        if self._router is not None:
            choice = await self._router.choose(pending.request.body["messages"])
        return self._processor.on_route_choice(pending, choice)


def build_server(
    config: Config, listen: str, router: RouterService | None = None
) -> tuple[grpc.aio.Server, int]:
    """A server bound to ``listen`` (host:port, port 0 picks one); returns it and its port.
    ``router`` reads requests that name no model; without one they go to the default."""
    max_message = config.listener.max_body_bytes + _FRAMING_BYTES
    server = grpc.aio.server(
        options=[
            # A stale server on the same port would otherwise keep answering (ARCHITECTURE.md).
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", max_message),
            ("grpc.max_send_message_length", max_message),
        ]
    )
    servicer = ExternalProcessor(Processor(config), router)
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Process": grpc.stream_stream_rpc_method_handler(
                servicer.Process,
                request_deserializer=pb.ProcessingRequest.FromString,
                response_serializer=pb.ProcessingResponse.SerializeToString,
            ),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    return server, port


async def serve(config: Config, listen: str, ready: asyncio.Event | None = None) -> None:
    """Serve until SIGINT/SIGTERM, then finish the streams in flight (up to 5 s)."""
    router = load_router(config)  # before listening: a model that cannot load stops start-up
    service = RouterService(router, config.router.timeout_s) if router is not None else None
    server, port = build_server(config, listen, service)
    await server.start()
    host = listen.rsplit(":", 1)[0]
    log.info("ext_proc server listening on %s:%d", host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    await stop.wait()
    await server.stop(grace=5)
    if service is not None:
        service.close()

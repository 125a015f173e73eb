"""The ext_proc gRPC server: a thin shell that feeds Envoy's messages to the processor.

Two transports serve the same ``ExtProcService``: ``h2`` (the default, h2grpc.py) and
``grpcio`` (grpc.aio), kept for comparison; bench/RESULTS.md has the cost of each. Envoy's
route says in the stream's gRPC metadata what the stream is for: the decision for a request
of one client API (apis/), the translation of one response (response_translation.py), or
one attempt of a fail-over chain's request at a member other than its primary (fallback.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

import grpc
from google.protobuf.message import DecodeError

from .._proto import ext_proc_pb2 as pb
from ..apis import API_METADATA, CLIENT_APIS, OPENAI_CHAT, ClientApi, client_api
from ..config import Config
from ..cores import available_cores
from ..decide import Pending
from ..errors import ErrorReply
from ..ops import endpoint, metrics
from ..router.base import RouteChoice
from ..router.conversation import reading_for
from ..router.service import RouterService, load_service
from ..translate import APIS, translator
from ..wire import (
    CHAIN_KEY,
    FALLBACK_METADATA,
    MODEL_KEY,
    PROVIDER_KEY,
    ROUTE_KEY,
    ROUTING_KEY,
    TRACEPARENT,
    TRANSLATE_METADATA,
    envoy_body_limit,
)
from .decision_headers import DecisionHeadersProcessor, DecisionHeaderStreams
from .fallback import FallbackAttempt
from .h2grpc import UNAVAILABLE, CallError, FinalAnswer, H2GrpcServer, Limits, OpenStream
from .health import Health, add_to_grpcio, h2_methods
from .live import LiveConfig
from .offload import BIG_BODY_BYTES, BodyReader, ReaderFailed, helper_count
from .processor import Answer, Processor, decision_fields, error_response, request_body_span
from .response_translation import TranslatedResponse

if TYPE_CHECKING:  # imported at run time only when tracing is configured (serve)
    from ..ops.tracing import RouterTracer

log = logging.getLogger("plano_extproc.server")

Engine = Literal["h2", "grpcio"]
ENGINES: tuple[Engine, ...] = ("h2", "grpcio")
SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"
METHOD = f"/{SERVICE}/Process"
INTERNAL_ERROR = ErrorReply(
    500, "The gateway failed to process this request.", type="server_error", code="internal_error"
)
# The decision's keys the router's span carries as plano.<key> (never the key, AUTH_KEY).
ROUTER_SPAN_KEYS = (MODEL_KEY, PROVIDER_KEY, ROUTING_KEY, ROUTE_KEY, CHAIN_KEY)
# Room for the protobuf framing around the largest body the listener accepts.
_FRAMING_BYTES = 64 * 1024

# One serialized message in, its serialized answer (or an awaitable of it) out.
Handler = Callable[[bytes], "bytes | Awaitable[bytes]"]
# A stream's state machine: one message in, its answer and whether it is the stream's last.
Step = Callable[[pb.ProcessingRequest], tuple[pb.ProcessingResponse, bool]]


class ExtProcService:
    """Envoy opens one Process stream per HTTP request; each message gets one answer.

    A body over ``big_body`` bytes is read by ``reader``'s helper processes (offload.py):
    the event loop would otherwise hold its whole parse. Without a reader every body is
    read in place."""

    def __init__(
        self,
        processor: Processor,
        router: RouterService | None,
        reader: BodyReader | None = None,
        big_body: int = BIG_BODY_BYTES,
    ) -> None:
        self._processor = processor
        self._router = router
        self._reader = reader
        self._big_body = big_body if reader is not None else sys.maxsize
        # The decision streams' handlers, one per client API, made once: most streams
        # are these.
        self._deciders: dict[str, Handler] = {
            api.metadata: functools.partial(self.handle, api=api) for api in CLIENT_APIS
        }
        self._pairs = {(a, b): translator(a, b) for a in APIS for b in APIS}

    def open_stream(self, metadata: Mapping[str, str]) -> Handler:
        """The handler for the messages of one gRPC stream, from its metadata."""
        pair_name = metadata.get(TRANSLATE_METADATA)
        if pair_name is not None:
            client, _, upstream = pair_name.partition(">")
            pair = self._pairs.get((client, upstream))
            if pair is not None:
                return functools.partial(self._step, TranslatedResponse(pair).handle)
            log.warning("a response stream for an unknown translation %r", pair_name[:40])
        chain_id = metadata.get(FALLBACK_METADATA)
        if chain_id is not None:
            config = self._processor.config
            chain = config.chains.get(chain_id)
            if chain is not None:
                attempt = FallbackAttempt(config, chain)
                return functools.partial(self._step, attempt.handle, api=attempt.error_api)
            # An Envoy config rendered from another config than this server's: the attempt
            # cannot be readied, and must not leave as the attempt before left it.
            log.warning("a fallback stream for an unknown chain %r", chain_id[:40])
            return self._unknown_chain
        return self._decider(metadata)

    def _decider(self, metadata: Mapping[str, str]) -> Handler:
        """The handler of a decision stream (the request's headers and body)."""
        api = client_api(metadata.get(API_METADATA))
        return self._deciders[(api or OPENAI_CHAT).metadata]

    @staticmethod
    def _unknown_chain(payload: bytes) -> bytes:
        return FinalAnswer(error_response(INTERNAL_ERROR).SerializeToString())

    def _step(self, step: Step, payload: bytes, api: ClientApi = OPENAI_CHAT) -> bytes:
        """One message of a stream answered by ``step`` (a response's translation, a
        fallback attempt): the last answer ends the call. ``api``: the shape of its errors."""
        try:
            answer, last = step(pb.ProcessingRequest.FromString(payload))
        except DecodeError as exc:
            log.warning("an ext_proc message that is not a ProcessingRequest: %s", exc)
            metrics.extproc_error(metrics.MALFORMED)
            return FinalAnswer(error_response(INTERNAL_ERROR, api).SerializeToString())
        except Exception:
            return FinalAnswer(self._failed(api).SerializeToString())
        serialized = answer.SerializeToString()
        return FinalAnswer(serialized) if last else serialized

    def handle(
        self, payload: bytes, api: ClientApi = OPENAI_CHAT, trace: str | None = None
    ) -> bytes | Awaitable[bytes]:
        """The answer to one serialized ProcessingRequest of a request in ``api``, or an
        awaitable of it when the router must read the request first, or a helper process
        its big body. ``trace``: the call's traceparent, where the router's span is made
        (TracedExtProcService)."""
        try:
            if len(payload) > self._big_body:
                span = request_body_span(payload)
                if span is not None:
                    return self._read_big(payload, span, api, trace)
            request = pb.ProcessingRequest.FromString(payload)
            response = self._processor.handle(request, api)
            if isinstance(response, Pending):
                return self._route(response, trace=trace)
        except DecodeError as exc:
            # Not from Envoy (the port is open to local processes): one line, no traceback.
            log.warning("an ext_proc message that is not a ProcessingRequest: %s", exc)
            metrics.extproc_error(metrics.MALFORMED)
            return FinalAnswer(error_response(INTERNAL_ERROR, api).SerializeToString())
        except Exception:
            return FinalAnswer(self._failed(api).SerializeToString())
        if request.HasField("request_body"):
            # The decision is the last message this request needs: ending the call with it
            # frees the stream at once instead of holding it for the whole (possibly long,
            # streamed) response, so Envoy's limits on the ext_proc cluster count decisions
            # in flight, not requests.
            return FinalAnswer(response.SerializeToString())
        return response.SerializeToString()

    async def _read_big(
        self, payload: bytes, span: tuple[int, int], api: ClientApi, trace: str | None = None
    ) -> bytes:
        assert self._reader is not None
        response: Answer
        try:
            if span[1] - span[0] > self._processor.config.listener.max_body_bytes:
                response = self._processor.too_large(api)
            else:
                answer = self._processor.decide(await self._reader.read(payload, span), api)
                if isinstance(answer, Pending):
                    return await self._route(answer, big=True, trace=trace)
                response = answer
        except ReaderFailed as exc:
            log.error("%s: answering 500", exc)
            metrics.extproc_error(metrics.READER)
            response = error_response(INTERNAL_ERROR, api)
        except Exception:
            response = self._failed(api)
        return await self._final_big(response)

    async def _route(self, pending: Pending, big: bool = False, trace: str | None = None) -> bytes:
        response: Answer
        try:
            choice = router_ms = None
            if self._router is not None:
                started = time.perf_counter()
                choice = await self._router.choose(pending.request.messages)
                router_ms = (time.perf_counter() - started) * 1000  # for the access log
            response = self._processor.on_route_choice(pending, choice, router_ms)
            if trace is not None and router_ms is not None:
                self._trace_router(trace, router_ms, choice, response)
        except Exception:
            response = self._failed(pending.api)
        if big:
            return await self._final_big(response)
        return FinalAnswer(response.SerializeToString())

    def _trace_router(
        self, trace: str, router_ms: float, choice: RouteChoice | None, response: Answer
    ) -> None:
        """Overridden where the server traces (TracedExtProcService); never called else:
        only a stream opened with a traceparent there has one."""

    @staticmethod
    async def _final_big(response: Answer) -> bytes:
        # Each copy of a multi-megabyte answer (one to serialize it, one for the transport)
        # holds the event loop for milliseconds: other streams are served between them.
        await asyncio.sleep(0)
        serialized = response.SerializeToString()
        await asyncio.sleep(0)
        return FinalAnswer(serialized)

    @staticmethod
    def _failed(api: ClientApi = OPENAI_CHAT) -> pb.ProcessingResponse:
        # A bug of ours must cost one request a clear 500, never the stream or server.
        log.exception("failed to process an ext_proc message")
        metrics.extproc_error(metrics.INTERNAL)
        return error_response(INTERNAL_ERROR, api)


class TracedExtProcService(ExtProcService):
    """The service where the config has tracing: a decision stream whose call carries
    Envoy's trace context (a sampled request) gets the router's span, the child of Envoy's
    span for the call. Without tracing ExtProcService serves as it is, with no check."""

    def __init__(
        self,
        processor: Processor,
        router: RouterService | None,
        reader: BodyReader | None,
        tracer: RouterTracer,
    ) -> None:
        super().__init__(processor, router, reader)
        self._tracer = tracer

    def _decider(self, metadata: Mapping[str, str]) -> Handler:
        traceparent = metadata.get(TRACEPARENT)
        # A request Envoy did not sample (W3C flags, the last two hex digits, bit 0): as
        # without tracing.
        if traceparent is None or not _sampled(traceparent):
            return super()._decider(metadata)
        api = client_api(metadata.get(API_METADATA)) or OPENAI_CHAT
        return functools.partial(self.handle, api=api, trace=traceparent)

    def _trace_router(
        self, trace: str, router_ms: float, choice: RouteChoice | None, response: Answer
    ) -> None:
        decision = decision_fields(response)
        attributes: dict[str, str | float] = {
            f"plano.{key}": decision[key].string_value
            for key in ROUTER_SPAN_KEYS
            if key in decision
        }
        attributes["plano.router_ms"] = round(router_ms, 3)
        if choice is not None:
            attributes["plano.router.choice"] = choice.route
            attributes["plano.router.confidence"] = round(choice.confidence, 4)
        else:
            attributes["plano.router.choice"] = "none"  # timed out or failed: the default
        self._tracer.router_span(trace, router_ms, attributes)


def _sampled(traceparent: str) -> bool:
    try:
        return bool(int(traceparent[-2:], 16) & 1)
    except ValueError:
        return False


class Server(Protocol):
    async def start(self) -> int: ...  # the port it listens on

    def serve_ext_proc(self, open_stream: OpenStream) -> None: ...

    def peers(self) -> int | None: ...  # open client connections; None: not known

    async def stop(self, grace: float) -> None: ...


def _starting(metadata: Mapping[str, str]) -> Handler:
    # Until the router is loaded an ext_proc call has no one to answer it: UNAVAILABLE is
    # what a gRPC client (Envoy) reads as "try again", and the health service says so too.
    raise CallError(UNAVAILABLE, "the server is starting")


class _H2Server:
    """The h2 transport: ext_proc (once ``serve_ext_proc`` is called; UNAVAILABLE until
    then) and the health service, or the health service alone."""

    def __init__(
        self, health: Health, listen: str, max_message: int, limits: Limits, ext_proc: bool
    ) -> None:
        methods = h2_methods(health)
        if ext_proc:
            methods[METHOD.encode()] = _starting
        self._server = H2GrpcServer(methods, max_message, limits)
        self._listen = listen

    async def start(self) -> int:
        host, port = self._listen.rsplit(":", 1)
        try:
            return await self._server.start(host, int(port))
        except OSError as exc:
            raise OSError(f"cannot listen on {self._listen}: {exc.strerror}") from exc

    def serve_ext_proc(self, open_stream: OpenStream) -> None:
        self._server.methods[METHOD.encode()] = open_stream

    def peers(self) -> int:
        return len(self._server.connections)

    async def stop(self, grace: float) -> None:
        await self._server.stop(grace)


class _GrpcioServer:
    def __init__(
        self, health: Health, listen: str, max_message: int, limits: Limits, ext_proc: bool
    ) -> None:
        self._server = grpc.aio.server(
            options=[
                # grpcio binds with SO_REUSEPORT by default: a stale server on the same
                # port would keep answering beside this one.
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", max_message),
                ("grpc.max_send_message_length", max_message),
                # The same bounds as the h2 transport, where grpcio has them (h2grpc.Limits).
                ("grpc.max_allowed_incoming_connections", limits.max_connections),
                ("grpc.max_concurrent_streams", limits.max_concurrent_streams),
                ("grpc.max_metadata_size", limits.max_header_list_size),
                ("grpc.absolute_max_metadata_size", limits.max_header_list_size),
                ("grpc.server_handshake_timeout_ms", round(limits.handshake_timeout * 1000)),
                ("grpc.max_connection_idle_ms", round(limits.idle_timeout * 1000)),
                # Keepalive PINGs from Envoy are welcome, idle or not, at most one per 10 s;
                # past a few strikes a PING flood ends the connection (GOAWAY
                # ENHANCE_YOUR_CALM).
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                ("grpc.http2.max_ping_strikes", 2),
            ]
        )
        self._open_stream: OpenStream = _starting

        async def process(
            requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
        ) -> AsyncIterator[bytes]:
            metadata = {str(key): str(value) for key, value in context.invocation_metadata() or ()}
            try:
                handle = self._open_stream(metadata)
            except CallError as exc:
                await context.abort(grpc.StatusCode.UNAVAILABLE, exc.message)
            async for request in requests:
                answer = handle(request)
                if not isinstance(answer, bytes):
                    answer = await answer
                yield bytes(answer)  # grpcio takes exactly bytes, not a subclass
                if isinstance(answer, FinalAnswer):
                    # The call is over with status OK, whether or not Envoy half-closed.
                    return

        if ext_proc:
            handler = grpc.method_handlers_generic_handler(
                SERVICE, {"Process": grpc.stream_stream_rpc_method_handler(process)}
            )
            self._server.add_generic_rpc_handlers((handler,))
        add_to_grpcio(self._server, health)
        self._port = self._server.add_insecure_port(listen)
        if self._port == 0:
            raise OSError(f"cannot listen on {listen}")

    async def start(self) -> int:
        await self._server.start()
        return self._port

    def serve_ext_proc(self, open_stream: OpenStream) -> None:
        self._open_stream = open_stream

    def peers(self) -> None:
        return None  # grpc.aio does not say

    async def stop(self, grace: float) -> None:
        await self._server.stop(grace)


def _transport(
    engine: Engine,
    health: Health,
    listen: str,
    config: Config,
    limits: Limits | None = None,
    ext_proc: bool = True,
) -> Server:
    max_message = envoy_body_limit(config.listener.max_body_bytes) + _FRAMING_BYTES
    kind = _GrpcioServer if engine == "grpcio" else _H2Server
    return kind(health, listen, max_message, limits or Limits(), ext_proc)


def build_server(
    config: Config,
    listen: str,
    router: RouterService | None = None,
    engine: Engine = "h2",
    limits: Limits | None = None,
    reader: BodyReader | None = None,
    decision_headers: bool = False,
) -> Server:
    """A server for ``listen`` (host:port, port 0 picks one), serving at once, not started
    yet. ``router`` reads requests that name no model; without one they go to the default.
    ``limits`` bound what the transport holds (h2grpc.Limits; its defaults when None).
    ``reader`` reads big bodies in helper processes; without one every body is read in
    place. ``decision_headers``: the decision as request headers too, for a mesh ingress
    (decision_headers.py)."""
    health = Health()
    server = _transport(engine, health, listen, config, limits)
    server.serve_ext_proc(_open_stream(config, router, reader, decision_headers))
    health.serving()
    return server


def _open_stream(
    config: Config,
    router: RouterService | None,
    reader: BodyReader | None,
    decision_headers: bool,
    tracer: RouterTracer | None = None,
) -> Callable[[Mapping[str, str]], Handler]:
    """What opens each of Envoy's streams: ours, whose metadata says what the stream is for;
    or, at a mesh ingress, a decision read from the request's headers then its body.
    ``tracer``: the router's spans (the config has tracing)."""
    if not decision_headers:
        if tracer is not None:
            return TracedExtProcService(Processor(config), router, reader, tracer).open_stream
        return ExtProcService(Processor(config), router, reader).open_stream
    processor = DecisionHeadersProcessor(config)
    return DecisionHeaderStreams(ExtProcService(processor, router, reader), processor).open_stream


# Seconds a stop asked by SIGTERM waits for Envoy to leave before the server goes away.
DEFAULT_DRAIN_S = 25.0
# Seconds the calls in flight then have to finish.
STOP_GRACE_S = 5.0


@dataclass(frozen=True)
class ServeOptions:
    """How ``plano-extproc serve`` runs: its command-line options, in one place."""

    listen: str  # host:port of the ext_proc service (and the health service)
    engine: Engine = "h2"
    # A second address that serves the health service alone (Kubernetes probes the pod's
    # address, where the ext_proc port, whose answers carry provider keys, must not be).
    health_listen: str | None = None
    drain_s: float = DEFAULT_DRAIN_S  # on SIGTERM, how long Envoy may take to leave
    decision_headers: bool = False  # the mesh-ingress mode (decision_headers.py)
    watch: bool = True  # reload on a change of the config or key files (SIGHUP always)
    # The gateway's scrape endpoint (ops/endpoint.py), with Envoy's stats read from its
    # admin API at envoy_admin (a socket's path or 127.0.0.1:PORT).
    metrics_listen: str | None = None
    envoy_admin: str | None = None


async def serve(config: Config, options: ServeOptions, ready: asyncio.Event | None = None) -> None:
    """Serve until SIGINT/SIGTERM.

    The port opens at once with the health service NOT_SERVING (ext_proc calls get
    UNAVAILABLE) while the router loads; SERVING once it has.

    SIGTERM drains: NOT_SERVING at once, ext_proc still served until every client
    connection has gone (Envoy has drained and exited) or ``drain_s`` passed; then the
    calls in flight get ``STOP_GRACE_S`` to finish. SIGINT (Ctrl-C) skips the wait."""
    listen, engine, health_listen = options.listen, options.engine, options.health_listen
    metrics_listen, decision_headers = options.metrics_listen, options.decision_headers
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    drain = False

    def on_sigterm() -> None:
        nonlocal drain
        drain = True
        stop.set()

    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    health = Health()
    servers = [_transport(engine, health, listen, config)]
    if health_listen is not None:
        servers.append(_transport(engine, health, health_listen, config, ext_proc=False))
    started: list[Server] = []
    scrape: asyncio.Server | None = None
    service: RouterService | None = None
    reader = None
    live: LiveConfig | None = None
    reloading: list[asyncio.Task[None]] = []
    tracer: RouterTracer | None = None
    if config.tracing is not None:
        # Only here is the OpenTelemetry SDK loaded. Fixed at start: a reload that turns
        # tracing on or off, or moves the collector, reaches the server's spans at restart.
        from ..ops.tracing import RouterTracer

        tracer = RouterTracer(config.tracing)
    try:
        for server, address in zip(servers, (listen, health_listen), strict=False):
            port = await server.start()
            started.append(server)
            log.info(
                "ext_proc server (%s) %s on %s:%d",
                engine,
                "listening" if server is servers[0] else "health service",
                str(address).rsplit(":", 1)[0],
                port,
            )
        if metrics_listen is not None:
            scrape = await endpoint.start(metrics_listen, options.envoy_admin)
            log.info("metrics on http://%s/metrics", metrics_listen)
        # Loaded off the event loop: health checks are answered meanwhile. A model that
        # cannot load stops the server (RouterLoadError).
        service = await loop.run_in_executor(None, load_service, config)
        # One helper for big bodies; two where there are cores to spare for them (the cores
        # this process may use: a pod's CPU limit counts). None when the body limit leaves no
        # body big enough to need one.
        if config.listener.max_body_bytes > BIG_BODY_BYTES:
            workers = helper_count(available_cores())
            reader = BodyReader(reading_for(config.router), workers)
            reader.start()
        live = LiveConfig(
            config,
            service,
            lambda c, s: _open_stream(c, s, reader, decision_headers, tracer),
            servers[0].serve_ext_proc,
        )
        live.serve()
        reloading = live.start(options.watch)
        if not stop.is_set():
            health.serving()
            log.info("ext_proc server serving")
        if ready is not None:
            ready.set()
        await stop.wait()
        health.stop()
        if drain:
            await _drain(servers[0], options.drain_s)
    finally:
        if scrape is not None:
            scrape.close()
        for task in reloading:
            task.cancel()
        for server in started:
            await server.stop(grace=STOP_GRACE_S)
        if live is not None:
            live.close()
        if reader is not None:
            reader.close()
        if service is not None:
            service.close()
        if tracer is not None:
            tracer.close()


async def _drain(server: Server, drain_s: float) -> None:
    """Serve on until the server's clients have all gone, or ``drain_s`` passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + drain_s
    log.info("stopping: NOT_SERVING; serving what Envoy still sends for up to %.0f s", drain_s)
    while loop.time() < deadline and server.peers() != 0:
        await asyncio.sleep(0.05)

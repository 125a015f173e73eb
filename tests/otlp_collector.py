"""A fake OpenTelemetry collector: the OTLP/gRPC trace export service on 127.0.0.1, keeping
every span it is sent (with its resource's service.name) for a test to read."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as service
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as service_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.fakes import free_port


def _value(value: AnyValue) -> object:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind is not None else None


@dataclass(frozen=True)
class Received:
    service: str
    span: Span

    @property
    def attributes(self) -> dict[str, object]:
        return {a.key: _value(a.value) for a in self.span.attributes}

    @property
    def trace_id(self) -> str:
        return self.span.trace_id.hex()

    @property
    def span_id(self) -> str:
        return self.span.span_id.hex()

    @property
    def parent_id(self) -> str:
        return self.span.parent_span_id.hex()


@dataclass
class FakeCollector(service_grpc.TraceServiceServicer):
    port: int = field(default_factory=free_port)
    spans: list[Received] = field(default_factory=list)
    # Every export request as sent, to search for what must never be in one.
    raw: list[bytes] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: grpc.Server | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def Export(
        self, request: service.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> service.ExportTraceServiceResponse:
        received = []
        for resource_spans in request.resource_spans:
            names = [
                a.value.string_value
                for a in resource_spans.resource.attributes
                if a.key == "service.name"
            ]
            for scope in resource_spans.scope_spans:
                received += [Received(names[0] if names else "", s) for s in scope.spans]
        with self._lock:
            self.raw.append(request.SerializeToString())
            self.spans += received
        return service.ExportTraceServiceResponse()

    def start(self) -> FakeCollector:
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        # The generated gRPC module has no annotations.
        service_grpc.add_TraceServiceServicer_to_server(self, self._server)  # type: ignore[no-untyped-call]
        self._server.add_insecure_port(f"127.0.0.1:{self.port}")
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None)

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.spans)

    def wait_for(
        self, done: Callable[[list[Received]], bool], timeout: float = 15.0
    ) -> list[Received]:
        """The spans once ``done`` holds of them, or what arrived by ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            spans = self.snapshot()
            if done(spans):
                return spans
            time.sleep(0.1)
        return self.snapshot()

"""The server's router span, exported by OTLP/gRPC when the config has tracing.

Envoy's gRPC call to the ext_proc server carries the W3C trace context (``traceparent``) of
its own span for that call; the server's span for the router's decision is that span's
child, in the same trace as Envoy's span for the request. The span is made after the fact
from the router's measured time, so nothing is started before the router runs or held
across an await, and it is sent in batches from the exporter's own thread.

The OpenTelemetry SDK is imported here only, and this module only when tracing is
configured: without tracing the server never loads it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ..config import Tracing
from ..wire import TRACEPARENT

log = logging.getLogger("plano_extproc.tracing")

# The resource's service.name on the server's spans (Envoy's are plano-gateway).
SERVICE = "plano-extproc"
ROUTER_SPAN = "plano.router"


class RouterTracer:
    """Makes and exports the router's spans."""

    def __init__(self, config: Tracing) -> None:
        # A request Envoy did not sample arrives with its traceparent's sampled flag off:
        # the parent decides, so the server traces exactly the requests Envoy does.
        self._provider = TracerProvider(
            resource=Resource.create({SERVICE_NAME: SERVICE}), sampler=ParentBased(ALWAYS_ON)
        )
        exporter = OTLPSpanExporter(endpoint=f"{config.host}:{config.port}", insecure=True)
        self._provider.add_span_processor(BatchSpanProcessor(exporter))
        self._tracer = self._provider.get_tracer("plano_extproc")
        self._propagator = TraceContextTextMapPropagator()
        log.info("tracing: the router's spans go to %s", config.endpoint)

    def router_span(
        self, traceparent: str, router_ms: float, attributes: Mapping[str, str | float]
    ) -> None:
        """A span for a router decision that just took ``router_ms``, under ``traceparent``."""
        context = self._propagator.extract({TRACEPARENT: traceparent})
        end = time.time_ns()
        span = self._tracer.start_span(
            ROUTER_SPAN,
            context=context,
            kind=SpanKind.INTERNAL,
            start_time=end - int(router_ms * 1e6),
            attributes=dict(attributes),
        )
        span.end(end_time=end)

    def close(self) -> None:
        """Send what is still queued, then stop the exporter."""
        self._provider.shutdown()

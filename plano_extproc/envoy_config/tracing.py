"""Envoy's own OpenTelemetry tracer on the gateway listener, when the config has tracing.

Envoy starts a span for each request it samples (``random_sampling`` percent), exports it by
OTLP/gRPC to the collector's cluster, and tags it, when the request ends, with the decision:
each tag reads one key of the ``plano`` dynamic metadata the server set (never the
namespace whole: it holds the provider's credential, ``auth``). Envoy's gRPC call to the
ext_proc server is a child span of its own and carries the W3C trace context
(``traceparent``) in the call's metadata, from which the server's router span descends.

Without tracing nothing here is rendered: no tracer, no cluster, no per-request work.
"""

from __future__ import annotations

from datetime import timedelta

from envoy_data_plane.envoy.config.bootstrap import v3 as bootstrap
from envoy_data_plane.envoy.config.cluster import v3 as cluster
from envoy_data_plane.envoy.config.core import v3 as core
from envoy_data_plane.envoy.config.endpoint import v3 as endpoint
from envoy_data_plane.envoy.config.trace import v3 as trace
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager import v3 as hcm
from envoy_data_plane.envoy.extensions.request_id.uuid import v3 as uuid
from envoy_data_plane.envoy.extensions.tracers.opentelemetry.samplers import v3 as samplers
from envoy_data_plane.envoy.type import v3 as type_v3
from envoy_data_plane.envoy.type.metadata import v3 as metadata
from envoy_data_plane.envoy.type.tracing import v3 as tracing_tags
from envoy_data_plane.google.protobuf import Any, Struct

from ..config import Tracing
from ..wire import (
    AUTH_KEY,
    CHAIN_KEY,
    METADATA_NAMESPACE,
    MODEL_KEY,
    PROVIDER_KEY,
    ROUTE_KEY,
    ROUTING_KEY,
)
from .clusters import http2_only
from .common import address

COLLECTOR_CLUSTER = "plano_otlp_collector"
TRACER = "envoy.tracers.opentelemetry"
PARENT_BASED = "envoy.tracers.opentelemetry.samplers.parent_based"
RATIO = "envoy.tracers.opentelemetry.samplers.trace_id_ratio_based"
# The resource's service.name on Envoy's spans (the server's are plano-extproc).
SERVICE_NAME = "plano-gateway"

# Span attribute -> the key of the plano metadata it is read from.
SPAN_TAGS: dict[str, str] = {
    "plano.model": MODEL_KEY,
    "plano.provider": PROVIDER_KEY,
    "plano.routing": ROUTING_KEY,
    "plano.route": ROUTE_KEY,
    "plano.chain": CHAIN_KEY,
}
assert AUTH_KEY not in SPAN_TAGS.values()

# Envoy's OpenTelemetry tracer exports when this many spans are waiting, or every
# flush_interval_ms (5 s). Its default of 5 is one export call per five spans: at a thousand
# requests a second, two hundred calls a second to the collector.
MIN_FLUSH_SPANS = 512


def _tag(name: str, key: str) -> tracing_tags.CustomTag:
    return tracing_tags.CustomTag(
        tag=name,
        metadata=tracing_tags.CustomTagMetadata(
            kind=metadata.MetadataKind(request=metadata.MetadataKindRequest()),
            metadata_key=metadata.MetadataKey(
                key=METADATA_NAMESPACE, path=[metadata.MetadataKeyPathSegment(key=key)]
            ),
        ),
    )


def sampler(percent: float) -> core.TypedExtensionConfig:
    """The tracer's own sampling: a request that comes with a trace context follows its
    sampled flag (the application's trace stays whole); any other is sampled by its trace
    id, ``percent`` of them. Envoy's connection manager samples by its request id instead,
    and with that off (``request_ids``) it traced every request whatever its percentage
    (measured: 200 of 200 at 10%)."""
    ratio = samplers.TraceIdRatioBasedSamplerConfig(
        sampling_percentage=type_v3.FractionalPercent(
            numerator=round(percent * 10_000),
            denominator=type_v3.FractionalPercentDenominatorType.MILLION,
        )
    )
    parent_based = samplers.ParentBasedSamplerConfig(
        wrapped_sampler=core.TypedExtensionConfig(name=RATIO, typed_config=Any.pack(ratio))
    )
    return core.TypedExtensionConfig(name=PARENT_BASED, typed_config=Any.pack(parent_based))


def listener_tracing(config: Tracing) -> hcm.HttpConnectionManagerTracing:
    """The connection manager's ``tracing``: the tracer, the sampling and the decision tags."""
    tracer = trace.OpenTelemetryConfig(
        grpc_service=core.GrpcService(
            envoy_grpc=core.GrpcServiceEnvoyGrpc(cluster_name=COLLECTOR_CLUSTER),
            timeout=timedelta(seconds=5),
        ),
        service_name=SERVICE_NAME,
        sampler=sampler(config.sampling_percent),
    )
    return hcm.HttpConnectionManagerTracing(
        provider=trace.TracingHttp(name=TRACER, typed_config=Any.pack(tracer)),
        # Every request goes to the tracer, whose sampler decides (``sampler``).
        random_sampling=type_v3.Percent(value=100.0),
        custom_tags=[_tag(name, key) for name, key in SPAN_TAGS.items()],
    )


def request_ids() -> hcm.RequestIdExtension:
    """Envoy's request ids, sampling apart from them. By default Envoy keeps its sampling
    decision in the x-request-id (a UUID's bits): a request whose client sent an id of its
    own that is not a UUID (a 127.0.0.1 client's is kept) was never traced, whatever the
    percentage."""
    config = uuid.UuidRequestIdConfig(use_request_id_for_trace_sampling=False)
    return hcm.RequestIdExtension(typed_config=Any.pack(config))


def export_batching() -> bootstrap.LayeredRuntime:
    """Envoy's runtime, for the tracer's batch size (MIN_FLUSH_SPANS)."""
    layer = Struct.from_dict({"tracing.opentelemetry.min_flush_spans": MIN_FLUSH_SPANS})
    return bootstrap.LayeredRuntime(
        layers=[bootstrap.RuntimeLayer(name="tracing", static_layer=layer)]
    )


def collector_cluster(config: Tracing) -> cluster.Cluster:
    """The OTLP/gRPC collector (HTTP/2, plaintext), found by DNS so ``localhost`` or a
    Kubernetes service name does."""
    return cluster.Cluster(
        name=COLLECTOR_CLUSTER,
        type=cluster.ClusterDiscoveryType.STRICT_DNS,
        dns_lookup_family=cluster.ClusterDnsLookupFamily.V4_PREFERRED,
        connect_timeout=timedelta(seconds=1),
        typed_extension_protocol_options=http2_only(),
        load_assignment=endpoint.ClusterLoadAssignment(
            cluster_name=COLLECTOR_CLUSTER,
            endpoints=[
                endpoint.LocalityLbEndpoints(
                    lb_endpoints=[
                        endpoint.LbEndpoint(
                            endpoint=endpoint.Endpoint(address=address(config.host, config.port))
                        )
                    ]
                )
            ],
        ),
    )

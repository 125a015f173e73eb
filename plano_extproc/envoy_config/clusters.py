"""The clusters: the ext_proc server(s) and one per provider endpoint (TLS, circuit breakers)."""

from __future__ import annotations

import ipaddress
from datetime import timedelta

from envoy_data_plane.envoy.config.cluster import v3 as cluster
from envoy_data_plane.envoy.config.core import v3 as core
from envoy_data_plane.envoy.config.endpoint import v3 as endpoint
from envoy_data_plane.envoy.extensions.transport_sockets.tls import v3 as tls
from envoy_data_plane.envoy.extensions.upstreams.http import v3 as upstream_http
from envoy_data_plane.envoy.type.matcher.v3 import (
    StringMatcher,
)
from envoy_data_plane.google.protobuf import Any

from ..config import Endpoint as ProviderEndpoint
from .common import address
from .options import EnvoyOptions

EXTPROC_CLUSTER = "plano_extproc"


def circuit_breakers(limit: int) -> cluster.CircuitBreakers:
    """Envoy's per-cluster limits, sized from ``max_concurrent_requests`` rather than left at
    Envoy's 1,024. Past them Envoy answers at once (the UO flag, or an ext_proc stream that
    could not open), which the local replies turn into 503 gateway_at_capacity."""
    return cluster.CircuitBreakers(
        thresholds=[
            cluster.CircuitBreakersThresholds(
                max_connections=limit,
                max_pending_requests=limit,
                max_requests=limit,
                max_retries=limit,
            )
        ]
    )


def http2_only() -> dict[str, Any]:
    """A cluster's typed_extension_protocol_options for a gRPC upstream: HTTP/2 only."""
    h2 = upstream_http.HttpProtocolOptions(
        explicit_http_config=upstream_http.HttpProtocolOptionsExplicitHttpConfig(
            http2_protocol_options=core.Http2ProtocolOptions()
        )
    )
    return {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": Any.pack(h2)}


def extproc_cluster(options: EnvoyOptions, limit: int) -> cluster.Cluster:
    # gRPC needs HTTP/2. Envoy's default windows (256 MiB) already carry a max_body_size body
    # each way in one message (a 16 MiB body and a 12 MB replacement passed).
    hosts = [
        endpoint.LbEndpoint(endpoint=endpoint.Endpoint(address=address(h, p)))
        for h, p in options.extproc
    ]
    return cluster.Cluster(
        name=EXTPROC_CLUSTER,
        type=cluster.ClusterDiscoveryType.STATIC,
        connect_timeout=timedelta(seconds=1),
        lb_policy=cluster.ClusterLbPolicy.ROUND_ROBIN,
        # The server ends each call with its decision, so this bounds decisions in flight.
        circuit_breakers=circuit_breakers(limit),
        typed_extension_protocol_options=http2_only(),
        load_assignment=endpoint.ClusterLoadAssignment(
            cluster_name=EXTPROC_CLUSTER,
            endpoints=[endpoint.LocalityLbEndpoints(lb_endpoints=hosts)],
        ),
    )


def provider_cluster(
    name: str, ep: ProviderEndpoint, ca_bundle: str, limit: int
) -> cluster.Cluster:
    try:
        ipaddress.ip_address(ep.host)
        is_ip = True
    except ValueError:
        is_ip = False
    # auto_host_rewrite takes Host from the endpoint's hostname (a STATIC endpoint has none
    # of its own); with the port when it is not the scheme's default.
    default_port = 443 if ep.tls else 80
    host_header = ep.host if ep.port == default_port else f"{ep.host}:{ep.port}"
    lb_endpoint = endpoint.LbEndpoint(
        endpoint=endpoint.Endpoint(address=address(ep.host, ep.port), hostname=host_header)
    )
    result = cluster.Cluster(
        name=name,
        type=cluster.ClusterDiscoveryType.STATIC
        if is_ip
        else cluster.ClusterDiscoveryType.LOGICAL_DNS,
        connect_timeout=timedelta(seconds=5),
        dns_lookup_family=cluster.ClusterDnsLookupFamily.V4_PREFERRED,
        circuit_breakers=circuit_breakers(limit),
        load_assignment=endpoint.ClusterLoadAssignment(
            cluster_name=name, endpoints=[endpoint.LocalityLbEndpoints(lb_endpoints=[lb_endpoint])]
        ),
    )
    if ep.tls:
        # A valid chain alone would admit any publicly trusted certificate: the SAN must
        # name the host too (a certificate for another name failed with UF, as it should).
        san_type = (
            tls.SubjectAltNameMatcherSanType.IP_ADDRESS
            if is_ip
            else tls.SubjectAltNameMatcherSanType.DNS
        )
        validation = tls.CertificateValidationContext(
            trusted_ca=core.DataSource(filename=ca_bundle),
            match_typed_subject_alt_names=[
                tls.SubjectAltNameMatcher(san_type=san_type, matcher=StringMatcher(exact=ep.host))
            ],
        )
        context = tls.UpstreamTlsContext(
            sni="" if is_ip else ep.host,  # SNI may not carry an IP address (RFC 6066)
            common_tls_context=tls.CommonTlsContext(validation_context=validation),
        )
        result.transport_socket = core.TransportSocket(
            name="envoy.transport_sockets.tls", typed_config=Any.pack(context)
        )
    return result

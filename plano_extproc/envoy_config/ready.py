"""The readiness listener: Envoy's own ``/ready`` on an address a prober can reach, and nothing
else of the admin API.

Kubernetes probes the pod's IP, but the admin API listens on an owner-only Unix socket (or on
127.0.0.1): whoever reaches it can stop Envoy or raise its log level until it logs provider
keys. This listener proxies exactly ``GET /ready`` to it (so the answer is Envoy's own: 200
``LIVE``, or 503 while it initializes or after ``/healthcheck/fail``, which the graceful stop
posts) and answers every other request 404 itself. Only in bootstraps rendered with a
``ready_port``.
"""

from __future__ import annotations

from datetime import timedelta

from envoy_data_plane.envoy.config.cluster import v3 as cluster
from envoy_data_plane.envoy.config.endpoint import v3 as endpoint
from envoy_data_plane.envoy.config.listener import v3 as listener
from envoy_data_plane.envoy.config.route import v3 as route
from envoy_data_plane.envoy.extensions.filters.http.router import v3 as router
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager import v3 as hcm
from envoy_data_plane.envoy.type.matcher.v3 import StringMatcher

from .common import address, admin_address, http_filter, manager_chains
from .options import EnvoyOptions

READY_LISTENER = "ready"
ADMIN_CLUSTER = "plano_admin"
READY_PATH = "/ready"

# A probe's request and answer are a few hundred bytes; this listener faces the network.
_BUFFER_LIMIT = 16 * 1024


def ready_listener(options: EnvoyOptions, port: int) -> listener.Listener:
    only_ready = route.Route(
        name="ready",
        # The whole path, exactly (a query string is not part of it); GET only: every other
        # path and method of the admin API (/quitquitquit, /logging, /config_dump, /stats...)
        # falls to the 404 below.
        match=route.RouteMatch(
            path=READY_PATH,
            headers=[route.HeaderMatcher(name=":method", string_match=StringMatcher(exact="GET"))],
        ),
        route=route.RouteAction(cluster=ADMIN_CLUSTER, timeout=timedelta(seconds=2)),
    )
    not_found = route.Route(
        name="not_found",
        match=route.RouteMatch(prefix="/"),
        direct_response=route.DirectResponseAction(status=404),
    )
    manager = hcm.HttpConnectionManager(
        stat_prefix=READY_LISTENER,
        codec_type=hcm.HttpConnectionManagerCodecType.AUTO,
        route_config=route.RouteConfiguration(
            name=READY_LISTENER,
            virtual_hosts=[
                route.VirtualHost(
                    name=READY_LISTENER, domains=["*"], routes=[only_ready, not_found]
                )
            ],
        ),
        http_filters=[
            http_filter("envoy.filters.http.router", router.Router(suppress_envoy_headers=True))
        ],
    )
    return listener.Listener(
        name=READY_LISTENER,
        address=address(options.ready_address, port),
        per_connection_buffer_limit_bytes=_BUFFER_LIMIT,
        filter_chains=manager_chains(manager),
    )


def admin_cluster(options: EnvoyOptions) -> cluster.Cluster:
    """Envoy's own admin API as an upstream, for the readiness listener alone."""
    host = endpoint.LbEndpoint(endpoint=endpoint.Endpoint(address=admin_address(options)))
    return cluster.Cluster(
        name=ADMIN_CLUSTER,
        type=cluster.ClusterDiscoveryType.STATIC,
        connect_timeout=timedelta(seconds=1),
        load_assignment=endpoint.ClusterLoadAssignment(
            cluster_name=ADMIN_CLUSTER,
            endpoints=[endpoint.LocalityLbEndpoints(lb_endpoints=[host])],
        ),
    )

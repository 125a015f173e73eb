"""What the ext_proc server and the Envoy config agree on.

The server answers each chat request with its decision as dynamic metadata in one namespace;
the provider routes match it, and turn it into the provider's credential header and the
decision headers the client sees.
"""

METADATA_NAMESPACE = "plano"
# The provider entry that serves the request (openai/gpt-5.2, or openai/* for a wildcard): the
# provider routes match it.
PROVIDER_KEY = "provider"
MODEL_KEY = "model"  # the model that serves it, e.g. openai/gpt-5.2: the x-plano-model header
# A wildcard's model id (gpt-4.1 of openai/gpt-4.1): Azure's deployment path is made of it.
MODEL_ID_KEY = "model_id"
ROUTING_KEY = "routing"  # direct, alias, default or preference
ROUTE_KEY = "route"  # the routing preference that chose it (preference only)
# The provider credential, header value ready. Never log this namespace.
AUTH_KEY = "auth"
# For the access log only (envoy_config/access_log.py), at no cost per request: the client's
# API (openai, anthropic, anthropic-count-tokens: apis/, ClientApi.metadata) and whether the
# request asked for a streamed answer (true/false) are in the answer template of each
# decision, which is cached per (decision, API, stream); the router's decision time, a number
# of milliseconds, only on the preference-routed path, where the router ran anyway.
CLIENT_API_KEY = "api"
STREAM_KEY = "stream"
ROUTER_MS_KEY = "router_ms"

# What the response translator needs of the request (the client's streaming options), in a
# namespace of its own: Envoy forwards it to the server with the response, and no key with it.
RESPONSE_NAMESPACE = "plano_response"
INCLUDE_USAGE_KEY = "include_usage"
# The gRPC metadata by which a translated provider route tells the server which pair
# translates its response: "<client API>><upstream API>", e.g. "anthropic>openai".
TRANSLATE_METADATA = "x-plano-translate"

# Set by Envoy's local-reply mappers on every error reply Envoy gives itself, so that the
# response translator leaves it as it is (it is in the client's shape already, and a
# translated route's own failures pass through that filter too). Like every x-plano-*
# header, the client never sees it.
LOCAL_REPLY_HEADER = "x-plano-local-reply"

MODEL_HEADER = "x-plano-model"
ROUTING_HEADER = "x-plano-routing"
ROUTE_HEADER = "x-plano-route"
# Response header -> the metadata key it is made of.
DECISION_METADATA = {MODEL_HEADER: MODEL_KEY, ROUTING_HEADER: ROUTING_KEY, ROUTE_HEADER: ROUTE_KEY}

# Every header of ours starts so. Envoy drops a client's before anything reads them and a
# provider's before the client sees them; only the decision headers above are set, by Envoy.
OUR_HEADER_PREFIX = "x-plano-"
# Client credentials are meant for the gateway, never for the provider; nor are the client's
# cookies, or credentials meant for a proxy on the client's side.
CLIENT_AUTH_HEADERS = ("authorization", "x-api-key", "api-key")
CLIENT_ONLY_HEADERS = (*CLIENT_AUTH_HEADERS, "cookie", "proxy-authorization")

# What the server's own replies (ImmediateResponse.details) say in Envoy's response code
# details: Envoy's local-reply mappers leave them as they are and rewrite Envoy's own.
SERVER_REPLY_DETAILS = "plano_extproc_reply"

# Envoy buffers up to max_body_size plus this: the server, not Envoy, refuses a client body
# over max_body_size (413), so the body it sends back with a model put in (a few bytes more)
# always fits Envoy's buffer. A rewritten body past Envoy's limit made Envoy answer 413 in the
# middle of applying the answer, with an internal assertion ("route_cache_blocked_").
BODY_REWRITE_HEADROOM = 64 * 1024


def envoy_body_limit(max_body_bytes: int) -> int:
    """What Envoy buffers of a request body for a ``max_body_size`` (capped at 2^32-1)."""
    return min(max_body_bytes + BODY_REWRITE_HEADROOM, 2**32 - 1)


# Provider fallback (a decision's fail-over chain, config.Chain). The decision names its chain
# in the `plano` namespace; the chain's routes match it and send to the chain's aggregate
# cluster, whose upstream filters run per attempt.
CHAIN_KEY = "chain"

# The access log's fields read from the `plano` namespace, field -> key: each key by name,
# never the namespace whole (it holds AUTH_KEY).
ACCESS_LOG_METADATA = {
    "api": CLIENT_API_KEY,
    "stream": STREAM_KEY,
    "model": MODEL_KEY,
    "provider": PROVIDER_KEY,
    "routing": ROUTING_KEY,
    "route": ROUTE_KEY,
    "router_ms": ROUTER_MS_KEY,
    "chain": CHAIN_KEY,
}
# The gRPC metadata of Envoy's ext_proc call that carries the W3C trace context of its span
# for the call, when the listener traces (envoy_config/tracing.py).
TRACEPARENT = "traceparent"
# The gRPC metadata of the upstream ext_proc stream that readies an attempt for a chain
# member other than the decision's own: the chain's id.
FALLBACK_METADATA = "x-plano-fallback"
# Set per attempt, inside the aggregate cluster's upstream filters, to the member Envoy
# chose (its endpoint's metadata), and removed before the request leaves.
HOST_TARGET_HEADER = "x-plano-host-target"
# The member that answered, from the upstream filters to the client's x-plano-model; not an
# x-plano-* name, which the downstream rules remove before they set the decision headers.
SERVED_HEADER = "plano-served-model"
ATTEMPTS_HEADER = "x-plano-attempts"


# At a mesh or gateway ingress (`plano-extproc serve --decision-headers`,
# extproc/decision_headers.py) the route table is the mesh's own (Gateway API HTTPRoute
# rules): it can match request headers, but neither dynamic metadata nor a header value taken
# from it. There the decision's answer also sets request headers, and clears the route cache
# so that the ingress picks its route again from them:
# - PROVIDER_HEADER: the provider entry that serves it (openai/gpt-5.2, or openai/* for a
#   wildcard), as PROVIDER_KEY;
# - UPSTREAM_HEADER: the provider's endpoint, its host with ":port" when the port is not the
#   scheme's default (api.openai.com, vllm.internal:8000): what the ingress's rules match,
#   one rule per endpoint, whose backend is that host;
# - the provider's credential header (its auth_header: authorization, x-api-key, api-key)
#   with the gateway's key, the entry's configured `headers`, the new body's content-length,
#   and Azure OpenAI's deployment :path with its api-version query;
# and removes CLIENT_ONLY_HEADERS (under passthrough_auth only the cookies and proxy
# credentials). Its request-headers answer removes every x-plano-* header the client sent and
# adds what the client's API requires when the client sent none (anthropic-version). The
# ingress's rules should remove both selectors before the request leaves.
PROVIDER_HEADER = "x-plano-provider"
UPSTREAM_HEADER = "x-plano-upstream"

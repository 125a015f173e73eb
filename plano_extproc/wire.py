"""What the ext_proc server and the Envoy config agree on.

The server answers each chat request with its decision as dynamic metadata in one namespace;
the provider routes match it, and turn it into the provider's credential header and the
decision headers the client sees.
"""

METADATA_NAMESPACE = "plano"
MODEL_KEY = "model"  # the provider that serves the request, e.g. openai/gpt-5.2
ROUTING_KEY = "routing"  # direct, alias, default or preference
ROUTE_KEY = "route"  # the routing preference that chose it (preference only)
# The provider credential, header value ready. Never log this namespace.
AUTH_KEY = "auth"

MODEL_HEADER = "x-plano-model"
ROUTING_HEADER = "x-plano-routing"
ROUTE_HEADER = "x-plano-route"
# Response header -> the metadata key it is made of.
DECISION_METADATA = {MODEL_HEADER: MODEL_KEY, ROUTING_HEADER: ROUTING_KEY, ROUTE_HEADER: ROUTE_KEY}
DECISION_HEADERS = tuple(DECISION_METADATA)

CHAT_PATH = "/v1/chat/completions"
UPSTREAM_CHAT_SUFFIX = "/chat/completions"  # after the provider's base_url path
# Client credentials are meant for the gateway, never for the provider.
CLIENT_AUTH_HEADERS = ("authorization", "x-api-key", "api-key")

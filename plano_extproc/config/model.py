"""The config as the gateway uses it: frozen dataclasses, and the defaults they start from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# Names a client may send to mean "no particular model: let the gateway choose".
AUTO_MODEL_NAMES = frozenset({"", "auto", "plano/auto"})

# The model id of a provider entry that serves any id the client names (``openai/*``).
WILDCARD = "*"

DEFAULT_PORT = 12000
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
# Requests in flight to one provider endpoint (and decisions in flight to the routing
# service) before Envoy answers 503 gateway_at_capacity. Envoy's own default (1,024) cut long
# streams at 1,025; an Envoy stream costs tens of KB, so 4,096 fits a sidecar of any size.
DEFAULT_MAX_CONCURRENT_REQUESTS = 4096
MAX_CONCURRENT_REQUESTS_LIMIT = 1_000_000
DEFAULT_RETRY_AFTER_MAX_S = 2
RETRY_AFTER_MAX_LIMIT_S = 60

ROUTER_KINDS = ("embedded", "arch", "none")
DEVICES = ("cpu", "cuda")
DECODINGS = ("score", "greedy")
# Per router kind: (decision timeout, token budget). The encoder decides in milliseconds on a
# CPU; a 1.5B decoder needs a GPU, and the reference gateway's prompt budget is 2048 tokens.
ROUTER_DEFAULTS = {"embedded": (0.3, 256), "arch": (3.0, 2048), "none": (0.3, 256)}


class ConfigError(Exception):
    """The config cannot be used; ``errors`` holds one located message per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class Endpoint:
    """Where a provider's API is: parsed from ``base_url``."""

    scheme: str
    host: str
    port: int
    path_prefix: str  # "" or "/v1", "/openai/v1"...; never ends with "/"

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{self.path_prefix}"


@dataclass(frozen=True)
class RoutingPreference:
    name: str
    description: str


@dataclass(frozen=True)
class Route:
    """A routing preference together with the model that serves it."""

    name: str
    description: str
    provider: Provider
    model_id: str = ""  # "": the provider's own; set when ``provider`` is a wildcard

    @property
    def model(self) -> str:
        return served(self.provider, self.model_id)


@dataclass(frozen=True)
class RouterSettings:
    """The ``routing`` section: which router reads conversations, and how."""

    kind: str  # one of ROUTER_KINDS
    model_dir: Path | None  # None: the embedded encoder built into build/models
    device: str  # "cpu" or "cuda" (needs onnxruntime-gpu)
    threads: int  # onnxruntime intra-op threads per model run; 0 lets the router choose
    timeout_s: float  # a decision slower than this falls back to the default provider
    max_tokens: int  # the token budget for what the router reads
    min_confidence: float  # a chosen route less probable than this falls back to the default
    decoding: str  # arch only: "score" every route's answer, or "greedy" generation
    # Model names (glob patterns) that go through the preference router although the client
    # named them, the named model being the fallback: coding agents always name one.
    route_named_models: tuple[str, ...] = ()


DEFAULT_ROUTER = RouterSettings(
    kind="embedded",
    model_dir=None,
    device="cpu",
    threads=0,
    timeout_s=ROUTER_DEFAULTS["embedded"][0],
    max_tokens=ROUTER_DEFAULTS["embedded"][1],
    min_confidence=0.0,
    decoding="score",
)


@dataclass(frozen=True)
class Provider:
    """One provider entry: a model served by a provider, or (model id ``*``) any model id of
    that provider."""

    provider: str  # "openai"
    model_id: str  # "gpt-5.2": what the upstream receives in the body; "*": any id
    endpoint: Endpoint
    cluster: str  # the Envoy cluster that reaches ``endpoint``
    interface: str  # the API it speaks: "openai" (chat completions) or "anthropic" (Messages)
    auth_header: str
    auth_prefix: str
    access_key: str | None  # None: no key configured, or its variable is unset
    access_key_vars: tuple[str, ...]  # the environment variables the key is made of
    missing_vars: tuple[str, ...]  # of those, the ones that were not set
    default: bool
    routing_preferences: tuple[RoutingPreference, ...]
    # Azure OpenAI's deployment API: the model id is the deployment, in the path
    # (/openai/deployments/<id>/chat/completions), with this ``api-version`` query.
    api_version: str | None = None
    # Headers every request to it carries (Plano's ``headers``), and the Host it is sent
    # with when not its own (``http_host``).
    headers: tuple[tuple[str, str], ...] = ()
    http_host: str | None = None
    # The client's own credential goes to the provider instead of ``access_key`` (a gateway
    # such as LiteLLM upstream checks its own virtual keys).
    passthrough_auth: bool = False
    # Model-id prefixes of this provider's models: to whom a bare id belongs when several
    # wildcards could take it ("claude-" is Anthropic's).
    families: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.provider}/{self.model_id}"

    @property
    def wildcard(self) -> bool:
        return self.model_id == WILDCARD

    @property
    def keyed(self) -> bool:
        """The gateway sends a key of its own (or would, were its variable set)."""
        return not self.passthrough_auth and (
            self.access_key is not None or bool(self.missing_vars)
        )


def served(provider: Provider, model_id: str) -> str:
    """The model a name stands for, as clients see it: ``model_id`` of ``provider`` (a
    wildcard's pick), or the provider's own when ``model_id`` is empty."""
    return f"{provider.provider}/{model_id or provider.model_id}"


@dataclass(frozen=True)
class Alias:
    name: str
    target: Provider
    model_id: str = ""  # "": the target's own; set when ``target`` is a wildcard

    @property
    def model(self) -> str:
        return served(self.target, self.model_id)


@dataclass(frozen=True)
class Target:
    """A model a request can be sent to: a provider entry, and the model id it receives
    (the entry's own, or a wildcard's pick)."""

    provider: Provider
    model_id: str

    @property
    def name(self) -> str:
        return f"{self.provider.provider}/{self.model_id}"


@dataclass(frozen=True)
class Chain:
    """An ordered fail-over list: the first member serves, each next one when the one
    before fails (connect failure, reset, 429, 5xx, no first byte in time)."""

    id: str  # "chain_1"...: the decision names it, the Envoy routes and clusters match it
    members: tuple[Target, ...]  # at least two; no model twice

    @property
    def primary(self) -> Target:
        return self.members[0]


@dataclass(frozen=True)
class Tracing:
    """Where spans go (an OTLP/gRPC collector, plaintext) and what share of requests is
    traced: Plano's ``tracing`` section, its ``opentracing_grpc_endpoint`` and
    ``random_sampling`` (a percentage)."""

    host: str
    port: int
    sampling_percent: float = 100.0

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass(frozen=True)
class Listener:
    address: str
    port: int
    message_format: str
    timeout_s: float
    max_body_bytes: int
    max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS
    # A provider's answer with a retry-after of at most this many seconds is retried on that
    # provider once it has passed (a model without fallbacks); 0: never.
    retry_after_max_s: int = DEFAULT_RETRY_AFTER_MAX_S
    name: str = "egress_traffic"


@dataclass(frozen=True)
class Config:
    source: str
    listener: Listener
    providers: tuple[Provider, ...]
    aliases: Mapping[str, Alias]
    default: Provider | None
    router: RouterSettings = DEFAULT_ROUTER
    # Every routing preference in config order; empty when the router is off (router: none).
    routes: tuple[Route, ...] = ()
    warnings: tuple[str, ...] = ()
    # Which of Plano's config formats the file is in, for ``validate`` to say.
    format: str = "legacy (llm_providers, listeners.egress_traffic)"
    # Lookup tables derived once from ``providers`` for the per-request resolution.
    by_name: Mapping[str, Provider] = field(default_factory=dict)
    by_model_id: Mapping[str, tuple[Provider, ...]] = field(default_factory=dict)
    # Provider name ("openai") -> its wildcard entry (openai/*).
    wildcards: Mapping[str, Provider] = field(default_factory=dict)
    # Every fail-over chain, by id; and the chain each model (Target name), alias and route
    # fails over along, for the decision to name.
    chains: Mapping[str, Chain] = field(default_factory=dict)
    chain_of_model: Mapping[str, Chain] = field(default_factory=dict)
    chain_of_alias: Mapping[str, Chain] = field(default_factory=dict)
    chain_of_route: Mapping[str, Chain] = field(default_factory=dict)
    # The files keys are read from ($VAR with VAR_FILE set): watched for a reload.
    key_files: tuple[str, ...] = ()
    # Spans to an OTLP collector; None (no tracing section, or random_sampling 0): no tracing.
    tracing: Tracing | None = None

    @property
    def clusters(self) -> dict[str, Endpoint]:
        return {p.cluster: p.endpoint for p in self.providers}

    def model_names(self) -> list[str]:
        """Every name a client may put in ``model``, in config order (a wildcard as
        ``openai/*``: any ``openai/<id>``)."""
        return [p.name for p in self.providers] + list(self.aliases)

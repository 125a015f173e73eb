"""Plano's two config formats and the keys the current one added: what loads, what warns,
what is refused (located by file, line and key path), and what ``validate`` prints."""

from __future__ import annotations

import pytest

from plano_extproc.config import Config, ConfigError, formats, parse_config
from plano_extproc.summary import summarize
from plano_extproc.upstreams import AZURE_API_VERSION

pytestmark = pytest.mark.unit

ENV = {"OPENAI_API_KEY": "sk-openai", "ANTHROPIC_API_KEY": "sk-anthropic", "AZURE_KEY": "az"}
ONE = "model_providers:\n  - model: openai/gpt-5\n"
AZURE_URL = "https://res.openai.azure.com"


def load(text: str, env: dict[str, str] | None = None) -> Config:
    return parse_config(text, "plano.yaml", ENV if env is None else env)


def errors_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "plano.yaml", ENV if env is None else env)
    return info.value.errors


def provider_with(*lines: str, model: str = "openai/gpt-5") -> str:
    """A one-provider config in the current format, the provider given ``lines`` (indented)."""
    return f"model_providers:\n  - model: {model}\n" + "".join(f"    {line}\n" for line in lines)


# --- the two formats -------------------------------------------------------------------

CURRENT = """\
version: v0.3.0
listeners:
  - type: model
    name: model_listener
    address: 127.0.0.1
    port: 12001
    timeout: 45s
    max_body_size: 1MiB
model_providers:
  - model: openai/gpt-5
    access_key: $OPENAI_API_KEY
    default: true
  - model: anthropic/claude-sonnet-4-5
    access_key: $ANTHROPIC_API_KEY
model_aliases:
  fast:
    target: gpt-5
"""

LEGACY = """\
version: v0.1
listeners:
  egress_traffic:
    address: 127.0.0.1
    port: 12001
    timeout: 45s
    max_body_size: 1MiB
llm_providers:
  - model: openai/gpt-5
    access_key: $OPENAI_API_KEY
    default: true
  - model: anthropic/claude-sonnet-4-5
    access_key: $ANTHROPIC_API_KEY
model_aliases:
  fast:
    target: gpt-5
"""


def test_current_format_loads_the_model_listener_of_the_list() -> None:
    config = load(CURRENT)
    assert config.format == "Plano v0.3+ (model_providers, listeners as a list, version v0.3.0)"
    lis = config.listener
    assert (lis.address, lis.port, lis.timeout_s, lis.max_body_bytes) == (
        "127.0.0.1",
        12001,
        45.0,
        2**20,
    )
    assert [p.name for p in config.providers] == ["openai/gpt-5", "anthropic/claude-sonnet-4-5"]
    assert config.default is not None and config.default.name == "openai/gpt-5"
    assert config.warnings == ()


def test_legacy_format_reads_the_same_file_the_same_way() -> None:
    current, legacy = load(CURRENT), load(LEGACY)
    assert legacy.format == "legacy Plano (llm_providers, listeners.egress_traffic, version v0.1)"
    assert legacy.listener == current.listener
    assert legacy.providers == current.providers
    assert legacy.aliases == current.aliases
    assert legacy.warnings == ()


@pytest.mark.parametrize(
    ("text", "described"),
    [
        (ONE, "Plano v0.3+ (model_providers, default listener)"),
        (
            ONE.replace("model_providers", "llm_providers"),
            "legacy Plano (llm_providers, default listener)",
        ),
        (
            "listeners:\n  egress_traffic:\n    port: 1234\n" + ONE,
            "Plano v0.3+ (model_providers, listeners.egress_traffic)",
        ),
        (
            "version: 0.1-beta\nlisteners:\n  - type: model\n"
            + ONE.replace("model_providers", "llm_providers"),
            "legacy Plano (llm_providers, listeners as a list, version 0.1-beta)",
        ),
    ],
)
def test_the_format_says_which_keys_were_read(text: str, described: str) -> None:
    assert load(text).format == described


@pytest.mark.parametrize("first", ["model_providers", "llm_providers"])
def test_both_provider_keys_are_refused_at_the_second(first: str) -> None:
    second = "llm_providers" if first == "model_providers" else "model_providers"
    text = f"{first}:\n  - model: openai/a\n{second}:\n  - model: openai/b\n"
    assert errors_of(text) == [
        f"plano.yaml:3: {second}: model_providers (Plano's current format) and llm_providers "
        "(its legacy format) are the same list under two names: give one"
    ]


def test_both_provider_keys_far_apart_are_located_at_the_later_line() -> None:
    text = (
        "llm_providers:\n  - model: openai/a\n"
        "model_aliases:\n  fast:\n    target: a\n"
        "model_providers:\n  - model: openai/a\n"
    )
    (error,) = errors_of(text)
    assert error.startswith("plano.yaml:6: model_providers: ")


# --- Plano's keys this gateway does not implement ---------------------------------------


def test_unimplemented_keys_are_named_in_one_warning_with_their_lines() -> None:
    text = """\
tracing:
  random_sampling: 100
listeners:
  - type: model
    name: model_listener
    max_retries: 3
    router: plano_orchestrator_v1
model_providers:
  - model: openai/gpt-5
    name: main
    default: true
routing:
  session_ttl_seconds: 60
  llm_provider: openai
routing_preferences:
  - name: code
    description: writing code
    models: [gpt-5]
    selection_policy: {prefer: fastest}
prompt_targets: []
"""
    config = load(text)
    assert config.warnings == (
        "plano.yaml: Plano keys this gateway does not implement yet are ignored: "
        "tracing (line 1), prompt_targets (line 20), listeners[0].max_retries (line 6), "
        "listeners[0].router (line 7), model_providers[0].name (line 10), "
        "routing.session_ttl_seconds (line 13), routing.llm_provider (line 14), "
        "routing_preferences[0].selection_policy (line 19)",
    )
    # Ignored, not half-applied: the route is served by its model as if the keys were absent.
    assert [(r.name, r.model) for r in config.routes] == [("code", "openai/gpt-5")]


@pytest.mark.parametrize("key", formats.UNIMPLEMENTED_TOP)
def test_each_unimplemented_top_level_key_is_a_warning(key: str) -> None:
    config = load(ONE + f"{key}: {{}}\n")
    assert config.warnings == (
        f"plano.yaml: Plano keys this gateway does not implement yet are ignored: {key} (line 3)",
    )


def test_legacy_ingress_traffic_is_a_warning() -> None:
    text = (
        "listeners:\n  ingress_traffic:\n    port: 10000\n  egress_traffic:\n    port: 12000\n"
        + ONE.replace("model_providers", "llm_providers")
    )
    config = load(text)
    assert config.warnings == (
        "plano.yaml: Plano keys this gateway does not implement yet are ignored: "
        "listeners.ingress_traffic (line 2)",
    )
    assert config.listener.port == 12000


def test_keys_plano_lacks_too_stay_errors() -> None:
    text = (
        "listeners:\n  - type: model\n    prot: 1\n"
        + ONE
        + "    nmae: x\n"
        + "routing:\n  session_tll: 5\n"
        + "tracin: {}\n"
    )
    assert errors_of(text) == [
        "plano.yaml:9: tracin: unknown key; allowed here: version, listeners, "
        "model_providers, llm_providers, model_aliases, routing, routing_preferences, tracing",
        "plano.yaml:3: listeners[0].prot: unknown key; allowed here: name, type, address, "
        "port, message_format, timeout, max_body_size, max_concurrent_requests, "
        "retry_after_max",
        "plano.yaml:6: model_providers[0].nmae: unknown key; allowed here: model, access_key, "
        "default, base_url, provider_interface, routing_preferences, headers, http_host, "
        "passthrough_auth, api_version, fallbacks",
        "plano.yaml:8: routing.session_tll: unknown key; allowed here: router, model_dir, "
        "device, threads, timeout, max_tokens, min_confidence, decoding, route_named_models, "
        "route_on_user_only",
    ]


# A listener of type prompt or agent is named in the warning with its own line (it once
# fell back to line 1: its label is no key path).
def test_a_prompt_or_agent_listener_is_named_with_its_own_line() -> None:
    text = (
        "listeners:\n"
        "  - type: model\n"
        "    port: 12000\n"
        "  - type: prompt\n"
        "    name: prompts\n"
        "  - type: agent\n"
        "    name: agents\n" + ONE
    )
    config = load(text)
    assert config.listener.port == 12000
    assert config.warnings == (
        "plano.yaml: Plano keys this gateway does not implement yet are ignored: "
        "listeners[1] (type: prompt) (line 4), listeners[2] (type: agent) (line 6)",
    )


# --- listeners as Plano's list ------------------------------------------------------------

NO_MODEL_LISTENER = (
    "plano.yaml:1: listeners: has no listener of type: model, the LLM gateway this is: add "
    "one, e.g. {type: model, name: model_listener, port: 12000}"
)


@pytest.mark.parametrize(
    "listeners",
    [
        "listeners: []\n",
        "listeners:\n  - type: prompt\n    name: p\n",
        "listeners:\n  - type: agent\n  - type: prompt\n",
    ],
)
def test_a_list_without_a_model_listener_is_refused(listeners: str) -> None:
    assert errors_of(listeners + ONE) == [NO_MODEL_LISTENER]


def test_two_model_listeners_are_refused_at_the_second() -> None:
    text = "listeners:\n  - type: model\n    port: 12000\n  - type: model\n    port: 12001\n" + ONE
    assert errors_of(text) == [
        "plano.yaml:4: listeners[1]: a second listener of type: model (the first is "
        "listeners[0]): this gateway serves one"
    ]


def test_a_bad_listener_type_is_refused() -> None:
    text = "listeners:\n  - type: egress\n  - type: model\n" + ONE
    assert errors_of(text) == [
        "plano.yaml:2: listeners[0].type: must be one of model, prompt, agent, got 'egress'"
    ]


def test_a_listener_without_a_type_is_refused_and_is_not_the_model_one() -> None:
    text = "listeners:\n  - name: l\n    port: 12000\n" + ONE
    assert errors_of(text) == [
        "plano.yaml:2: listeners[0].type: must be one of model, prompt, agent, got nothing",
        NO_MODEL_LISTENER,
    ]


def test_the_model_listeners_fields_are_checked_at_its_place_in_the_list() -> None:
    text = (
        "listeners:\n  - type: prompt\n  - type: model\n    port: 70000\n    timeout: soon\n" + ONE
    )
    assert errors_of(text) == [
        "plano.yaml:4: listeners[1].port: must be a port number 1-65535, got 70000",
        "plano.yaml:5: listeners[1].timeout: must be a duration such as 30s, 500ms, 2m or 1h, "
        "got 'soon'",
    ]


# --- version ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", formats.VERSIONS)
def test_plano_versions_are_accepted(version: str) -> None:
    config = load(f"version: '{version}'\n" + ONE)
    assert config.format.endswith(f", version {version})")
    assert config.warnings == ()


@pytest.mark.parametrize(("raw", "shown"), [("v9", "'v9'"), ("'0.3.0'", "'0.3.0'"), ("0.2", "0.2")])
def test_other_versions_are_refused(raw: str, shown: str) -> None:
    assert errors_of(f"version: {raw}\n" + ONE) == [
        "plano.yaml:1: version: must be one of v0.1, v0.1.0, 0.1-beta, 0.2.0, v0.3.0, v0.4.0, "
        f"got {shown}"
    ]


# --- provider_interface: ours and Plano's names -------------------------------------------


@pytest.mark.parametrize(
    ("name", "interface", "auth_header"),
    [
        ("openai", "openai", "authorization"),
        ("anthropic", "anthropic", "x-api-key"),
        ("claude", "anthropic", "x-api-key"),
        *[
            (n, "openai", "authorization")
            for n, api in formats.PLANO_INTERFACES.items()
            if api == "openai"
        ],
    ],
)
def test_plano_interface_names_mean_our_apis(name: str, interface: str, auth_header: str) -> None:
    config = load(
        provider_with(
            "base_url: http://127.0.0.1:8000/v1", f"provider_interface: {name}", model="acme/m"
        )
    )
    (p,) = config.providers
    assert (p.interface, p.auth_header) == (interface, auth_header)


def test_plano_interface_names_cover_its_openai_compatible_ones() -> None:
    assert formats.PLANO_INTERFACES["claude"] == "anthropic"
    assert {n for n, api in formats.PLANO_INTERFACES.items() if api == "openai"} >= {
        "groq",
        "mistral",
        "deepseek",
        "gemini",
        "openrouter",
    }


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("chatgpt", "ChatGPT's subscription backend (the Responses API through a ChatGPT login)"),
        ("plano", "Plano's own hosted models"),
    ],
)
def test_plano_interfaces_this_gateway_cannot_speak_are_refused_with_why(
    name: str, why: str
) -> None:
    text = provider_with("base_url: http://h/v1", f"provider_interface: {name}", model="acme/m")
    assert errors_of(text) == [
        f"plano.yaml:4: model_providers[0].provider_interface: {name} ({why}) is not an API "
        "this gateway speaks; it speaks openai, anthropic (and Plano's names for them: claude, "
        "deepseek, digitalocean, gemini, groq, mistral, moonshotai, openrouter, vercel, xiaomi)"
    ]


def test_an_unknown_interface_lists_every_name() -> None:
    assert errors_of(provider_with("provider_interface: cohere")) == [
        "plano.yaml:3: model_providers[0].provider_interface: must be one of openai, anthropic, "
        "claude, deepseek, digitalocean, gemini, groq, mistral, moonshotai, openrouter, vercel, "
        "xiaomi, got 'cohere'"
    ]


# --- routing.route_on_user_only ---------------------------------------------------------


def test_route_on_user_only_true_is_what_the_router_does() -> None:
    assert load(ONE + "routing:\n  route_on_user_only: true\n").warnings == ()


def test_route_on_user_only_false_is_a_warning() -> None:
    config = load(ONE + "routing:\n  route_on_user_only: false\n")
    assert config.warnings == (
        "plano.yaml:4: routing.route_on_user_only: false is not available: this gateway's "
        "router always reads only what the person typed, so the requests of one agent turn "
        "get one route",
    )


def test_route_on_user_only_must_be_a_boolean() -> None:
    assert errors_of(ONE + "routing:\n  route_on_user_only: sometimes\n") == [
        "plano.yaml:4: routing.route_on_user_only: must be true or false, got 'sometimes'"
    ]


# --- providers this gateway cannot reach --------------------------------------------------


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("amazon_bedrock", "Bedrock's Converse API is not one this gateway speaks"),
        ("amazon", "Bedrock's Converse API is not one this gateway speaks"),
        ("chatgpt", "ChatGPT's subscription backend is not an API this gateway speaks"),
        ("plano", "Plano's own hosted models are reached through Plano"),
    ],
)
def test_unsupported_providers_without_base_url_are_refused(name: str, why: str) -> None:
    assert errors_of(f"model_providers:\n  - model: {name}/m\n") == [
        f"plano.yaml:2: model_providers[0].model: {name} is not supported: {why} "
        "(an OpenAI-compatible endpoint of it can be given as base_url)"
    ]


@pytest.mark.parametrize("name", ["amazon_bedrock", "chatgpt", "plano"])
def test_unsupported_provider_names_with_a_base_url_are_custom_providers(name: str) -> None:
    (p,) = load(provider_with("base_url: https://proxy.example/v1", model=f"{name}/m")).providers
    assert (p.name, p.interface, p.endpoint.url) == (
        f"{name}/m",
        "openai",
        "https://proxy.example:443/v1",
    )


# --- Azure OpenAI -------------------------------------------------------------------------


def test_azure_needs_its_resource_endpoint() -> None:
    assert errors_of("model_providers:\n  - model: azure_openai/my-dep\n") == [
        "plano.yaml:2: model_providers[0].base_url: is required for azure_openai: your "
        "resource's endpoint, e.g. https://<resource>.openai.azure.com"
    ]


def test_azure_key_goes_in_api_key_with_the_default_api_version() -> None:
    text = provider_with(
        f"base_url: {AZURE_URL}", "access_key: $AZURE_KEY", model="azure_openai/my-dep"
    )
    (p,) = load(text).providers
    assert (p.model_id, p.interface, p.auth_header, p.auth_prefix, p.access_key) == (
        "my-dep",
        "openai",
        "api-key",
        "",
        "az",
    )
    assert p.api_version == AZURE_API_VERSION == "2024-10-21"
    assert (p.endpoint.host, p.endpoint.path_prefix) == ("res.openai.azure.com", "")


def test_azure_api_version_may_be_chosen() -> None:
    text = provider_with(
        f"base_url: {AZURE_URL}", "api_version: 2025-01-01-preview", model="azure_openai/d"
    )
    assert load(text).providers[0].api_version == "2025-01-01-preview"


@pytest.mark.parametrize(("raw", "shown"), [("'2024 10 21'", "'2024 10 21'"), ("5", "5")])
def test_a_bad_azure_api_version_is_refused(raw: str, shown: str) -> None:
    text = provider_with(f"base_url: {AZURE_URL}", f"api_version: {raw}", model="azure_openai/d")
    assert errors_of(text) == [
        "plano.yaml:4: model_providers[0].api_version: must be an Azure OpenAI API version "
        f"such as 2024-10-21, got {shown}"
    ]


@pytest.mark.parametrize("model", ["openai/gpt-5", "acme/m"])
def test_api_version_is_for_azure_only(model: str) -> None:
    text = provider_with("base_url: https://x.example/v1", "api_version: 2024-10-21", model=model)
    assert errors_of(text) == [
        "plano.yaml:4: model_providers[0].api_version: is for Azure OpenAI (azure_openai/...) "
        "only: other providers take no api-version"
    ]


@pytest.mark.parametrize("deployment", ["my dep", "a/b", "d" * 65, "dép", ".", "..", "-x"])
def test_an_azure_model_id_must_be_a_deployment_name(deployment: str) -> None:
    text = provider_with(f"base_url: {AZURE_URL}", model=f"'azure_openai/{deployment}'")
    assert errors_of(text) == [
        f"plano.yaml:2: model_providers[0].model: '{deployment}': an Azure OpenAI "
        "deployment name is 1-64 letters, digits, '-', '_' or '.', starting with a letter or "
        "digit"
    ]


def test_the_longest_azure_deployment_name_and_a_wildcard_load() -> None:
    longest = "d" * 64
    text = (
        f"model_providers:\n  - model: azure_openai/{longest}\n    base_url: {AZURE_URL}\n"
        f"  - model: azure_openai/*\n    base_url: {AZURE_URL}\n"
    )
    named, wildcard = load(text).providers
    assert named.model_id == longest
    assert wildcard.wildcard and wildcard.api_version == AZURE_API_VERSION


# --- headers, http_host, passthrough_auth -------------------------------------------------


def test_headers_are_kept_with_lowercase_names() -> None:
    (p,) = load(provider_with("headers:", "  X-Team: search", "  x-org: 'acme corp'")).providers
    assert p.headers == (("x-team", "search"), ("x-org", "acme corp"))


@pytest.mark.parametrize(
    ("line", "path", "problem"),
    [
        ("'bad name': v", "bad name", "is not a valid header name"),
        ("'x:y': v", "x:y", "is not a valid header name"),
        *[
            (f"{name}: v", name, "is set by the gateway itself (the key goes in access_key, "
             "the Host in http_host)")
            for name in ("host", "Host", "content-length", "transfer-encoding", "Authorization",
                         "x-plano-model", "X-Plano-Route")
        ],
        ("x-a: $SECRET", "x-a", "takes a literal value: it is written into Envoy's config, "
         "so a secret belongs in access_key"),
        ("x-a: 'Bearer ${SECRET}'", "x-a", "takes a literal value: it is written into Envoy's "
         "config, so a secret belongs in access_key"),
        ("x-a: 5", "x-a", "must be a one-line text value, got 5"),
        ("x-a: \"one\\ntwo\"", "x-a", "must be a one-line text value, got 'one\\ntwo'"),
        ("x-a: \"one\\rtwo\"", "x-a", "must be a one-line text value, got 'one\\rtwo'"),
        ("x-a: \"nul\\0\"", "x-a", "must be a one-line text value, got 'nul\\x00'"),
    ],
)  # fmt: skip
def test_bad_headers_are_refused(line: str, path: str, problem: str) -> None:
    assert errors_of(provider_with("headers:", f"  {line}")) == [
        f"plano.yaml:4: model_providers[0].headers.{path}: {problem}"
    ]


def test_the_providers_own_credential_header_is_reserved() -> None:
    text = provider_with("headers:", "  X-Api-Key: k", model="anthropic/claude-sonnet-4-5")
    assert errors_of(text) == [
        "plano.yaml:4: model_providers[0].headers.X-Api-Key: is set by the gateway itself "
        "(the key goes in access_key, the Host in http_host)"
    ]
    azure = provider_with(
        f"base_url: {AZURE_URL}", "headers:", "  api-key: k", model="azure_openai/d"
    )
    (error,) = errors_of(azure)
    assert error.startswith("plano.yaml:5: model_providers[0].headers.api-key: is set by the")


def test_headers_must_be_a_mapping() -> None:
    assert errors_of(provider_with("headers: [x-a]")) == [
        "plano.yaml:3: model_providers[0].headers: must be a mapping of header name to value"
    ]


@pytest.mark.parametrize("host", ["llm.internal", "llm.internal:8443", "10.0.0.7"])
def test_http_host_is_kept(host: str) -> None:
    assert load(provider_with(f"http_host: '{host}'")).providers[0].http_host == host


@pytest.mark.parametrize(
    ("raw", "shown"),
    [("'llm internal'", "'llm internal'"), ("'https://llm'", "'https://llm'"),
     ("'h:123456'", "'h:123456'"), ("8080", "8080"), ("'h/p'", "'h/p'")],
)  # fmt: skip
def test_bad_http_host_is_refused(raw: str, shown: str) -> None:
    assert errors_of(provider_with(f"http_host: {raw}")) == [
        "plano.yaml:3: model_providers[0].http_host: must be a host name, optionally with :port, "
        f"got {shown}"
    ]


def test_passthrough_auth_sends_no_key_of_the_gateways() -> None:
    (p,) = load(provider_with("passthrough_auth: true")).providers
    assert p.passthrough_auth and not p.keyed
    assert (p.access_key, p.access_key_vars, p.missing_vars) == (None, (), ())


def test_passthrough_auth_with_an_access_key_warns_it_is_unused() -> None:
    config = load(provider_with("passthrough_auth: true", "access_key: $OPENAI_API_KEY"))
    (p,) = config.providers
    assert p.access_key is None and not p.keyed
    assert config.warnings == (
        "plano.yaml:4: model_providers[0].access_key: is not used: passthrough_auth: true "
        "sends the client's own credential",
    )


# With passthrough_auth the key is never used: an unset variable in its access_key is no
# reason to warn that requests "will fail until it is" set (they once were told so).
def test_passthrough_auth_with_an_unset_key_variable_does_not_warn_requests_fail() -> None:
    config = load(provider_with("passthrough_auth: true", "access_key: $UNSET_KEY"), env={})
    assert config.providers[0].missing_vars == ()
    assert config.warnings == (
        "plano.yaml:4: model_providers[0].access_key: is not used: passthrough_auth: true "
        "sends the client's own credential",
    )


def test_passthrough_auth_must_be_a_boolean() -> None:
    assert errors_of(provider_with("passthrough_auth: maybe")) == [
        "plano.yaml:3: model_providers[0].passthrough_auth: must be true or false, got 'maybe'"
    ]


# --- top-level routing_preferences --------------------------------------------------------

ROUTED = """\
model_providers:
  - model: openai/gpt-5
    default: true
    routing_preferences:
      - name: reasoning
        description: hard problems
  - model: anthropic/*
"""


def test_top_level_routes_name_their_model_placed_like_a_clients() -> None:
    config = load(
        ROUTED
        + "routing_preferences:\n"
        + "  - name: code\n    description: writing code\n    models: [claude-opus-4-1]\n"
        + "  - name: chat\n    description: small talk\n    models: [openai/gpt-5]\n"
    )
    assert [(r.name, r.model, r.provider.name) for r in config.routes] == [
        ("reasoning", "openai/gpt-5", "openai/gpt-5"),
        ("code", "anthropic/claude-opus-4-1", "anthropic/*"),
        ("chat", "openai/gpt-5", "openai/gpt-5"),
    ]
    assert config.routes[1].model_id == "claude-opus-4-1"
    assert config.warnings == ()


def test_more_than_one_model_the_first_serves_and_the_others_are_its_fallbacks() -> None:
    config = load(
        ROUTED
        + "routing_preferences:\n  - name: code\n    description: writing code\n"
        + "    models:\n      - anthropic/claude-opus-4-1\n      - gpt-5\n"
    )
    assert config.routes[-1].model == "anthropic/claude-opus-4-1"
    chain = config.chain_of_route["code"]
    assert [m.name for m in chain.members] == ["anthropic/claude-opus-4-1", "openai/gpt-5"]
    assert config.warnings == ()


def test_selection_policy_is_a_plano_key_not_implemented() -> None:
    config = load(
        ROUTED
        + "routing_preferences:\n  - name: code\n    description: writing code\n"
        + "    models: [gpt-5]\n    selection_policy:\n      prefer: cheapest\n"
    )
    assert config.warnings == (
        "plano.yaml: Plano keys this gateway does not implement yet are ignored: "
        "routing_preferences[0].selection_policy (line 12)",
    )


def test_a_top_level_route_named_as_an_inline_one_is_refused() -> None:
    text = (
        ROUTED
        + "routing_preferences:\n  - name: reasoning\n    description: again\n"
        + "    models: [claude-opus-4-1]\n"
    )
    assert errors_of(text) == [
        "plano.yaml:9: routing_preferences[0].name: duplicate route name 'reasoning' (also on "
        "openai/gpt-5): route names must be unique"
    ]


def test_two_top_level_routes_of_one_name_are_refused_at_the_second() -> None:
    text = (
        ROUTED
        + "routing_preferences:\n"
        + "  - name: code\n    description: a\n    models: [claude-opus-4-1]\n"
        + "  - name: code\n    description: b\n    models: [gpt-5]\n"
    )
    assert errors_of(text) == [
        "plano.yaml:12: routing_preferences[1].name: duplicate route name 'code' (also on "
        "anthropic/claude-opus-4-1): route names must be unique"
    ]


@pytest.mark.parametrize(
    ("models", "error"),
    [
        ("", "plano.yaml:9: routing_preferences[0].models: must be a non-empty list of "
         "configured models: the first serves the route"),
        ("    models: []\n", "plano.yaml:11: routing_preferences[0].models: must be a non-empty "
         "list of configured models: the first serves the route"),
        ("    models: ['claude opus']\n", "plano.yaml:11: routing_preferences[0].models[0]: "
         "'claude opus': a model id is 1-256 printable ASCII characters without spaces"),
        ("    models: ['anthropic/*']\n", "plano.yaml:11: routing_preferences[0].models[0]: "
         "'anthropic/*': 'anthropic/*' stands for any model id: name one, e.g. anthropic/<id>"),
    ],
)  # fmt: skip
def test_a_top_level_routes_models_must_be_served(models: str, error: str) -> None:
    text = ROUTED + "routing_preferences:\n  - name: code\n    description: writing code\n"
    assert errors_of(text + models) == [error]


def test_a_top_level_routes_model_must_be_configured() -> None:
    text = (
        "model_providers:\n  - model: openai/gpt-5\n    default: true\n"
        "routing_preferences:\n  - name: code\n    description: d\n    models: [gpt-4o]\n"
    )
    assert errors_of(text) == [
        "plano.yaml:7: routing_preferences[0].models[0]: 'gpt-4o' matches no configured model; "
        "one of openai/gpt-5"
    ]


def test_top_level_routes_other_is_reserved_and_a_list_is_required() -> None:
    other = (
        ROUTED + "routing_preferences:\n  - name: other\n    description: d\n    models: [gpt-5]\n"
    )
    assert errors_of(other) == [
        "plano.yaml:9: routing_preferences[0].name: 'other' is reserved: it means no route fits"
    ]
    assert errors_of(ROUTED + "routing_preferences: {code: gpt-5}\n") == [
        "plano.yaml:8: routing_preferences: must be a list of {name, description, models}"
    ]


def test_top_level_routes_without_a_default_warn_and_router_none_drops_them() -> None:
    text = (
        "model_providers:\n  - model: openai/gpt-5\n"
        "routing_preferences:\n  - name: code\n    description: d\n    models: [gpt-5]\n"
    )
    config = load(text)
    assert [r.name for r in config.routes] == ["code"]
    assert config.warnings == (
        "plano.yaml:1: model_providers: no provider has default: true: requests that fit no "
        'route ("other") will be refused with a 400',
    )
    off = load(text + "routing:\n  router: none\n")
    assert off.routes == () and off.warnings == ()


# --- what validate prints -----------------------------------------------------------------

SUMMARIZED = """\
version: v0.4.0
listeners:
  - type: model
    name: model_listener
    port: 12001
    timeout: 45s
model_providers:
  - model: openai/gpt-5.2
    access_key: $OPENAI_API_KEY
    default: true
  - model: openai/*
    access_key: $OPENAI_API_KEY
  - model: azure_openai/my-dep
    base_url: https://res.openai.azure.com
    access_key: $AZURE_UNSET
    api_version: 2025-01-01-preview
  - model: litellm/m
    base_url: http://127.0.0.1:4000/v1
    passthrough_auth: true
model_aliases:
  fast:
    target: openai/gpt-4.1
routing_preferences:
  - name: code
    description: writing code
    models: [gpt-5.2]
tracing:
  random_sampling: 100
"""


def test_summary_of_the_current_format() -> None:
    assert summarize(load(SUMMARIZED)).splitlines() == [
        "plano.yaml: OK",
        "format: Plano v0.3+ (model_providers, listeners as a list, version v0.4.0)",
        "listener: 0.0.0.0:12001  format openai  timeout 45s  max body 16 MiB",
        "providers (4):",
        "  openai/gpt-5.2  [default]  -> https://api.openai.com:443/v1 (openai API)  "
        "cluster provider_openai  key $OPENAI_API_KEY (set)",
        "  openai/*  [any model id]  -> https://api.openai.com:443/v1 (openai API)  "
        "cluster provider_openai  key $OPENAI_API_KEY (set)",
        "  azure_openai/my-dep  -> https://res.openai.azure.com:443 (openai API, Azure "
        "deployments, api-version 2025-01-01-preview)  cluster provider_azure_openai  "
        "key $AZURE_UNSET (NOT SET)",
        "  litellm/m  -> http://127.0.0.1:4000/v1 (openai API)  cluster provider_litellm  "
        "the client's own key (passthrough_auth)",
        "aliases (1):",
        "  fast -> openai/gpt-4.1",
        "routes (1):",
        "  code -> openai/gpt-5.2: writing code",
        "router: embedded (the encoders `make models` builds), device cpu, timeout 300ms, "
        "budget 256 tokens, min_confidence 0",
        "no model named -> the router; other or fallback -> openai/gpt-5.2",
        "warning: plano.yaml:15: model_providers[2].access_key: environment variable "
        "AZURE_UNSET is not set: requests routed to azure_openai/my-dep will fail until it is",
        "warning: plano.yaml: Plano keys this gateway does not implement yet are ignored: "
        "tracing (line 27)",
    ]


def test_summary_of_the_legacy_format() -> None:
    assert summarize(load(LEGACY)).splitlines() == [
        "plano.yaml: OK",
        "format: legacy Plano (llm_providers, listeners.egress_traffic, version v0.1)",
        "listener: 127.0.0.1:12001  format openai  timeout 45s  max body 1 MiB",
        "providers (2):",
        "  openai/gpt-5  [default]  -> https://api.openai.com:443/v1 (openai API)  "
        "cluster provider_openai  key $OPENAI_API_KEY (set)",
        "  anthropic/claude-sonnet-4-5  -> https://api.anthropic.com:443/v1 (anthropic API)  "
        "cluster provider_anthropic  key $ANTHROPIC_API_KEY (set)",
        "aliases (1):",
        "  fast -> openai/gpt-5",
        "routes (0):",
        "no model named -> openai/gpt-5",
    ]


def test_summary_format_line_without_listeners_or_version() -> None:
    lines = summarize(load(ONE.replace("model_providers", "llm_providers"))).splitlines()
    assert lines[1] == "format: legacy Plano (llm_providers, default listener)"
    assert lines[-1] == "no model named -> error (no default provider)"

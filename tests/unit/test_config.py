"""Config loading and validation: every error is located and says what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from plano_extproc.config import (
    ConfigError,
    load_config,
    parse_config,
    parse_duration,
    parse_size,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
ENV = {"OPENAI_API_KEY": "sk-openai", "ANTHROPIC_API_KEY": "sk-anthropic"}


def errors_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "plano.yaml", ENV if env is None else env)
    return info.value.errors


@pytest.mark.parametrize("name", ["model-based", "alias-based", "hybrid"])
def test_examples_load_unchanged(name: str) -> None:
    config = load_config(ROOT / "config" / "examples" / f"{name}.yaml", ENV)
    # The hybrid example (config/plano.yaml) is in Plano's current format, with wildcards.
    wildcards = ["openai/*", "anthropic/*"] if name == "hybrid" else []
    assert [p.name for p in config.providers] == [
        "openai/gpt-5.2",
        "openai/gpt-5",
        "anthropic/claude-sonnet-4-5",
        *wildcards,
    ]
    assert config.listener.port == 12000
    assert config.listener.timeout_s == 30.0
    assert config.warnings == ()


def test_plano_yaml_is_the_hybrid_example() -> None:
    plano = (ROOT / "config" / "plano.yaml").read_text()
    hybrid = (ROOT / "config" / "examples" / "hybrid.yaml").read_text()
    assert plano == hybrid


def test_hybrid_resolves_aliases_routes_and_default() -> None:
    config = load_config(ROOT / "config" / "plano.yaml", ENV)
    assert {a: v.target.name for a, v in config.aliases.items()} == {
        "fast-model": "openai/gpt-5.2",
        "reasoning-model": "openai/gpt-5",
        "creative-model": "anthropic/claude-sonnet-4-5",
    }
    assert config.default is not None and config.default.name == "openai/gpt-5.2"
    prefs = {r.name: p.name for p in config.providers for r in p.routing_preferences}
    assert prefs == {
        "complex_reasoning": "openai/gpt-5",
        "creative_tasks": "anthropic/claude-sonnet-4-5",
    }


def test_builtin_providers_and_clusters() -> None:
    config = parse_config(
        "llm_providers:\n"
        "  - model: openai/gpt-5\n"
        "  - model: openai/gpt-5-mini\n"
        "  - model: groq/llama-3.3-70b\n"
        "  - model: together/meta-llama/Llama-3-70b\n",
        "p.yaml",
        {},
    )
    openai, mini, groq, together = config.providers
    assert openai.endpoint.url == "https://api.openai.com:443/v1"
    assert openai.cluster == mini.cluster == "provider_openai"
    assert groq.endpoint.path_prefix == "/openai/v1"
    assert together.provider == "together" and together.model_id == "meta-llama/Llama-3-70b"
    assert config.listener.port == 12000 and config.listener.timeout_s == 30.0


def test_base_url_gives_custom_endpoint_and_distinct_cluster() -> None:
    config = parse_config(
        "llm_providers:\n"
        "  - model: openai/gpt-5\n"
        "  - model: openai/local\n"
        "    base_url: http://127.0.0.1:8000/v1/\n"
        "  - model: mycorp/llama\n"
        "    base_url: https://llm.corp.example:8443\n",
        "p.yaml",
        {},
    )
    remote, local, corp = config.providers
    assert (
        local.endpoint.scheme,
        local.endpoint.host,
        local.endpoint.port,
        local.endpoint.path_prefix,
    ) == ("http", "127.0.0.1", 8000, "/v1")
    assert local.cluster == "provider_openai_2" != remote.cluster
    assert corp.endpoint.tls and corp.endpoint.port == 8443 and corp.endpoint.path_prefix == ""
    assert corp.cluster == "provider_mycorp"


def test_env_expansion_both_forms_and_inline() -> None:
    config = parse_config(
        "llm_providers:\n"
        "  - model: openai/a\n    access_key: $K1\n"
        "  - model: openai/b\n    access_key: ${K2}\n"
        "  - model: openai/c\n    access_key: sk-inline\n",
        "p.yaml",
        {"K1": "one", "K2": "two"},
    )
    assert [p.access_key for p in config.providers] == ["one", "two", "sk-inline"]
    assert config.providers[0].access_key_vars == ("K1",)


def test_missing_key_variable_is_a_warning_not_an_error() -> None:
    config = parse_config(
        "llm_providers:\n  - model: openai/gpt-5\n    access_key: $NOPE_KEY\n", "p.yaml", {}
    )
    provider = config.providers[0]
    assert provider.access_key is None and provider.missing_vars == ("NOPE_KEY",)
    assert config.warnings == (
        "p.yaml:3: llm_providers[0].access_key: environment variable NOPE_KEY is not set: "
        "requests routed to openai/gpt-5 will fail until it is",
    )


def test_unknown_keys_are_located() -> None:
    errors = errors_of(
        "listeners:\n  egress_traffic:\n    prot: 1\n"
        "llm_providers:\n  - model: openai/gpt-5\n    acess_key: x\n"
        "extra: 1\n"
    )
    assert errors == [
        "plano.yaml:7: extra: unknown key; allowed here: version, listeners, model_providers, "
        "llm_providers, model_aliases, routing, routing_preferences, tracing",
        "plano.yaml:3: listeners.egress_traffic.prot: unknown key; allowed here: address, port, "
        "message_format, timeout, max_body_size, max_concurrent_requests, retry_after_max",
        "plano.yaml:6: llm_providers[0].acess_key: unknown key; allowed here: model, access_key, "
        "default, base_url, provider_interface, routing_preferences, headers, http_host, "
        "passthrough_auth, api_version, fallbacks",
    ]


def test_model_without_provider_prefix() -> None:
    assert errors_of("llm_providers:\n  - model: gpt-5\n") == [
        "plano.yaml:2: llm_providers[0].model: must be 'provider/model-id' "
        "(e.g. openai/gpt-5) or 'provider/*' (any model id of that provider), got 'gpt-5'"
    ]


def test_missing_model() -> None:
    assert errors_of("llm_providers:\n  - access_key: x\n") == [
        "plano.yaml:2: llm_providers[0].model: is required: 'provider/model-id', e.g. openai/gpt-5"
    ]


def test_unknown_provider_without_base_url() -> None:
    (error,) = errors_of("llm_providers:\n  - model: acme/m1\n")
    assert error.startswith(
        "plano.yaml:2: llm_providers[0].model: unknown provider 'acme': "
        "give it a base_url, or use one of openai, anthropic,"
    )


def test_two_defaults() -> None:
    assert errors_of(
        "llm_providers:\n  - model: openai/a\n    default: true\n"
        "  - model: openai/b\n    default: true\n"
    ) == [
        "plano.yaml:1: llm_providers: more than one provider has default: true "
        "(openai/a, openai/b); at most one may"
    ]


def test_default_must_be_boolean() -> None:
    assert errors_of("llm_providers:\n  - model: openai/a\n    default: yes please\n") == [
        "plano.yaml:3: llm_providers[0].default: must be true or false, got 'yes please'"
    ]


def test_duplicate_models() -> None:
    assert errors_of("llm_providers:\n  - model: openai/a\n  - model: openai/a\n") == [
        "plano.yaml:3: llm_providers[1].model: duplicate model 'openai/a': each "
        "provider/model may be listed once"
    ]


def test_duplicate_route_names() -> None:
    text = (
        "llm_providers:\n"
        "  - model: openai/a\n    routing_preferences:\n"
        "      - name: code\n        description: writing code\n"
        "  - model: openai/b\n    routing_preferences:\n"
        "      - name: code\n        description: reviewing code\n"
    )
    assert errors_of(text) == [
        "plano.yaml:8: llm_providers[1].routing_preferences[0].name: duplicate route name "
        "'code' (also on openai/a): route names must be unique"
    ]


def test_route_needs_name_and_description_and_other_is_reserved() -> None:
    text = (
        "llm_providers:\n  - model: openai/a\n    routing_preferences:\n"
        "      - name: other\n        description: anything\n"
        "      - name: code\n"
    )
    assert errors_of(text) == [
        "plano.yaml:4: llm_providers[0].routing_preferences[0].name: 'other' is reserved: "
        "it means no route fits",
        "plano.yaml:6: llm_providers[0].routing_preferences[1].description: must be a "
        "description of the requests this route serves, got nothing",
    ]


def test_alias_target_matches_nothing() -> None:
    text = "llm_providers:\n  - model: openai/a\nmodel_aliases:\n  fast:\n    target: nope\n"
    assert errors_of(text) == [
        "plano.yaml:5: model_aliases.fast.target: 'nope' matches no configured model; "
        "one of openai/a"
    ]


def test_alias_target_matches_several() -> None:
    text = (
        "llm_providers:\n  - model: openai/m\n  - model: groq/m\n"
        "model_aliases:\n  fast:\n    target: m\n"
    )
    assert errors_of(text) == [
        "plano.yaml:6: model_aliases.fast.target: 'm' is ambiguous: it could be "
        "openai/m, groq/m: write provider/model-id"
    ]


def test_alias_with_provider_prefix_and_missing_target() -> None:
    text = (
        "llm_providers:\n  - model: openai/m\n  - model: groq/m\n"
        "model_aliases:\n  fast:\n    target: groq/m\n  slow: {}\n"
    )
    assert errors_of(text) == [
        "plano.yaml:7: model_aliases.slow.target: must be a configured model: "
        "provider/model-id, a bare model-id, or provider/<id> for a provider/* entry, "
        "got nothing"
    ]
    config = parse_config(text.replace("  slow: {}\n", ""), "p.yaml", {})
    assert config.aliases["fast"].target.name == "groq/m"


@pytest.mark.parametrize(
    "url", ["ftp://x/v1", "localhost:8000", "http://", "http://h:99999/", "https://u:p@h/v1", 42]
)
def test_bad_base_url(url: object) -> None:
    (error,) = errors_of(f"llm_providers:\n  - model: acme/m\n    base_url: {url}\n")
    assert error.startswith("plano.yaml:3: llm_providers[0].base_url: ")
    assert "http(s) URL with a host" in error


@pytest.mark.parametrize("bad", ["thirty", "30x", "-1s", "0s", "true"])
def test_bad_duration(bad: str) -> None:
    assert errors_of(
        f"listeners:\n  egress_traffic:\n    timeout: {bad}\nllm_providers:\n  - model: openai/a\n"
    ) == [
        f"plano.yaml:3: listeners.egress_traffic.timeout: must be a duration such as 30s, "
        f"500ms, 2m or 1h, got {parse_yaml_scalar(bad)!r}"
    ]


@pytest.mark.parametrize("bad", ["0", "-5", "1.5", "lots", "true", "2000000"])
def test_bad_max_concurrent_requests(bad: str) -> None:
    assert errors_of(
        f"listeners:\n  egress_traffic:\n    max_concurrent_requests: {bad}\n"
        "llm_providers:\n  - model: openai/a\n"
    ) == [
        "plano.yaml:3: listeners.egress_traffic.max_concurrent_requests: must be a whole number "
        f"from 1 to 1000000, got {parse_yaml_scalar(bad)!r}"
    ]


def test_max_concurrent_requests_default_and_set() -> None:
    base = "llm_providers:\n  - model: openai/a\n"
    assert parse_config(base, "plano.yaml", env={}).listener.max_concurrent_requests == 4096
    text = "listeners:\n  egress_traffic:\n    max_concurrent_requests: 10000\n" + base
    assert parse_config(text, "plano.yaml", env={}).listener.max_concurrent_requests == 10000


def parse_yaml_scalar(text: str) -> object:
    import yaml

    return yaml.safe_load(text)


def test_durations_and_sizes() -> None:
    assert parse_duration("30s") == 30.0
    assert parse_duration("500ms") == 0.5
    assert parse_duration("2m") == 120.0
    assert parse_duration("1h") == 3600.0
    assert parse_duration(5) == 5.0
    assert parse_duration("5") is None
    assert parse_size("16MiB") == 16 * 2**20
    assert parse_size("512KiB") == 512 * 1024
    assert parse_size(1000) == 1000
    assert parse_size("lots") is None


def test_bad_port_and_format() -> None:
    assert errors_of(
        "listeners:\n  egress_traffic:\n    port: 70000\n"
        "    message_format: anthropic\nllm_providers:\n  - model: openai/a\n"
    ) == [
        "plano.yaml:3: listeners.egress_traffic.port: must be a port number 1-65535, got 70000",
        "plano.yaml:4: listeners.egress_traffic.message_format: must be 'openai', got 'anthropic'",
    ]


def test_no_providers_and_bad_yaml() -> None:
    assert errors_of("listeners: {}\n") == [
        "plano.yaml:1: model_providers: must be a non-empty list of providers "
        "(model_providers, or llm_providers in Plano's legacy format), each with at least a "
        "'model: provider/model-id' (or provider/* for any model id)"
    ]
    (error,) = errors_of("llm_providers: [\n")
    assert error.startswith("plano.yaml:2: not valid YAML: ")


def test_all_errors_are_reported_together() -> None:
    errors = errors_of(
        "llm_providers:\n  - model: gpt-5\n  - model: acme/x\n"
        "model_aliases:\n  a:\n    target: zzz\n"
    )
    assert len(errors) == 3


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.yaml")
    assert info.value.errors[0].startswith(f"{tmp_path / 'missing.yaml'}: cannot read:")

"""``provider/*`` wildcards end to end without processes: how a model name is placed
(lookup, resolve), what the ext_proc answer carries for a wildcard's model, and the Envoy
routes and /v1/models answers rendered for wildcards, Azure, passthrough_auth, headers and
http_host."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st

from plano_extproc._proto import ext_proc_pb2 as pb
from plano_extproc.config import (
    Config,
    ConfigError,
    Found,
    NotFound,
    bad_model_id,
    lookup,
    parse_config,
)
from plano_extproc.envoy_config import EnvoyOptions, render_bootstrap, render_yaml
from plano_extproc.errors import ErrorReply
from plano_extproc.extproc.processor import Processor
from plano_extproc.resolve import AskRouter, Decision, resolve, resolve_preference
from plano_extproc.router.base import RouteChoice

pytestmark = pytest.mark.unit

ENV = {"OPENAI_API_KEY": "sk-o", "ANTHROPIC_API_KEY": "sk-a", "AZURE_KEY": "az"}

WILD = """\
model_providers:
  - model: openai/gpt-5
    access_key: $OPENAI_API_KEY
    default: true
  - model: openai/*
    access_key: $OPENAI_API_KEY
  - model: anthropic/*
    access_key: $ANTHROPIC_API_KEY
  - model: groq/llama-3.3-70b
model_aliases:
  fast:
    target: openai/gpt-4.1
  smart:
    target: claude-opus-4-1
  main:
    target: gpt-5
routing_preferences:
  - name: code
    description: writing code
    models: [claude-opus-4-1]
"""

# Two wildcards that both take OpenAI's model families.
TWINS = """\
model_providers:
  - model: openai/*
  - model: azure_openai/*
    base_url: https://res.openai.azure.com
    access_key: $AZURE_KEY
"""

# One wildcard of a provider without model families (a gateway of many providers' models).
ONLY = """\
model_providers:
  - model: openai/gpt-5
  - model: openrouter/*
"""


def make(text: str = WILD, env: dict[str, str] | None = None) -> Config:
    return parse_config(text, "t.yaml", ENV if env is None else env)


def place(model: str, config: Config) -> Found | NotFound:
    return lookup(model, config.by_name, config.by_model_id, config.wildcards)


def found(model: str, config: Config) -> tuple[str, str]:
    result = place(model, config)
    assert isinstance(result, Found), result
    return result.provider.name, result.model_id


def decided(model: str | None, config: Config) -> Decision:
    decision = resolve(model, config, by_preference=False)
    assert isinstance(decision, Decision), decision
    return decision


def refused(model: str, config: Config) -> ErrorReply:
    error = resolve(model, config)
    assert isinstance(error, ErrorReply), error
    assert (error.status, error.type, error.param) == (400, "invalid_request_error", "model")
    return error


# --- lookup --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        # Explicit entries win: by name, and by their bare id.
        ("openai/gpt-5", ("openai/gpt-5", "gpt-5")),
        ("gpt-5", ("openai/gpt-5", "gpt-5")),
        ("llama-3.3-70b", ("groq/llama-3.3-70b", "llama-3.3-70b")),
        ("groq/llama-3.3-70b", ("groq/llama-3.3-70b", "llama-3.3-70b")),
        # provider/<id> through that provider's wildcard, the id passed on as named.
        ("openai/gpt-4.1", ("openai/*", "gpt-4.1")),
        ("anthropic/claude-opus-4-1", ("anthropic/*", "claude-opus-4-1")),
        ("openai/ft:gpt-4o:acme::abc", ("openai/*", "ft:gpt-4o:acme::abc")),
        ("openai/org/model", ("openai/*", "org/model")),
        # A bare id no entry has: the wildcard of its model family.
        ("gpt-4.1", ("openai/*", "gpt-4.1")),
        ("o3-mini", ("openai/*", "o3-mini")),
        ("claude-opus-4-1", ("anthropic/*", "claude-opus-4-1")),
    ],
)
def test_lookup_places_names(model: str, expected: tuple[str, str]) -> None:
    assert found(model, make()) == expected


def test_an_explicit_entry_wins_over_its_providers_wildcard() -> None:
    config = make()
    explicit = config.by_name["openai/gpt-5"]
    for name in ("openai/gpt-5", "gpt-5"):
        result = place(name, config)
        assert isinstance(result, Found) and result.provider is explicit


def test_provider_slash_id_through_a_wildcard_wins_over_another_providers_bare_id() -> None:
    # Groq's id for OpenAI's open-weight model is "openai/gpt-oss-120b". With openai/*
    # configured, "openai/gpt-oss-120b" means OpenAI's model (the prefix names a configured
    # provider); Groq's is named in full.
    config = make("model_providers:\n  - model: openai/*\n  - model: groq/openai/gpt-oss-120b\n")
    assert found("openai/gpt-oss-120b", config) == ("openai/*", "gpt-oss-120b")
    assert found("groq/openai/gpt-oss-120b", config) == (
        "groq/openai/gpt-oss-120b",
        "openai/gpt-oss-120b",
    )
    assert found("openai/gpt-4.1", config) == ("openai/*", "gpt-4.1")
    # Without the wildcard, the bare id is Groq's entry, as before wildcards existed.
    alone = make("model_providers:\n  - model: groq/openai/gpt-oss-120b\n")
    assert found("openai/gpt-oss-120b", alone) == (
        "groq/openai/gpt-oss-120b",
        "openai/gpt-oss-120b",
    )


def test_the_only_wildcard_takes_any_bare_id_and_provider_prefixed_one() -> None:
    config = make(ONLY)
    assert found("anthropic/claude-3.5-sonnet", config) == (
        "openrouter/*",
        "anthropic/claude-3.5-sonnet",
    )
    assert found("mistral-large", config) == ("openrouter/*", "mistral-large")
    assert found("openrouter/meta-llama/llama-4", config) == ("openrouter/*", "meta-llama/llama-4")
    assert found("gpt-5", config) == ("openai/gpt-5", "gpt-5")  # explicit still first


def test_two_wildcards_of_one_family_make_a_bare_id_ambiguous() -> None:
    result = place("gpt-4o", make(TWINS))
    assert result == NotFound(candidates=("openai/gpt-4o", "azure_openai/gpt-4o"))
    assert found("azure_openai/gpt-4o", make(TWINS)) == ("azure_openai/*", "gpt-4o")


def test_a_bare_id_of_no_family_among_several_wildcards_is_unclaimed() -> None:
    assert place("llama-4", make()) == NotFound(unclaimed=("openai/*", "anthropic/*"))
    # A provider prefix that has no wildcard is no provider/<id>: the whole name is bare.
    assert place("mistral/mistral-large", make()) == NotFound(unclaimed=("openai/*", "anthropic/*"))


def test_without_wildcards_nothing_new_is_placed() -> None:
    config = make("model_providers:\n  - model: openai/gpt-5\n")
    assert place("gpt-4.1", config) == NotFound()
    assert place("openai/gpt-4.1", config) == NotFound()


ID_RULE = "a model id is 1-256 printable ASCII characters without spaces"
AZURE_RULE = (
    "an Azure OpenAI deployment name is 1-64 letters, digits, '-', '_' or '.', starting with a "
    "letter or digit"
)


@pytest.mark.parametrize(
    ("model", "problem"),
    [
        ("openai/*", "'openai/*' stands for any model id: name one, e.g. openai/<id>"),
        ("openai/", ID_RULE),
        ("openai/gpt 5", ID_RULE),
        ("openai/gpt-5\t", ID_RULE),
        ("openai/gpt-5\n", ID_RULE),
        ("openai/gpt\x00", ID_RULE),
        ("openai/gpt-é", ID_RULE),
        ("openai/" + "x" * 257, ID_RULE),
        ("gpt-5 mini", ID_RULE),  # placed by its family, then refused
        ("claude-opus 4", ID_RULE),
    ],
)
def test_ids_a_wildcard_cannot_pass_on(model: str, problem: str) -> None:
    assert place(model, make()) == NotFound(bad_id=problem)


def test_the_longest_id_passes() -> None:
    longest = "x" * 256
    assert found(f"openai/{longest}", make()) == ("openai/*", longest)


@pytest.mark.parametrize(
    ("deployment", "ok"),
    [("my-dep_1.2", True), ("d" * 64, True), ("d" * 65, False), ("a/b", False),
     ("gpt:4o", False), ("dep loy", False)],
)  # fmt: skip
def test_an_azure_wildcard_takes_deployment_names_only(deployment: str, ok: bool) -> None:
    config = make(TWINS)
    result = place(f"azure_openai/{deployment}", config)
    if ok:
        assert result == Found(config.wildcards["azure_openai"], deployment)
    else:
        assert result == NotFound(bad_id=AZURE_RULE)
    # The same id through the OpenAI wildcard follows the general rule.
    assert bad_model_id(config.wildcards["openai"], "gpt:4o") is None


# --- resolve --------------------------------------------------------------------------------


def test_a_wildcard_decision_names_the_entry_and_the_model() -> None:
    decision = decided("openai/gpt-4.1", make())
    assert decision.provider.name == "openai/*"
    assert (decision.routing, decision.wildcard_id) == ("direct", "gpt-4.1")
    assert (decision.model, decision.model_id) == ("openai/gpt-4.1", "gpt-4.1")


def test_an_explicit_decision_names_its_own_model() -> None:
    decision = decided("gpt-5", make())
    assert decision.provider.name == "openai/gpt-5"
    assert (decision.model, decision.model_id, decision.routing) == (
        "openai/gpt-5",
        "gpt-5",
        "direct",
    )


@pytest.mark.parametrize(
    ("alias", "entry", "model"),
    [
        ("fast", "openai/*", "openai/gpt-4.1"),
        ("smart", "anthropic/*", "anthropic/claude-opus-4-1"),
        ("main", "openai/gpt-5", "openai/gpt-5"),
    ],
)
def test_aliases_through_wildcards(alias: str, entry: str, model: str) -> None:
    config = make()
    assert config.aliases[alias].model == model
    decision = decided(alias, config)
    assert (decision.provider.name, decision.routing, decision.model) == (entry, "alias", model)
    assert decision.model_id == model.split("/", 1)[1]


def test_a_route_through_a_wildcard_serves_its_model() -> None:
    config = make()
    assert resolve(None, config) == AskRouter()
    choice = RouteChoice("code", 0.9, {"code": 0.9, "other": 0.1})
    decision = resolve_preference(choice, config)
    assert isinstance(decision, Decision)
    assert (decision.provider.name, decision.routing, decision.route) == (
        "anthropic/*",
        "preference",
        "code",
    )
    assert (decision.model, decision.model_id) == ("anthropic/claude-opus-4-1", "claude-opus-4-1")
    # "other" falls back to the default, an explicit model.
    fallback = resolve_preference(RouteChoice("other", 0.9, {"other": 0.9}), config)
    assert isinstance(fallback, Decision) and fallback.model == "openai/gpt-5"


def test_an_ambiguous_bare_id_asks_for_provider_slash_model() -> None:
    error = refused("gpt-4o", make(TWINS))
    assert error.code == "model_ambiguous"
    assert error.message == (
        "The model 'gpt-4o' is served by several providers (openai/gpt-4o, "
        "azure_openai/gpt-4o): name one as provider/model."
    )


def test_an_unclaimed_bare_id_names_the_wildcards() -> None:
    error = refused("llama-4", make())
    assert error.code == "model_ambiguous"
    assert error.message == (
        "The model 'llama-4' is of no model family this gateway knows, and several providers "
        "take any model id (openai/*, anthropic/*): name it as provider/model."
    )


@pytest.mark.parametrize(
    ("text", "model", "problem"),
    [
        (WILD, "openai/*", "'openai/*' stands for any model id: name one, e.g. openai/<id>"),
        (WILD, "openai/gpt 5", ID_RULE),
        (WILD, "openai/" + "x" * 257, ID_RULE),
        (WILD, "claude-opus 4", ID_RULE),
        (TWINS, "azure_openai/a/b", AZURE_RULE),
        (TWINS, "azure_openai/*", "'azure_openai/*' stands for any model id: name one, e.g. "
         "azure_openai/<id>"),
    ],
)  # fmt: skip
def test_a_bad_id_is_model_not_found_saying_why(text: str, model: str, problem: str) -> None:
    error = refused(model, make(text))
    assert error.code == "model_not_found"
    shown = model if len(model) <= 100 else model[:100] + "…"
    assert error.message == f"The model '{shown}' cannot be sent on: {problem}."


# A bare id no wildcard can pass on (spaces, '*') is model_not_found, however many wildcards
# could take it (it was once model_ambiguous, asking for provider/model names that would be
# refused in turn).
@pytest.mark.parametrize(
    ("text", "model"),
    [
        pytest.param(TWINS, "gpt-4o mini", id="two-families-claim-it"),
        pytest.param(TWINS, "gpt 4o", id="no-family-azure"),
        pytest.param(WILD, "llama 4", id="no-family"),
        pytest.param(WILD, "*", id="star-openai-anthropic"),
        pytest.param(TWINS, "*", id="star-openai-azure"),
    ],
)
def test_a_bad_bare_id_among_several_wildcards_is_model_not_found(text: str, model: str) -> None:
    error = refused(model, make(text))
    assert error.code == "model_not_found", error.message


def test_a_bad_bare_id_with_one_wildcard_is_model_not_found() -> None:
    error = refused("*", make(ONLY))
    assert error.code == "model_not_found"
    assert error.message == (
        "The model '*' cannot be sent on: '*' stands for any model id: name one."
    )


def test_a_wildcards_missing_key_is_a_500_naming_it() -> None:
    error = resolve("openai/gpt-4.1", make(env={}))
    assert isinstance(error, ErrorReply)
    assert (error.status, error.code) == (500, "missing_api_key")
    assert error.message == (
        "The gateway has no API key for openai/*: environment variable OPENAI_API_KEY is not "
        "set where the gateway runs."
    )


# --- the ext_proc answer ----------------------------------------------------------------------

PROCESSED = """\
model_providers:
  - model: openai/gpt-5
    access_key: $OPENAI_API_KEY
    default: true
  - model: openai/*
    access_key: $OPENAI_API_KEY
  - model: anthropic/*
    access_key: $ANTHROPIC_API_KEY
  - model: azure_openai/*
    base_url: https://res.openai.azure.com
    access_key: $AZURE_KEY
  - model: litellm/*
    base_url: http://127.0.0.1:4000/v1
    passthrough_auth: true
model_aliases:
  fast:
    target: openai/gpt-4.1
"""


@pytest.fixture
def processor() -> Processor:
    return Processor(make(PROCESSED))


def answer(processor: Processor, model: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The decision's metadata and the body forwarded, for an OpenAI chat request (None:
    the client's body goes unchanged)."""
    raw = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]})
    message = pb.ProcessingRequest(request_body=pb.HttpBody(body=raw.encode(), end_of_stream=True))
    response = processor.handle(message)
    assert isinstance(response, pb.ProcessingResponse)
    assert response.WhichOneof("response") == "request_body", response
    metadata = json_format.MessageToDict(response.dynamic_metadata)
    assert list(metadata) == ["plano"]
    # The client's API and stream flag are the access log's (test_access_log checks them).
    assert metadata["plano"].pop("api") == "openai"
    assert metadata["plano"].pop("stream") is False
    common = response.request_body.response
    if not common.HasField("body_mutation"):
        return metadata["plano"], None
    return metadata["plano"], json.loads(common.body_mutation.body)


@pytest.mark.parametrize(
    ("model", "metadata"),
    [
        ("openai/gpt-4.1", {"provider": "openai/*", "model": "openai/gpt-4.1",
                            "model_id": "gpt-4.1", "routing": "direct", "auth": "Bearer sk-o"}),
        ("openai/o3-mini", {"provider": "openai/*", "model": "openai/o3-mini",
                            "model_id": "o3-mini", "routing": "direct", "auth": "Bearer sk-o"}),
        ("fast", {"provider": "openai/*", "model": "openai/gpt-4.1", "model_id": "gpt-4.1",
                  "routing": "alias", "auth": "Bearer sk-o"}),
        ("azure_openai/dep-1", {"provider": "azure_openai/*", "model": "azure_openai/dep-1",
                                "model_id": "dep-1", "routing": "direct", "auth": "az"}),
        ("litellm/team-model", {"provider": "litellm/*", "model": "litellm/team-model",
                                "model_id": "team-model", "routing": "direct"}),
    ],
)  # fmt: skip
def test_a_wildcard_answer_carries_the_model_id(
    processor: Processor, model: str, metadata: dict[str, str]
) -> None:
    got, body = answer(processor, model)
    assert got == metadata
    assert body is not None and body["model"] == metadata["model_id"]


def test_an_explicit_answer_has_no_model_id(processor: Processor) -> None:
    got, body = answer(processor, "openai/gpt-5")
    assert got == {
        "provider": "openai/gpt-5",
        "model": "openai/gpt-5",
        "routing": "direct",
        "auth": "Bearer sk-o",
    }
    assert body is not None and body["model"] == "gpt-5"


def test_a_wildcard_of_the_other_api_gets_the_translated_body(processor: Processor) -> None:
    got, body = answer(processor, "claude-opus-4-1")
    assert got == {
        "provider": "anthropic/*",
        "model": "anthropic/claude-opus-4-1",
        "model_id": "claude-opus-4-1",
        "routing": "direct",
        "auth": "sk-a",
    }
    assert body == {
        "model": "claude-opus-4-1",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": "hi"}],
    }


def test_distinct_wildcard_ids_do_not_grow_the_template_cache(processor: Processor) -> None:
    answer(processor, "openai/gpt-5")
    answer(processor, "gpt-5")
    answer(processor, "openai/gpt-4.1")
    cached = dict(processor._templates)
    # One per decision (entry, routing, route, chain; then the client's API and stream
    # flag): the wildcard's names no model id of its own.
    assert [key[:4] for key in cached] == [
        ("openai/gpt-5", "direct", None, None),
        ("openai/*", "direct", None, None),
    ]
    for i in range(1000):
        got, body = answer(processor, f"openai/ft:gpt-4o:acme:{i}")
        assert body is not None
        assert (got["model_id"], body["model"]) == (f"ft:gpt-4o:acme:{i}",) * 2
        assert got["model"] == f"openai/ft:gpt-4o:acme:{i}"
    assert processor._templates == cached
    # The cached template was copied, never written: it still names the first one's model.
    (wildcard,) = [t for key, t in cached.items() if key[0] == "openai/*"]
    assert "gpt-4.1" not in str(wildcard)


# --- the Envoy routes -------------------------------------------------------------------------

RENDERED = """\
model_providers:
  - model: openai/gpt-5
    access_key: $OPENAI_API_KEY
    default: true
  - model: openai/*
    access_key: $OPENAI_API_KEY
  - model: azure_openai/my-dep
    base_url: https://res.openai.azure.com
    access_key: $AZURE_KEY
  - model: azure_openai/*
    base_url: https://other.openai.azure.com/base
    access_key: $AZURE_KEY
    api_version: 2025-01-01-preview
  - model: litellm/m
    base_url: http://127.0.0.1:4000/v1
    passthrough_auth: true
  - model: claude-proxy/m
    base_url: http://127.0.0.1:4001/v1
    provider_interface: anthropic
    passthrough_auth: true
  - model: corp/m
    base_url: https://llm.corp.example/v1
    access_key: sk-literal
    headers:
      X-Team: search
      x-org: acme
    http_host: llm.internal
model_aliases:
  fast:
    target: openai/gpt-4.1
  main:
    target: gpt-5
"""
AUTH = "%DYNAMIC_METADATA(plano:auth)%"
CLIENT_ONLY = ["authorization", "x-api-key", "api-key", "cookie", "proxy-authorization"]
QUERY_MUTATION = (
    "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutationPerRoute"
)


def routes_of(config: Config) -> dict[str, dict[str, Any]]:
    boot: dict[str, Any] = render_bootstrap(config, EnvoyOptions())
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    found = hcm["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    return {r["name"]: r for r in found}


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict[str, Any]]:
    return routes_of(make(RENDERED))


def matched_on(r: dict[str, Any]) -> list[tuple[str, str]]:
    """The (metadata key, exact value) pairs a provider route matches."""
    out = []
    for m in r["match"]["dynamic_metadata"]:
        assert m["filter"] == "plano"
        (segment,) = m["path"]
        out.append((segment["key"], m["value"]["string_match"]["exact"]))
    return out


def added(r: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {
        h["header"]["key"]: (h["header"]["value"], h["append_action"])
        for h in r.get("request_headers_to_add", [])
    }


def api_version_query(r: dict[str, Any]) -> list[dict[str, Any]]:
    config = r["typed_per_filter_config"]["plano.provider_query"]
    assert config["@type"] == QUERY_MUTATION
    assert set(config["mutations"]) == {"query_parameter_mutations"}
    return config["mutations"]["query_parameter_mutations"]  # type: ignore[no-any-return]


def version_mutation(version: str) -> list[dict[str, Any]]:
    return [
        {
            "append": {
                "record": {"key": "api-version", "value": version},
                "action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        }
    ]


@pytest.mark.parametrize("api", ["chat", "messages"])
def test_a_wildcards_route_matches_the_entry_not_the_model(
    rendered: dict[str, dict[str, Any]], api: str
) -> None:
    r = rendered[f"{api}:openai/*"]
    assert matched_on(r) == [("provider", "openai/*")]
    assert r["route"]["cluster"] == "provider_openai"
    assert r["route"]["regex_rewrite"]["substitution"] == "/v1/chat/completions"
    assert added(r)["authorization"] == (AUTH, "OVERWRITE_IF_EXISTS_OR_ADD")
    # Every provider route matches on the entry: no route keys on the served model.
    for name, route in rendered.items():
        if "route" in route:
            assert [key for key, _ in matched_on(route)] == ["provider"], name


def test_azure_explicit_route_puts_the_deployment_in_the_path(
    rendered: dict[str, dict[str, Any]],
) -> None:
    for api in ("chat", "messages"):
        r = rendered[f"{api}:azure_openai/my-dep"]
        assert matched_on(r) == [("provider", "azure_openai/my-dep")]
        action = r["route"]
        assert action["path_rewrite"] == "/openai/deployments/my-dep/chat/completions"
        assert "regex_rewrite" not in action
        assert action["auto_host_rewrite"] is True
        assert api_version_query(r) == version_mutation("2024-10-21")
        assert added(r) == {"api-key": (AUTH, "OVERWRITE_IF_EXISTS_OR_ADD")}
        assert r["request_headers_to_remove"][: len(CLIENT_ONLY)] == CLIENT_ONLY
    # The Messages client's route to it is translated: the response filter is on there too.
    messages = rendered["messages:azure_openai/my-dep"]["typed_per_filter_config"]
    assert set(messages) == {"plano.translate_responses", "plano.provider_query"}


def test_azure_wildcard_route_takes_the_deployment_from_the_decision(
    rendered: dict[str, dict[str, Any]],
) -> None:
    for api in ("chat", "messages"):
        r = rendered[f"{api}:azure_openai/*"]
        assert matched_on(r) == [("provider", "azure_openai/*")]
        assert r["route"]["path_rewrite"] == (
            "/base/openai/deployments/%DYNAMIC_METADATA(plano:model_id)%/chat/completions"
        )
        assert "regex_rewrite" not in r["route"]
        assert r["route"]["cluster"] == "provider_azure_openai_2"
        assert api_version_query(r) == version_mutation("2025-01-01-preview")


def test_routes_of_other_providers_have_no_api_version(
    rendered: dict[str, dict[str, Any]],
) -> None:
    for name in ("chat:openai/*", "chat:openai/gpt-5", "chat:corp/m", "chat:litellm/m"):
        r = rendered[name]
        assert "plano.provider_query" not in r.get("typed_per_filter_config", {})
        assert "path_rewrite" not in r["route"], name


def test_passthrough_keeps_the_clients_credential_and_adds_none(
    rendered: dict[str, dict[str, Any]],
) -> None:
    # Every credential header of the client's passes as sent (the provider reads the one it
    # takes); cookies and proxy credentials never do.
    credentials = {"authorization", "x-api-key", "api-key"}
    for name in (
        "chat:litellm/m",
        "messages:litellm/m",
        "chat:claude-proxy/m",
        "messages:claude-proxy/m",
    ):
        r = rendered[name]
        removed = r["request_headers_to_remove"]
        assert not credentials & set(removed), name
        assert set(CLIENT_ONLY) - credentials <= set(removed), name
        assert "authorization" not in added(r) and "x-api-key" not in added(r), name
        assert AUTH not in json.dumps(r), name


def test_headers_and_http_host_are_set_on_the_providers_routes(
    rendered: dict[str, dict[str, Any]],
) -> None:
    for api in ("chat", "messages"):
        r = rendered[f"{api}:corp/m"]
        assert r["route"]["host_rewrite_literal"] == "llm.internal"
        assert "auto_host_rewrite" not in r["route"]
        headers = added(r)
        assert headers["authorization"] == (AUTH, "OVERWRITE_IF_EXISTS_OR_ADD")
        assert headers["x-team"] == ("search", "OVERWRITE_IF_EXISTS_OR_ADD")
        assert headers["x-org"] == ("acme", "OVERWRITE_IF_EXISTS_OR_ADD")
    # Other providers keep their own Host and get none of these headers.
    other = rendered["chat:openai/gpt-5"]
    assert (
        other["route"]["auto_host_rewrite"] is True and "host_rewrite_literal" not in other["route"]
    )
    assert set(added(other)) == {"authorization"}
    assert "sk-literal" not in render_yaml(make(RENDERED))


# A header value is written into Envoy's request_headers_to_add, which Envoy reads as a
# substitution format: a literal "%" is escaped ("%%"), so "100%" does not make Envoy refuse
# the bootstrap and "%DOWNSTREAM_REMOTE_ADDRESS%" is sent as written.
@pytest.mark.parametrize("value", ["100%", "%DOWNSTREAM_REMOTE_ADDRESS%"])
def test_a_header_value_with_percent_is_sent_as_written(value: str) -> None:
    text = f"model_providers:\n  - model: openai/gpt-5\n    headers:\n      x-quota: '{value}'\n"
    try:
        config = make(text)
    except ConfigError as refusal:
        assert refusal.errors[0].startswith("t.yaml:4: model_providers[0].headers.x-quota: ")
        return
    r = routes_of(config)["chat:openai/gpt-5"]
    assert added(r)["x-quota"][0] == value.replace("%", "%%")


# --- /v1/models -------------------------------------------------------------------------------


def answered(r: dict[str, Any]) -> Any:
    reply = r["direct_response"]
    assert reply["status"] == 200
    assert reply["body_format"]["content_type"] == "application/json"
    return json.loads(reply["body_format"]["text_format_source"]["inline_string"])


def test_models_lists_explicit_ids_and_aliases_and_names_the_wildcards(
    rendered: dict[str, dict[str, Any]],
) -> None:
    listing = answered(rendered["models"])
    assert listing["object"] == "list"
    ids = [m["id"] for m in listing["data"]]
    assert ids == [
        "openai/gpt-5",
        "azure_openai/my-dep",
        "litellm/m",
        "claude-proxy/m",
        "corp/m",
        "fast",
        "main",
    ]
    assert not any("*" in i for i in ids)
    aliases = {m["id"]: m for m in listing["data"] if m["owned_by"] == "plano"}
    assert aliases == {
        "fast": {
            "id": "fast",
            "object": "model",
            "created": 0,
            "owned_by": "plano",
            "target": "openai/gpt-4.1",
        },
        "main": {
            "id": "main",
            "object": "model",
            "created": 0,
            "owned_by": "plano",
            "target": "openai/gpt-5",
        },
    }
    assert listing["accepts_any_model_id"] == ["openai/*", "azure_openai/*"]
    # Each listed id has its own answer; a wildcard has none.
    assert answered(rendered["model:fast"])["target"] == "openai/gpt-4.1"
    assert answered(rendered["model:openai/gpt-5"])["owned_by"] == "openai"
    assert "model:openai/*" not in rendered and "model:azure_openai/*" not in rendered


def test_models_without_wildcards_has_no_accepts_any_model_id() -> None:
    listing = answered(routes_of(make("model_providers:\n  - model: openai/gpt-5\n"))["models"])
    assert listing == {
        "object": "list",
        "data": [{"id": "openai/gpt-5", "object": "model", "created": 0, "owned_by": "openai"}],
    }


# --- a property of lookup ---------------------------------------------------------------------

PROPERTY_CONFIGS = [make(WILD), make(TWINS), make(ONLY), make(RENDERED)]
PREFIXES = ["openai/", "anthropic/", "azure_openai/", "openrouter/", "groq/", "litellm/", ""]
FAMILIES = ["gpt-", "o3", "claude-", "gemini-", "llama-", "*", ""]

model_names = st.one_of(
    st.text(max_size=300),
    st.builds(
        lambda prefix, family, rest: prefix + family + rest,
        st.sampled_from(PREFIXES),
        st.sampled_from(FAMILIES),
        st.one_of(
            st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x7F), max_size=80),
            st.text(max_size=20),
            st.just("x" * 256),
            st.just("x" * 257),
        ),
    ),
)


@settings(max_examples=400, derandomize=True, deadline=None, database=None)
@given(model=model_names, which=st.integers(0, len(PROPERTY_CONFIGS) - 1))
def test_lookup_never_raises_and_wildcards_pass_on_only_good_ids(model: str, which: int) -> None:
    config = PROPERTY_CONFIGS[which]
    result = place(model, config)
    if isinstance(result, NotFound):
        assert not (result.bad_id and (result.candidates or result.unclaimed))
        return
    assert result.provider in config.providers
    if result.provider.wildcard:
        assert bad_model_id(result.provider, result.model_id) is None
        assert model.endswith(result.model_id)
    else:
        assert result.model_id == result.provider.model_id
    decision = resolve(model, config, by_preference=False)
    assert isinstance(decision, Decision | ErrorReply)


def test_a_first_party_wildcard_alone_takes_no_other_providers_model() -> None:
    # anthropic/* serves Anthropic's models: gpt-4o would be a wrong route there (an
    # aggregator's wildcard, such as openrouter/*, takes any id: see above).
    config = make("model_providers:\n  - model: anthropic/*\n")
    assert found("claude-opus-4-1", config) == ("anthropic/*", "claude-opus-4-1")
    assert found("my-fine-tune", config) == ("anthropic/*", "my-fine-tune")  # no known family
    error = refused("gpt-4o", config)
    assert error.code == "model_not_found"
    assert error.message == (
        "The model 'gpt-4o' cannot be sent on: it is one of openai's models, and openai has "
        "no openai/* here."
    )


def filter_names(config: Config) -> list[str]:
    boot: dict[str, Any] = render_bootstrap(config, EnvoyOptions())
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    return [f["name"] for f in hcm["typed_config"]["http_filters"]]


def test_the_provider_query_filter_runs_after_the_decision_and_only_for_azure() -> None:
    # The first header_mutation filter runs on the entry route, before the server has chosen
    # the provider: an Azure route's api-version query needs a filter that runs after it
    # (after buffer, which holds the request until the decision is in).
    names = filter_names(make(RENDERED))
    assert names.index("plano.provider_query") > names.index("envoy.filters.http.buffer")
    assert names[-1] == "envoy.filters.http.router"
    assert "plano.provider_query" not in filter_names(make(WILD))

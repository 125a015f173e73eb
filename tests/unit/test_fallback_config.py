"""Provider fallback without processes (README and envoy/README, "Provider fallback"): the
``fallbacks`` of provider entries and aliases and a top-level route's further models parsed
into chains (followed through each member's own fallbacks, checked to exist and to have no
cycle, located errors otherwise); the chain each decision names (resolve, ``plano-extproc
route``, the ext_proc answer's metadata); and the Envoy pieces a chain renders to (member
and aggregate clusters, upstream filters, chain routes first, retry policy, response headers)
while a config without fallbacks renders as it did before them."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from google.protobuf import json_format

from plano_extproc._proto import ext_proc_pb2 as pb
from plano_extproc.apis import ANTHROPIC_MESSAGES, COUNT_TOKENS, OPENAI_CHAT, ClientApi
from plano_extproc.config import Chain, Config, ConfigError, Target, load_config, parse_config
from plano_extproc.decide import Pending
from plano_extproc.envoy_config import (
    EnvoyOptions,
    render_bootstrap,
    render_yaml,
    validate_with_envoy,
)
from plano_extproc.errors import ErrorReply
from plano_extproc.explain import route_one
from plano_extproc.extproc.processor import Processor
from plano_extproc.resolve import ASK_ROUTER, Decision, resolve, resolve_preference
from plano_extproc.router.base import OTHER, RouteChoice
from plano_extproc.router.service import RouterService

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "envoy" / "plano.envoy.yaml"
SHIPPED = [ROOT / "config" / "plano.yaml", *sorted((ROOT / "config" / "examples").glob("*.yaml"))]

ENV = {
    "OPENAI_API_KEY": "sk-o",
    "ANTHROPIC_API_KEY": "sk-a",
    "GROQ_API_KEY": "gsk",
    "AZURE_KEY": "az",
}

GPT, CLAUDE, MINI = "openai/gpt-5.2", "anthropic/claude-sonnet-4-5", "openai/gpt-5-mini"
GROQ, AZURE, CORP, GPT41 = "groq/llama-3.3-70b", "azure_openai/gpt-4o", "corp/m", "openai/gpt-4.1"

# Every way to name fallbacks, chains that follow members' own fallbacks, lists that come
# out identical, a wildcard-served member (openai/gpt-4.1 through openai/*), an Azure
# primary, a member with its own http_host, an anthropic primary.
FALLBACK = """\
listeners:
  egress_traffic:
    address: 127.0.0.1
    port: 12000
    timeout: 45s
model_providers:
  - model: openai/gpt-5.2
    access_key: $OPENAI_API_KEY
    default: true
    fallbacks: [anthropic/claude-sonnet-4-5, {target: gpt-5-mini}]
    routing_preferences:
      - name: reasoning
        description: hard problems
  - model: anthropic/claude-sonnet-4-5
    access_key: $ANTHROPIC_API_KEY
    fallbacks:
      - target: groq/llama-3.3-70b
  - model: openai/gpt-5-mini
    access_key: $OPENAI_API_KEY
  - model: groq/llama-3.3-70b
    access_key: $GROQ_API_KEY
  - model: azure_openai/gpt-4o
    base_url: https://res.openai.azure.com/base
    access_key: $AZURE_KEY
    fallbacks: [openai/gpt-4.1]
  - model: corp/m
    base_url: https://llm.corp.example/v1
    access_key: sk-corp
    http_host: llm.internal
    fallbacks: [gpt-5-mini]
  - model: openai/*
    access_key: $OPENAI_API_KEY
model_aliases:
  fast:
    target: groq/llama-3.3-70b
    fallbacks: [corp/m]
  quick:
    target: groq/llama-3.3-70b
    fallbacks: [{target: openai/gpt-5-mini}]
  smart:
    target: claude-sonnet-4-5
  same:
    target: claude-sonnet-4-5
    fallbacks: [groq/llama-3.3-70b]
  swap:
    target: claude-sonnet-4-5
    fallbacks: [gpt-5-mini]
  plain:
    target: gpt-5-mini
  wide:
    target: openai/gpt-4.1
    fallbacks: [gpt-5-mini]
routing_preferences:
  - name: code
    description: writing code
    models: [claude-sonnet-4-5, gpt-5-mini]
  - name: deep
    description: long documents
    models: [anthropic/claude-sonnet-4-5]
  - name: chat
    description: small talk
    models: [gpt-5-mini]
  - name: twin
    description: the same list as claude's own
    models: [claude-sonnet-4-5, groq/llama-3.3-70b]
"""

# Chain id -> its members, in the order the chains are made: the provider entries' own (in
# config order), the aliases', the routes'. Lists already made are shared, never made twice.
CHAINS = {
    "chain_1": [GPT, CLAUDE, GROQ, MINI],  # claude's own groq comes before gpt's next, mini
    "chain_2": [CLAUDE, GROQ],
    "chain_3": [AZURE, GPT41],
    "chain_4": [CORP, MINI],
    "chain_5": [GROQ, CORP, MINI],  # fast: corp/m followed through its own
    "chain_6": [GROQ, MINI],  # quick
    "chain_7": [CLAUDE, MINI],  # swap: the alias's own list, not its target's
    "chain_8": [GPT41, MINI],  # wide
    "chain_9": [CLAUDE, GROQ, MINI],  # the route code
}
MEMBERS = {GPT: "member_1", CLAUDE: "member_2", GROQ: "member_3", MINI: "member_4"}
MEMBERS |= {AZURE: "member_5", GPT41: "member_6", CORP: "member_7"}


def make(text: str = FALLBACK, env: dict[str, str] | None = None) -> Config:
    return parse_config(text, "fb.yaml", ENV if env is None else env)


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        make(text)
    return info.value.errors


def names(chain: Chain | None) -> list[str] | None:
    return None if chain is None else [m.name for m in chain.members]


@pytest.fixture(scope="module")
def config() -> Config:
    return make()


# --- parsing ----------------------------------------------------------------------------------


def test_chains_follow_each_members_own_fallbacks_in_order(config: Config) -> None:
    assert {cid: names(chain) for cid, chain in config.chains.items()} == CHAINS
    assert list(config.chains) == list(CHAINS)  # ids in the order made, no gap
    for cid, chain in config.chains.items():
        assert chain.id == cid
        assert chain.primary is chain.members[0]
        assert len({m.name for m in chain.members}) == len(chain.members) >= 2


def test_who_fails_over_along_which_chain(config: Config) -> None:
    # A provider entry's own fallbacks: names and {target: ...} items alike.
    assert {k: c.id for k, c in config.chain_of_model.items()} == {
        GPT: "chain_1",
        CLAUDE: "chain_2",
        AZURE: "chain_3",
        CORP: "chain_4",
    }
    # An alias with fallbacks has its own chain; one without is not listed (it takes its
    # target's, at resolve time). `same` lists exactly claude's own chain: that one.
    assert {k: c.id for k, c in config.chain_of_alias.items()} == {
        "fast": "chain_5",
        "quick": "chain_6",
        "same": "chain_2",
        "swap": "chain_7",
        "wide": "chain_8",
    }
    # A top-level route with models beyond the first; one model, or an inline route: none.
    assert {k: c.id for k, c in config.chain_of_route.items()} == {
        "code": "chain_9",
        "twin": "chain_2",
    }


def test_identical_member_lists_share_one_chain_object(config: Config) -> None:
    shared = config.chain_of_model[CLAUDE]
    assert config.chain_of_alias["same"] is shared
    assert config.chain_of_route["twin"] is shared
    assert config.chains["chain_2"] is shared
    lists = {tuple(m.name for m in c.members) for c in config.chains.values()}
    assert len(lists) == len(config.chains)  # no two chains with one list


def test_members_are_the_provider_entries_and_the_ids_they_receive(config: Config) -> None:
    (gpt41,) = (m for m in config.chains["chain_3"].members if m.name == GPT41)
    # openai/gpt-4.1 is served by the openai/* entry, which receives gpt-4.1.
    assert gpt41 == Target(config.by_name["openai/*"], "gpt-4.1")
    assert gpt41.provider.wildcard
    for chain in config.chains.values():
        for member in chain.members:
            if not member.provider.wildcard:
                assert member.provider is config.by_name[member.name]
                assert member.model_id == member.provider.model_id
    # An alias to a wildcard-served id with fallbacks: the chain's primary is that id.
    wide = config.chain_of_alias["wide"]
    assert wide.primary == Target(config.by_name["openai/*"], "gpt-4.1")
    assert wide.primary.name == config.aliases["wide"].model == GPT41


TWO = """\
model_providers:
  - model: openai/gpt-5.2
    default: true
{a}
  - model: anthropic/claude-sonnet-4-5
{b}
  - model: openai/gpt-5-mini
{c}
  - model: groq/llama-3.3-70b
"""


def two(a: str = "", b: str = "", c: str = "", extra: str = "") -> str:
    return TWO.format(a=a, b=b, c=c) + extra


def test_a_chain_lists_a_model_once_however_often_it_is_reached() -> None:
    config = make(
        two(
            a="    fallbacks: [claude-sonnet-4-5, gpt-5-mini, openai/gpt-5-mini, "
            "groq/llama-3.3-70b]",
            b="    fallbacks: [{target: groq/llama-3.3-70b}, gpt-5-mini]",
        )
    )
    # gpt-5.2 -> claude (-> groq, mini), then its own mini (twice, by two names) and groq.
    assert names(config.chain_of_model[GPT]) == [GPT, CLAUDE, GROQ, MINI]
    assert names(config.chain_of_model[CLAUDE]) == [CLAUDE, GROQ, MINI]


def test_unknown_fallbacks_are_located_errors() -> None:
    text = two(
        a="    fallbacks: [nope/x, {target: gpt-9}]",
        extra="model_aliases:\n  fast:\n    target: gpt-5-mini\n    fallbacks: [claude-9]\n",
    )
    known = f"one of {GPT}, {CLAUDE}, {MINI}, {GROQ}"
    assert errors_of(text) == [
        f"fb.yaml:4: model_providers[0].fallbacks[0]: 'nope/x' matches no configured model; "
        f"{known}",
        f"fb.yaml:4: model_providers[0].fallbacks[1].target: 'gpt-9' matches no configured "
        f"model; {known}",
        f"fb.yaml:13: model_aliases.fast.fallbacks[0]: 'claude-9' matches no configured model; "
        f"{known}",
    ]


def test_a_fallback_item_takes_only_target() -> None:
    assert errors_of(two(a="    fallbacks: [{target: gpt-5-mini, weight: 2}]")) == [
        "fb.yaml:4: model_providers[0].fallbacks[0].weight: unknown key; allowed here: target"
    ]


CYCLE_A_B = f"the fallbacks form a cycle: {GPT} -> {CLAUDE} -> {GPT}"
CYCLE_B_A = f"the fallbacks form a cycle: {CLAUDE} -> {GPT} -> {CLAUDE}"
CYCLE_A_A = f"the fallbacks form a cycle: {GPT} -> {GPT}"


@pytest.mark.parametrize(
    ("lists", "errors"),
    [
        pytest.param(
            {"a": "[claude-sonnet-4-5]", "b": "[openai/gpt-5.2]"},
            [
                f"fb.yaml:6: model_providers[1].fallbacks: {CYCLE_A_B}",
                f"fb.yaml:4: model_providers[0].fallbacks: {CYCLE_B_A}",
            ],
            id="a-b-a",
        ),
        pytest.param(
            {"a": "[{target: gpt-5.2}]"},
            [f"fb.yaml:4: model_providers[0].fallbacks: {CYCLE_A_A}"],
            id="a-a",
        ),
        pytest.param(
            {"a": "[claude-sonnet-4-5]", "b": "[gpt-5-mini]", "c": "[gpt-5.2]"},
            [
                f"fb.yaml:8: model_providers[2].fallbacks: the fallbacks form a cycle: "
                f"{GPT} -> {CLAUDE} -> {MINI} -> {GPT}",
                f"fb.yaml:4: model_providers[0].fallbacks: the fallbacks form a cycle: "
                f"{CLAUDE} -> {MINI} -> {GPT} -> {CLAUDE}",
                f"fb.yaml:6: model_providers[1].fallbacks: the fallbacks form a cycle: "
                f"{MINI} -> {GPT} -> {CLAUDE} -> {MINI}",
            ],
            id="a-b-c-a",
        ),
    ],
)
def test_a_cycle_is_a_located_error_once_per_list(lists: dict[str, str], errors: list[str]) -> None:
    text = two(**{k: f"    fallbacks: {v}" for k, v in lists.items()})
    assert errors_of(text) == errors
    # Reached again from an alias, a route and a model outside it: nothing said twice.
    more = (
        "model_aliases:\n  fast:\n    target: groq/llama-3.3-70b\n    fallbacks: [gpt-5.2]\n"
        "routing_preferences:\n  - name: code\n    description: writing code\n"
        "    models: [groq/llama-3.3-70b, gpt-5.2]\n"
    )
    text = two(**{k: f"    fallbacks: {v}" for k, v in lists.items()}, extra=more)
    assert errors_of(text) == errors


def test_a_wildcard_entry_has_no_fallbacks_of_its_own() -> None:
    text = two(extra="  - model: openai/*\n    fallbacks: [gpt-5-mini]\n")
    assert errors_of(text) == [
        "fb.yaml:11: model_providers[4].fallbacks: 'openai/*' stands for any model id, so it "
        "has no fallbacks of its own: give them to a model, or to an alias"
    ]


@pytest.mark.parametrize(
    ("target", "fallbacks", "model"),
    [
        ("gpt-5-mini", "[gpt-5-mini]", MINI),
        ("gpt-5-mini", "[groq/llama-3.3-70b, {target: openai/gpt-5-mini}]", MINI),
        ("openai/gpt-4.1", "[gpt-5-mini, openai/gpt-4.1]", GPT41),  # a wildcard-served target
    ],
)
def test_an_aliases_fallbacks_may_not_name_its_own_target(
    target: str, fallbacks: str, model: str
) -> None:
    text = two(
        extra=f"  - model: openai/*\nmodel_aliases:\n  x:\n    target: {target}\n"
        f"    fallbacks: {fallbacks}\n"
    )
    assert errors_of(text) == [
        f"fb.yaml:14: model_aliases.x.fallbacks: '{model}' is the alias's own target, not a "
        "fallback"
    ]


# An alias whose fallback's own fallbacks lead back to the alias's target loads like a route
# with the same models (it was once refused as naming its own target).
def test_an_alias_whose_fallback_falls_back_to_its_target_is_like_the_same_route() -> None:
    head = two(a="    fallbacks: [claude-sonnet-4-5]")
    route = make(
        head + "routing_preferences:\n  - name: r\n    description: d\n"
        "    models: [claude-sonnet-4-5, gpt-5.2]\n"
    )
    assert names(route.chain_of_route["r"]) == [CLAUDE, GPT]
    alias = make(
        head + "model_aliases:\n  x:\n    target: claude-sonnet-4-5\n    fallbacks: [gpt-5.2]\n"
    )
    assert names(alias.chain_of_alias["x"]) == [CLAUDE, GPT]


LIST_MESSAGE = (
    "must be a list of models to try in order, e.g. [anthropic/claude-sonnet-4-5] or "
    "[{target: anthropic/claude-sonnet-4-5}], got "
)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("gpt-5-mini", "'gpt-5-mini'"),
        ("[]", "[]"),
        ("{target: gpt-5-mini}", "{'target': 'gpt-5-mini'}"),
        ("3", "3"),
        ("true", "True"),
    ],
)
def test_fallbacks_must_be_a_non_empty_list(value: str, shown: str) -> None:
    on_provider = two(a=f"    fallbacks: {value}")
    assert errors_of(on_provider) == [
        f"fb.yaml:4: model_providers[0].fallbacks: {LIST_MESSAGE}{shown}"
    ]
    on_alias = two(extra=f"model_aliases:\n  x:\n    target: gpt-5-mini\n    fallbacks: {value}\n")
    assert errors_of(on_alias) == [f"fb.yaml:13: model_aliases.x.fallbacks: {LIST_MESSAGE}{shown}"]


def test_a_wildcard_served_id_as_a_fallback_and_as_an_aliases_target() -> None:
    config = make(
        two(
            a="    fallbacks: [openai/gpt-4.1]",
            extra="  - model: openai/*\nmodel_aliases:\n  x:\n    target: openai/o3\n"
            "    fallbacks: [gpt-5.2]\n",
        )
    )
    wildcard = config.by_name["openai/*"]
    assert config.chain_of_model[GPT].members == (
        Target(config.by_name[GPT], "gpt-5.2"),
        Target(wildcard, "gpt-4.1"),
    )
    # The alias's target, then gpt-5.2 followed through its own (openai/gpt-4.1).
    assert config.chain_of_alias["x"].members == (
        Target(wildcard, "o3"),
        Target(config.by_name[GPT], "gpt-5.2"),
        Target(wildcard, "gpt-4.1"),
    )
    # A wildcard-served model has no chain of its own.
    assert set(config.chain_of_model) == {GPT}


def test_no_fallbacks_no_chains() -> None:
    config = make(
        two(
            extra="model_aliases:\n  x:\n    target: gpt-5-mini\n"
            "routing_preferences:\n  - name: code\n    description: writing code\n"
            "    models: [gpt-5-mini]\n"
        )
    )
    assert (config.chains, config.chain_of_model) == ({}, {})
    assert (config.chain_of_alias, config.chain_of_route) == ({}, {})


# --- resolve ----------------------------------------------------------------------------------


def decided(model: str | None, config: Config) -> Decision:
    decision = resolve(model, config, by_preference=False)
    assert isinstance(decision, Decision), decision
    return decision


# (model, routing, chain) for the named models of FALLBACK, and no model at all.
DECISIONS = [
    (GPT, "direct", "chain_1"),
    ("gpt-5.2", "direct", "chain_1"),  # its bare id
    ("claude-sonnet-4-5", "direct", "chain_2"),
    (AZURE, "direct", "chain_3"),
    ("corp/m", "direct", "chain_4"),
    (MINI, "direct", None),  # no fallbacks of its own
    (GROQ, "direct", None),
    (GPT41, "direct", None),  # wildcard-served: never a chain of its own
    ("fast", "alias", "chain_5"),  # its own fallbacks
    ("quick", "alias", "chain_6"),
    ("same", "alias", "chain_2"),
    ("swap", "alias", "chain_7"),  # its own, not its target's (chain_2)
    ("wide", "alias", "chain_8"),
    ("smart", "alias", "chain_2"),  # none of its own: its target's
    ("plain", "alias", None),  # none of its own, and its target has none
    (None, "default", "chain_1"),  # no model: the default's
]


@pytest.mark.parametrize(("model", "routing", "chain"), DECISIONS)
def test_the_decision_names_its_chain(
    config: Config, model: str | None, routing: str, chain: str | None
) -> None:
    decision = decided(model, config)
    assert (decision.routing, decision.chain) == (routing, chain)
    if chain is not None:
        # The chain's primary is the very model the decision serves.
        primary = config.chains[chain].primary
        assert (primary.provider, primary.model_id) == (decision.provider, decision.model_id)


def test_the_router_is_asked_and_its_fallback_is_the_defaults_chain(config: Config) -> None:
    assert resolve(None, config) is ASK_ROUTER
    for choice in (None, RouteChoice(OTHER, 0.9, {OTHER: 0.9})):
        decision = resolve_preference(choice, config)
        assert isinstance(decision, Decision)
        assert (decision.provider.name, decision.routing, decision.chain) == (
            GPT,
            "default",
            "chain_1",
        )


@pytest.mark.parametrize(
    ("route", "model", "chain"),
    [
        ("reasoning", GPT, "chain_1"),  # inline route: its model's own chain
        ("deep", CLAUDE, "chain_2"),  # one model: its own chain
        ("chat", MINI, None),  # one model without fallbacks
        ("code", CLAUDE, "chain_9"),  # several models: the route's chain, not claude's
        ("twin", CLAUDE, "chain_2"),
    ],
)
def test_a_preference_decision_names_its_routes_chain(
    config: Config, route: str, model: str, chain: str | None
) -> None:
    decision = resolve_preference(RouteChoice(route, 0.9, {route: 0.9}), config)
    assert isinstance(decision, Decision)
    assert (decision.routing, decision.route, decision.model, decision.chain) == (
        "preference",
        route,
        model,
        chain,
    )


def test_a_chain_without_a_key_for_its_primary_is_still_refused() -> None:
    # The primary's key is missing: the request cannot be sent, chain or not.
    env = {k: v for k, v in ENV.items() if k != "GROQ_API_KEY"}
    error = resolve("fast", make(env=env), by_preference=False)
    assert isinstance(error, ErrorReply) and error.code == "missing_api_key"


class _Chooses:
    """A router service that answers one route, for ``route_one``."""

    def __init__(self, route: str) -> None:
        self.route = route

    async def choose(self, messages: Sequence[object]) -> RouteChoice:
        return RouteChoice(self.route, 0.9, {self.route: 0.9, OTHER: 0.1})


def explained(config: Config, model: str | None, route: str | None = None) -> dict[str, object]:
    body: dict[str, object] = {"messages": [{"role": "user", "content": "hi"}]}
    if model is not None:
        body["model"] = model
    service = cast(RouterService, _Chooses(route)) if route is not None else None
    return asyncio.run(route_one(config, service, json.dumps(body).encode(), explain=False))


@pytest.mark.parametrize(
    ("model", "route", "fallbacks"),
    [
        (GPT, None, [CLAUDE, GROQ, MINI]),
        ("fast", None, [CORP, MINI]),
        ("smart", None, [GROQ]),
        ("wide", None, [MINI]),
        (None, None, [CLAUDE, GROQ, MINI]),  # the router failed: the default's chain
        (None, "code", [GROQ, MINI]),
        (None, "reasoning", [CLAUDE, GROQ, MINI]),
        (MINI, None, None),
        ("plain", None, None),
        (None, "chat", None),
    ],
)
def test_route_prints_the_fallbacks(
    config: Config, model: str | None, route: str | None, fallbacks: list[str] | None
) -> None:
    result = explained(config, model, route)
    assert "error" not in result, result
    assert result.get("fallbacks") == fallbacks
    assert ("fallbacks" in result) == (fallbacks is not None)


# --- the ext_proc answer ------------------------------------------------------------------------


def metadata_of(answer: object) -> dict[str, Any]:
    assert isinstance(answer, pb.ProcessingResponse), answer
    assert answer.WhichOneof("response") == "request_body", answer
    found = json_format.MessageToDict(answer.dynamic_metadata)
    return cast(dict[str, Any], found["plano"])


def ask(processor: Processor, model: str | None, api: ClientApi = OPENAI_CHAT) -> object:
    body: dict[str, object] = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 9}
    if model is not None:
        body["model"] = model
    message = pb.ProcessingRequest(request_body=pb.HttpBody(body=json.dumps(body).encode()))
    return processor.handle(message, api)


@pytest.mark.parametrize(
    ("model", "chain"), [(model, chain) for model, _, chain in DECISIONS if model is not None]
)
@pytest.mark.parametrize("api", [OPENAI_CHAT, ANTHROPIC_MESSAGES], ids=lambda a: a.name)
def test_the_answer_carries_the_chain_exactly_when_the_decision_has_one(
    config: Config, model: str, chain: str | None, api: ClientApi
) -> None:
    metadata = metadata_of(ask(Processor(config), model, api))
    assert metadata.get("chain") == chain == decided(model, config).chain
    assert ("chain" in metadata) == (chain is not None)


@pytest.mark.parametrize(
    ("route", "chain"),
    [("code", "chain_9"), ("reasoning", "chain_1"), ("chat", None), (OTHER, "chain_1")],
)
def test_a_routed_answer_carries_its_routes_chain(
    config: Config, route: str, chain: str | None
) -> None:
    processor = Processor(config)
    pending = ask(processor, None)
    assert isinstance(pending, Pending)
    metadata = metadata_of(processor.on_route_choice(pending, RouteChoice(route, 0.9, {})))
    assert metadata.get("chain") == chain
    assert ("chain" in metadata) == (chain is not None)


def test_a_token_count_answered_by_the_server_carries_the_chain_too(config: Config) -> None:
    # An OpenAI-compatible model cannot count: the estimate carries the decision's metadata.
    answer = ask(Processor(config), GPT, COUNT_TOKENS)
    assert isinstance(answer, pb.ProcessingResponse)
    assert answer.WhichOneof("response") == "immediate_response"
    found = json_format.MessageToDict(answer.dynamic_metadata)["plano"]
    assert found["chain"] == "chain_1"


def test_two_aliases_of_one_target_keep_their_own_chains(config: Config) -> None:
    # fast and quick both serve groq, each with its own fallbacks: the template cache is
    # keyed by the chain, so neither answer takes the other's.
    processor = Processor(config)
    seen = [metadata_of(ask(processor, alias))["chain"] for alias in ("fast", "quick", "fast")]
    assert seen == ["chain_5", "chain_6", "chain_5"]
    assert metadata_of(ask(processor, GROQ)).get("chain") is None
    # One template per decision (the client's API and stream flag are part of the key).
    assert {key[:4] for key in processor._templates} == {
        (GROQ, "alias", None, "chain_5"),
        (GROQ, "alias", None, "chain_6"),
        (GROQ, "direct", None, None),
    }
    assert len(processor._templates) == 3


# --- Envoy: a config without fallbacks renders as before ------------------------------------------

# Every piece a chain adds, as it shows in the rendered YAML.
FALLBACK_WORDS = (
    "envoy.clusters.aggregate",
    "outlier_detection",
    "include_request_attempt_count",
    "x-plano-fallback",
    "x-plano-host-target",
    "plano-served-model",
    "plano-attempts",
    "x-envoy-attempt-count",
    "UPSTREAM_REQUEST_ATTEMPT_COUNT",
    "previous_priorities",
    "upstream_codec",
    "member_",
    "chain_",
    "response_headers_to_remove",
    "response_headers_to_add",
)


def hcm_of(boot: dict[str, Any]) -> dict[str, Any]:
    listener = boot["static_resources"]["listeners"][0]
    return cast(dict[str, Any], listener["filter_chains"][0]["filters"][0]["typed_config"])


def vhost_of(boot: dict[str, Any]) -> dict[str, Any]:
    return cast(dict[str, Any], hcm_of(boot)["route_config"]["virtual_hosts"][0])


def clusters_of(boot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in boot["static_resources"]["clusters"]}


def our_response_rules(boot: dict[str, Any]) -> list[dict[str, Any]]:
    first = hcm_of(boot)["http_filters"][0]
    assert first["name"] == "envoy.filters.http.header_mutation"
    return cast(list[dict[str, Any]], first["typed_config"]["mutations"]["response_mutations"])


# A wildcard, an alias to a wildcard-served id and a top-level route, none with fallbacks.
WITHOUT = two(
    extra="  - model: openai/*\nmodel_aliases:\n  x:\n    target: openai/gpt-4.1\n"
    "routing_preferences:\n  - name: code\n    description: writing code\n"
    "    models: [gpt-5-mini]\n"
)
NO_FALLBACK_CONFIGS = [pytest.param(path, id=path.name) for path in SHIPPED] + [
    pytest.param(WITHOUT, id="aliases-and-routes-without-fallbacks")
]


def test_the_reference_bootstrap_has_no_fallback_piece() -> None:
    # envoy/plano.envoy.yaml was last rendered before fallbacks existed: config/plano.yaml
    # still renders to it byte for byte (as test_envoy_config checks too), with no chain piece.
    config = load_config(ROOT / "config" / "plano.yaml", env={})
    expected = render_yaml(config)
    assert REFERENCE.read_text() == expected
    # Without the access log, whose fields name the attempts and the served model always.
    routing = render_yaml(config, EnvoyOptions(access_log=None))
    for word in FALLBACK_WORDS:
        assert word not in routing, word


@pytest.mark.parametrize("source", NO_FALLBACK_CONFIGS)
def test_a_config_without_fallbacks_renders_no_fallback_piece(source: Path | str) -> None:
    config = load_config(source, env={}) if isinstance(source, Path) else make(source)
    assert config.chains == {}
    # The access log names the attempts and the served model for every request, chains or
    # not (a field that reads nothing without one): what is checked here is the routing.
    boot = render_bootstrap(config, EnvoyOptions(access_log=None))
    text = yaml.safe_dump(boot)
    for word in FALLBACK_WORDS:
        assert word not in text, word
    assert set(clusters_of(boot)) == {"plano_extproc", *config.clusters}
    assert "include_request_attempt_count" not in vhost_of(boot)
    # our_headers without the served/attempts rules: removal, then the decision's three.
    rules = our_response_rules(boot)
    assert [r.get("append", {}).get("header", {}).get("key") for r in rules] == [
        None,
        "x-plano-model",
        "x-plano-routing",
        "x-plano-route",
    ]


# --- Envoy: the pieces of a chain -----------------------------------------------------------------


@pytest.fixture(scope="module")
def boot(config: Config) -> dict[str, Any]:
    return render_bootstrap(config, EnvoyOptions())


def test_one_member_cluster_per_distinct_member(config: Config, boot: dict[str, Any]) -> None:
    found = clusters_of(boot)
    members = {n: c for n, c in found.items() if n.startswith("member_")}
    assert list(members) == list(MEMBERS.values())  # first-seen order, each member once
    targets = {m.name: m for chain in config.chains.values() for m in chain.members}
    for model, name in MEMBERS.items():
        cluster = members[name]
        provider = targets[model].provider
        own = found[provider.cluster]  # the provider's own cluster: same endpoint, TLS, limits
        (endpoints,) = cluster["load_assignment"]["endpoints"]
        (host,) = endpoints["lb_endpoints"]
        (own_host,) = own["load_assignment"]["endpoints"][0]["lb_endpoints"]
        assert host["metadata"] == {"filter_metadata": {"plano": {"target": model}}}
        assert host["endpoint"]["address"] == own_host["endpoint"]["address"]
        expected_host = provider.http_host or own_host["endpoint"]["hostname"]
        assert host["endpoint"]["hostname"] == expected_host
        for key in ("type", "transport_socket", "circuit_breakers", "connect_timeout"):
            assert cluster.get(key) == own.get(key), (name, key)
        assert cluster["outlier_detection"] == {
            "interval": "5s",
            "base_ejection_time": "30s",
            "max_ejection_percent": 100,
            "consecutive_gateway_failure": 3,
            "enforcing_consecutive_gateway_failure": 100,
        }
    # The http_host member's endpoint is named by it; its TLS still checks the real host.
    corp = members[MEMBERS[CORP]]
    assert corp["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["hostname"] == (
        "llm.internal"
    )
    assert corp["transport_socket"]["typed_config"]["sni"] == "llm.corp.example"
    # The plain provider cluster is untouched by it.
    plain = found[config.by_name[CORP].cluster]["load_assignment"]["endpoints"][0]
    assert plain["lb_endpoints"][0]["endpoint"]["hostname"] == "llm.corp.example"
    assert "outlier_detection" not in found[config.by_name[CORP].cluster]


UPSTREAM_FILTERS = [
    "plano.host_target",
    "plano.fallback_attempt",
    "plano.host_target_out",
    "envoy.filters.http.upstream_codec",
]


def upstream_filters(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    options = cluster["typed_extension_protocol_options"]
    (protocol,) = options.values()
    assert protocol["@type"] == (
        "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    )
    assert list(options) == ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    return cast(list[dict[str, Any]], protocol["http_filters"])


def test_one_aggregate_cluster_per_chain_over_its_members(
    config: Config, boot: dict[str, Any]
) -> None:
    found = clusters_of(boot)
    assert [n for n in found if n.startswith("chain_")] == list(CHAINS)
    for cid, models in CHAINS.items():
        cluster = found[cid]
        assert cluster["cluster_type"] == {
            "name": "envoy.clusters.aggregate",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig",
                "clusters": [MEMBERS[m] for m in models],
            },
        }
        assert cluster["lb_policy"] == "CLUSTER_PROVIDED"
        assert "load_assignment" not in cluster and "type" not in cluster
        limit = config.listener.max_concurrent_requests
        assert cluster["circuit_breakers"] == {
            "thresholds": [
                {"max_connections": limit, "max_pending_requests": limit,
                 "max_requests": limit, "max_retries": limit}
            ]
        }  # fmt: skip
        assert [f["name"] for f in upstream_filters(cluster)] == UPSTREAM_FILTERS


def test_the_circuit_breakers_of_a_chain_follow_max_concurrent_requests() -> None:
    text = FALLBACK.replace("timeout: 45s", "timeout: 45s\n    max_concurrent_requests: 77")
    found = clusters_of(render_bootstrap(make(text), EnvoyOptions()))
    for name in (*CHAINS, *MEMBERS.values()):
        assert found[name]["circuit_breakers"]["thresholds"][0]["max_retries"] == 77, name


MEMBER_VALUE = "%UPSTREAM_METADATA(plano:target)%"


def test_the_upstream_filters_name_the_member_and_clean_up(boot: dict[str, Any]) -> None:
    for cid in CHAINS:
        host_target, _, out, codec = upstream_filters(clusters_of(boot)[cid])
        mutations = host_target["typed_config"]["mutations"]
        assert mutations == {
            "request_mutations": [
                {"append": {"header": {"key": "x-plano-host-target", "value": MEMBER_VALUE},
                            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}}
            ],
            "response_mutations": [
                {"append": {"header": {"key": "plano-served-model", "value": MEMBER_VALUE},
                            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}}
            ],
        }  # fmt: skip
        assert out["typed_config"]["mutations"] == {
            "request_mutations": [
                {"remove": "x-plano-host-target"},
                {"remove": "x-envoy-attempt-count"},
            ]
        }
        assert codec["typed_config"]["@type"] == (
            "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"
        )


HEADER_INPUT = "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput"
EXECUTE = "type.googleapis.com/envoy.extensions.filters.http.composite.v3.ExecuteFilterAction"


def executed(matcher: dict[str, Any], headers: dict[str, str]) -> dict[str, Any] | None:
    """The filter the composite filter's xDS matcher makes for a request with ``headers``
    (None: it makes none, and the attempt goes as the decision readied it)."""
    tree = matcher["matcher_tree"]
    assert set(tree) == {"input", "exact_match_map"}
    assert tree["input"]["typed_config"]["@type"] == HEADER_INPUT
    value = headers.get(tree["input"]["typed_config"]["header_name"])
    on_match = tree["exact_match_map"]["map"].get(value, matcher.get("on_no_match"))
    if on_match is None:
        return None
    if "matcher" in on_match:
        return executed(on_match["matcher"], headers)
    action = on_match["action"]["typed_config"]
    assert action["@type"] == EXECUTE
    filter_config: dict[str, Any] = action["typed_config"]
    return filter_config


def test_the_fallback_stream_is_made_for_every_attempt_but_the_primarys_first(
    config: Config, boot: dict[str, Any]
) -> None:
    for cid, models in CHAINS.items():
        attempt = upstream_filters(clusters_of(boot)[cid])[1]["typed_config"]
        assert attempt["@type"] == (
            "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher"
        )
        # The composite filter makes the ext_proc filter only when the matcher says so, so
        # the primary's first attempt pays neither the filter nor a stream: it makes an
        # empty header_mutation there (a nested matcher that matched nothing would fall
        # back on the outer on_no_match, which makes the ext_proc filter).
        assert attempt["extension_config"]["name"] == "envoy.filters.http.composite"
        matcher = attempt["xds_matcher"]
        tree = matcher["matcher_tree"]
        assert tree["input"]["typed_config"]["header_name"] == "x-plano-host-target"
        assert list(tree["exact_match_map"]["map"]) == [models[0]]
        inner = tree["exact_match_map"]["map"][models[0]]["matcher"]["matcher_tree"]
        assert inner["input"]["typed_config"]["header_name"] == "x-envoy-attempt-count"
        assert list(inner["exact_match_map"]["map"]) == ["1"]
        for member in models:
            for count in ("1", "2", "3", "10"):
                headers = {"x-plano-host-target": member, "x-envoy-attempt-count": count}
                made = executed(matcher, headers)
                assert made is not None
                as_decided = member == models[0] and count == "1"
                expected = (
                    "envoy.filters.http.header_mutation"
                    if as_decided
                    else "envoy.filters.http.ext_proc"
                )
                assert made["name"] == expected, headers
                if as_decided:
                    assert set(made["typed_config"]) == {"@type"}  # does nothing
        missing_count = executed(matcher, {"x-plano-host-target": models[0]})
        assert missing_count is not None
        assert missing_count["name"] == "envoy.filters.http.ext_proc"


def test_the_fallback_stream_names_its_chain_and_fails_closed(boot: dict[str, Any]) -> None:
    for cid in CHAINS:
        attempt = upstream_filters(clusters_of(boot)[cid])[1]["typed_config"]
        extension = executed(
            attempt["xds_matcher"], {"x-plano-host-target": "another", "x-envoy-attempt-count": "1"}
        )
        assert extension is not None
        assert extension["name"] == "envoy.filters.http.ext_proc"
        processor = extension["typed_config"]
        assert processor["@type"] == (
            "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"
        )
        service = processor["grpc_service"]
        assert service["envoy_grpc"] == {"cluster_name": "plano_extproc"}
        assert service["initial_metadata"] == [{"key": "x-plano-fallback", "value": cid}]
        assert processor["allow_mode_override"] is True
        # proto3 leaves false out of the rendering: never true.
        assert processor.get("failure_mode_allow", False) is False
        assert processor["processing_mode"] == {
            "request_header_mode": "SEND",
            "response_header_mode": "SEND",
            "request_body_mode": "BUFFERED",
            "response_body_mode": "STREAMED",
            "request_trailer_mode": "SKIP",
            "response_trailer_mode": "SKIP",
        }
        assert processor["mutation_rules"] == {"allow_all_routing": True}
        assert processor["status_on_error"] == {"code": "BadGateway"}
    # The decision's own ext_proc filter stays as it was: no fallback metadata there.
    decision = hcm_of(boot)["http_filters"][1]
    assert decision["name"] == "envoy.filters.http.ext_proc"
    assert "initial_metadata" not in decision["typed_config"]["grpc_service"]


def provider_routes(boot: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in vhost_of(boot)["routes"] if "route" in r]


def test_chain_routes_come_before_every_provider_route(
    config: Config, boot: dict[str, Any]
) -> None:
    found = [r["name"] for r in provider_routes(boot)]
    chained = [f"{api}:{cid}" for cid in CHAINS for api in ("chat", "messages")]
    assert found[: len(chained)] == chained
    # Never a token count's: the chain routes are for generations only.
    assert not [n for n in found[len(chained) :] if "chain_" in n]
    assert not any(n.startswith("messages_count_tokens:chain") for n in found)
    # After them, the provider routes as they were: one per (API, provider).
    assert len(found) == len(chained) + 2 * len(config.providers) + sum(
        p.interface == "anthropic" for p in config.providers
    )


def matched_on(r: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for m in r["match"].get("dynamic_metadata", []):
        assert m["filter"] == "plano"
        (segment,) = m["path"]
        out.append((segment["key"], m["value"]["string_match"]["exact"]))
    return out


def by_name(boot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in vhost_of(boot)["routes"]}


RETRY_ON = "connect-failure,refused-stream,reset,5xx,retriable-status-codes"


@pytest.mark.parametrize("api", ["chat", "messages"])
def test_a_chain_route_is_its_primarys_route_sent_along_the_chain(
    config: Config, boot: dict[str, Any], api: str
) -> None:
    routes = by_name(boot)
    for cid, models in CHAINS.items():
        chain = config.chains[cid]
        primary = chain.primary.provider
        r = routes[f"{api}:{cid}"]
        own = routes[f"{api}:{primary.name}"]
        assert matched_on(r) == [("provider", primary.name), ("chain", cid)]
        assert r["match"]["safe_regex"] == own["match"]["safe_regex"]
        action = r["route"]
        assert action["cluster"] == cid
        assert action["retry_policy"] == {
            "retry_on": RETRY_ON,
            "num_retries": len(models) - 1,
            "per_try_idle_timeout": "45s",  # the listener's timeout
            "retry_priority": {
                "name": "envoy.retry_priorities.previous_priorities",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.retry.priority."
                    "previous_priorities.v3.PreviousPrioritiesConfig",
                    "update_frequency": 1,
                },
            },
            "retriable_status_codes": [429],
            "retry_back_off": {"base_interval": "0.010s", "max_interval": "0.050s"},
        }
        # Host from each attempt's member endpoint, never the primary's literal http_host.
        assert action["auto_host_rewrite"] is True
        assert "host_rewrite_literal" not in action
        # Everything else is the primary's: the path rewrite, the key, the headers, the
        # translation override and Azure's api-version query.
        for key in ("regex_rewrite", "path_rewrite", "timeout", "idle_timeout"):
            assert action.get(key) == own["route"].get(key), (cid, key)
        for key in ("request_headers_to_add", "request_headers_to_remove"):
            assert r.get(key) == own.get(key), (cid, key)
        for key in ("typed_per_filter_config",):
            assert r.get(key) == own.get(key), (cid, key)
        assert r["response_headers_to_add"] == [
            {
                "header": {"key": "plano-attempts", "value": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%"},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ]
        assert "response_headers_to_remove" not in r


def test_the_chain_routes_keep_what_is_special_about_their_primary(boot: dict[str, Any]) -> None:
    routes = by_name(boot)
    # Azure: the deployment path and the api-version query.
    azure = routes["chat:chain_3"]
    assert azure["route"]["path_rewrite"] == "/base/openai/deployments/gpt-4o/chat/completions"
    assert "plano.provider_query" in azure["typed_per_filter_config"]
    # An anthropic primary for a chat client: the response filter translates.
    translated = routes["chat:chain_2"]["typed_per_filter_config"]["plano.translate_responses"]
    metadata = translated["overrides"]["grpc_initial_metadata"]
    assert metadata == [{"key": "x-plano-translate", "value": "openai>anthropic"}]
    assert "plano.translate_responses" not in routes["messages:chain_2"].get(
        "typed_per_filter_config", {}
    )
    # The primary with http_host: its plain route keeps the literal, its chain route does not.
    assert routes["chat:corp/m"]["route"]["host_rewrite_literal"] == "llm.internal"
    assert routes["chat:chain_4"]["route"]["auto_host_rewrite"] is True
    # A wildcard-served primary: the wildcard entry's route, matched with the chain.
    assert matched_on(routes["chat:chain_8"]) == [("provider", "openai/*"), ("chain", "chain_8")]


def test_the_other_provider_routes_drop_a_providers_internal_headers(boot: dict[str, Any]) -> None:
    plain = [r for r in provider_routes(boot) if "chain_" not in r["name"]]
    assert plain
    for r in plain:
        assert [k for k, _ in matched_on(r)] == ["provider"], r["name"]
        assert r["response_headers_to_remove"] == ["plano-served-model", "plano-attempts"]
        assert "response_headers_to_add" not in r
        assert r["route"]["retry_policy"]["retry_on"] == (
            "connect-failure,refused-stream,reset-before-request,retriable-headers"
        )
        assert not r["route"]["cluster"].startswith(("chain_", "member_"))
    # The routes Envoy answers itself have nothing to drop.
    for r in vhost_of(boot)["routes"]:
        if "direct_response" in r:
            assert "response_headers_to_remove" not in r, r["name"]


def test_the_virtual_host_counts_attempts(boot: dict[str, Any]) -> None:
    assert vhost_of(boot)["include_request_attempt_count"] is True


def test_our_headers_name_the_member_that_answered_and_the_attempts(
    boot: dict[str, Any],
) -> None:
    rules = our_response_rules(boot)
    assert rules[0] == {"remove_on_match": {"key_matcher": {"prefix": "x-plano-"}}}
    added = [(r["append"]["header"]["key"], r["append"]["header"]["value"]) for r in rules[1:6]]
    # The member that answered comes after the decision's model, so it wins when set.
    assert added == [
        ("x-plano-model", "%DYNAMIC_METADATA(plano:model)%"),
        ("x-plano-routing", "%DYNAMIC_METADATA(plano:routing)%"),
        ("x-plano-route", "%DYNAMIC_METADATA(plano:route)%"),
        ("x-plano-model", "%RESP(plano-served-model)%"),
        ("x-plano-attempts", "%RESP(plano-attempts)%"),
    ]
    for r in rules[1:6]:
        assert r["append"]["append_action"] == "OVERWRITE_IF_EXISTS_OR_ADD"
        assert not r["append"].get("keep_empty_value", False)  # absent: the decision's stays
    assert rules[6:] == [{"remove": "plano-served-model"}, {"remove": "plano-attempts"}]
    # The request side is unchanged: every x-plano-* header of the client's goes.
    first = hcm_of(boot)["http_filters"][0]["typed_config"]["mutations"]
    assert first["request_mutations"] == [rules[0]]


def take(boot: dict[str, Any], path: str, metadata: dict[str, str]) -> str:
    """The name of the first route Envoy's router takes for a POST to ``path`` once the
    server's answer filed ``metadata`` (every matcher of a route must hold)."""
    for r in vhost_of(boot)["routes"]:
        match = r["match"]
        if not re.fullmatch(match["safe_regex"]["regex"], path):
            continue
        if any(h["string_match"] != {"exact": "POST"} for h in match.get("headers", [])):
            continue
        wanted = match.get("dynamic_metadata", [])
        if all(metadata.get(k) == v for k, v in matched_on(r)) and (wanted or not metadata):
            return cast(str, r["name"])
    raise AssertionError(f"no route for {path} {metadata}")


@pytest.mark.parametrize(
    ("model", "route"),
    [
        (GPT, "chain_1"),
        ("fast", "chain_5"),
        ("quick", "chain_6"),
        ("smart", "chain_2"),
        ("wide", "chain_8"),
        (GROQ, f"{GROQ}"),  # the same provider as fast's and quick's primary, no chain
        ("plain", MINI),
        (GPT41, "openai/*"),  # the same entry as wide's primary, no chain
    ],
)
def test_each_decision_takes_its_chains_route_or_its_providers(
    config: Config, boot: dict[str, Any], model: str, route: str
) -> None:
    for api, path in ((OPENAI_CHAT, "/v1/chat/completions"), (ANTHROPIC_MESSAGES, "/v1/messages")):
        metadata = {k: v for k, v in metadata_of(ask(Processor(config), model, api)).items()}
        prefix = "chat" if api is OPENAI_CHAT else "messages"
        assert take(boot, path, metadata) == f"{prefix}:{route}"
    # Before the decision: the entry route.
    assert take(boot, "/v1/chat/completions", {}) == "chat"


def test_a_token_count_with_a_chain_takes_the_plain_count_route(
    config: Config, boot: dict[str, Any]
) -> None:
    decision = resolve(CLAUDE, config, by_preference=False)
    assert isinstance(decision, Decision) and decision.chain == "chain_2"
    metadata = {"provider": CLAUDE, "chain": "chain_2"}
    assert take(boot, "/v1/messages/count_tokens", metadata) == f"messages_count_tokens:{CLAUDE}"


def test_a_bootstrap_with_chains_passes_envoy_validation(config: Config) -> None:
    validate_with_envoy(render_yaml(config))


def test_a_model_without_fallbacks_retries_only_a_short_retry_after(boot: dict[str, Any]) -> None:
    """Off a chain: a retry-after within the listener's retry_after_max (2 s by default) is
    retried on the same provider once it has passed; a longer one matches nothing, so Envoy
    (which would drop it and retry at once) does not retry at all."""
    plain = [r for r in provider_routes(boot) if "chain_" not in r["name"]]
    for r in plain:
        policy = r["route"]["retry_policy"]
        (matcher,) = policy["retriable_headers"]
        assert matcher["name"] == "retry-after"
        regex = re.compile(matcher["safe_regex_match"]["regex"])
        assert [v for v in ("0", "1", "2", " 2 ", "3", "30", "1.5", "") if regex.search(v)] == [
            "0",
            "1",
            "2",
            " 2 ",
        ]
        backoff = policy["rate_limited_retry_back_off"]
        assert backoff["reset_headers"] == [{"name": "retry-after"}]  # SECONDS, the default
        assert backoff["max_interval"] == "2s"
    # A chain's routes never wait: the next attempt is another member's.
    for r in provider_routes(boot):
        if "chain_" in r["name"]:
            assert "rate_limited_retry_back_off" not in r["route"]["retry_policy"]
            assert "retriable_headers" not in r["route"]["retry_policy"]


@pytest.mark.parametrize(("value", "seconds"), [("0", 0), ("0s", 0), ("5s", 5), ("1m", 60), (3, 3)])
def test_retry_after_max_takes_whole_seconds_up_to_a_minute(value: object, seconds: int) -> None:
    text = f"listeners:\n  egress_traffic:\n    retry_after_max: {value}\n" + (
        "llm_providers:\n  - model: openai/gpt-5\n"
    )
    assert parse_config(text, "p.yaml", {}).listener.retry_after_max_s == seconds


@pytest.mark.parametrize("value", ["61s", "1.5s", "soon", "-1"])
def test_retry_after_max_refuses_other_values(value: str) -> None:
    text = f"listeners:\n  egress_traffic:\n    retry_after_max: '{value}'\n" + (
        "llm_providers:\n  - model: openai/gpt-5\n"
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, "p.yaml", {})
    assert info.value.errors == [
        "p.yaml:3: listeners.egress_traffic.retry_after_max: must be whole seconds from 0 "
        f"(never) to 60s, e.g. 2s, got '{value}'"
    ]


def test_retry_after_max_zero_turns_the_same_provider_retry_off() -> None:
    text = "listeners:\n  egress_traffic:\n    retry_after_max: 0\nllm_providers:\n" + (
        "  - model: openai/gpt-5\n"
    )
    boot = render_bootstrap(parse_config(text, "p.yaml", {}), EnvoyOptions())
    for r in provider_routes(boot):
        assert r["route"]["retry_policy"]["retry_on"] == (
            "connect-failure,refused-stream,reset-before-request"
        )

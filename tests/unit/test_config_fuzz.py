"""The config parser on arbitrary files shaped like Plano's (either format): it returns a
Config or raises ConfigError with located messages, never anything else, and a Config it
returns renders an Envoy bootstrap."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from plano_extproc.config import Config, ConfigError, parse_config
from plano_extproc.envoy_config import render_bootstrap
from plano_extproc.envoy_config.options import DEFAULTS

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
_ANY = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
_GOOD_MODELS = st.sampled_from(
    [
        "openai/gpt-5",
        "openai/*",
        "anthropic/*",
        "anthropic/claude-sonnet-4-5",
        "azure_openai/dep-1",
        "azure_openai/*",
        "groq/llama",
        "together/meta-llama/Llama-3",
    ]
)
_BAD_MODELS = st.sampled_from(
    ["azure_openai/bad name", "amazon_bedrock/nova", "chatgpt/gpt-5", "acme/m", "gpt-5", "*"]
)
_MODELS = st.one_of(_GOOD_MODELS, _GOOD_MODELS, _GOOD_MODELS, _BAD_MODELS)
_TARGETS = st.one_of(
    _MODELS, st.sampled_from(["gpt-4o", "claude-x", "openai/gpt-4.1", "mistral-large"])
)


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a value of the kind the key takes, sometimes anything at all."""
    return st.one_of(strategy, strategy, strategy, strategy, strategy, _ANY)


_PROVIDER = st.fixed_dictionaries(
    {"model": _maybe(_MODELS)},
    optional={
        "access_key": _maybe(st.sampled_from(["k", "$KEY", "${MISSING}"])),
        "default": _maybe(st.booleans()),
        "base_url": _maybe(
            st.sampled_from(["http://127.0.0.1:9/v1", "https://x.example", "ftp://x"])
        ),
        "provider_interface": _maybe(
            st.sampled_from(["openai", "anthropic", "claude", "groq", "chatgpt", "plano", "x"])
        ),
        "routing_preferences": _maybe(
            st.lists(
                st.fixed_dictionaries(
                    {
                        "name": _maybe(st.text(max_size=6)),
                        "description": _maybe(st.text(max_size=6)),
                    }
                ),
                max_size=2,
            )
        ),
        "headers": _maybe(
            st.dictionaries(
                st.sampled_from(["x-a", "host", "bad name", "x-plano-x"]),
                _maybe(st.sampled_from(["v", "$X", "a\nb"])),
                max_size=2,
            )
        ),
        "http_host": _maybe(st.sampled_from(["h.example", "h:80", "bad host"])),
        "passthrough_auth": _maybe(st.booleans()),
        "api_version": _maybe(st.sampled_from(["2024-10-21", "bad version!"])),
        "name": _ANY,
    },
)
_LIST_LISTENER = st.fixed_dictionaries(
    {"type": _maybe(st.sampled_from(["model", "prompt", "agent", "other"]))},
    optional={
        "name": _ANY,
        "port": _maybe(st.integers(min_value=0, max_value=70000)),
        "timeout": _maybe(st.sampled_from(["30s", "5m", "0s", "soon"])),
        "router": _ANY,
    },
)
_LISTENERS = st.one_of(
    st.lists(_LIST_LISTENER, max_size=3),
    st.fixed_dictionaries({}, optional={"egress_traffic": _ANY, "ingress_traffic": _ANY}),
    _ANY,
)
_CONFIG = st.fixed_dictionaries(
    {},
    optional={
        "version": _maybe(st.sampled_from(["v0.3.0", "v0.1", "0.2.0", "v9"])),
        "listeners": _LISTENERS,
        "model_aliases": _maybe(
            st.dictionaries(
                st.text(min_size=1, max_size=6),
                st.fixed_dictionaries({"target": _maybe(_TARGETS)}),
                max_size=2,
            )
        ),
        "routing_preferences": _maybe(
            st.lists(
                st.fixed_dictionaries(
                    {
                        "name": _maybe(st.text(max_size=6)),
                        "description": _maybe(st.text(max_size=6)),
                    },
                    optional={
                        "models": _maybe(st.lists(_TARGETS, max_size=3)),
                        "selection_policy": _ANY,
                    },
                ),
                max_size=2,
            )
        ),
        "routing": _maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "router": _maybe(st.sampled_from(["embedded", "none"])),
                    "route_on_user_only": _ANY,
                    "session_ttl_seconds": _ANY,
                },
            )
        ),
        "tracing": _ANY,
        "overrides": _ANY,
    },
)


@st.composite
def _configs(draw: st.DrawFn) -> dict[str, Any]:
    """A file in either format: one provider key mostly, now and then both (refused)."""
    data: dict[str, Any] = draw(_CONFIG)
    keys = draw(
        st.sampled_from(
            [["model_providers"]] * 4
            + [["llm_providers"]] * 4
            + [["model_providers", "llm_providers"]]
        )
    )
    for key in keys:
        data[key] = draw(_maybe(st.lists(_PROVIDER, min_size=1, max_size=4)))
    return data


@seed(15)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_configs())
def test_any_config_is_a_config_or_located_errors(data: dict[str, Any]) -> None:
    text = yaml.safe_dump(data, sort_keys=False)
    try:
        config = parse_config(text, "plano.yaml", {"KEY": "secret"})
    except ConfigError as exc:
        assert exc.errors and all(e.startswith("plano.yaml") for e in exc.errors)
        return
    assert isinstance(config, Config) and config.providers
    assert all(w.startswith("plano.yaml") for w in config.warnings)
    render_bootstrap(config, DEFAULTS)

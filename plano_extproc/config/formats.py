"""Plano's config formats, as far as the gateway reads them: the keys each format names the
same things by, and Plano's keys this gateway does not implement (yet).

Plano's current format (v0.3 on) lists providers under ``model_providers`` and listeners as a
list of ``{type: model|prompt|agent, name, port...}``; the legacy one has ``llm_providers`` and
``listeners: {egress_traffic: {...}}``. A file is in one or the other: both provider keys at
once is refused. Plano's keys for features this gateway does not have are accepted and named
in one warning; a key Plano does not have either is an error, as any unknown key.
"""

from __future__ import annotations

# Plano's config schema accepts these ``version`` strings.
VERSIONS = ("v0.1", "v0.1.0", "0.1-beta", "0.2.0", "v0.3.0", "v0.4.0")

CURRENT_PROVIDERS, LEGACY_PROVIDERS = "model_providers", "llm_providers"

LISTENER_TYPES = ("model", "prompt", "agent")
# In the list format only the ``type: model`` listener is an LLM gateway: this one.
MODEL_LISTENER = "model"

# Plano's keys this gateway accepts and ignores, with a warning, per section.
UNIMPLEMENTED_TOP = (
    "agents",
    "endpoints",
    "filters",
    "mode",
    "model_metrics_sources",
    "overrides",
    "prompt_guards",
    "prompt_targets",
    "ratelimits",
    "state_storage",
    "system_prompt",
)
UNIMPLEMENTED_LISTENER = ("agents", "input_filters", "max_retries", "output_filters", "router")
UNIMPLEMENTED_LEGACY_LISTENERS = ("ingress_traffic",)
UNIMPLEMENTED_PROVIDER = ("name",)
UNIMPLEMENTED_ROUTING = (
    "llm_provider",
    "model",
    "session_cache",
    "session_max_entries",
    "session_ttl_seconds",
)
UNIMPLEMENTED_PREFERENCE = ("selection_policy",)
# Plano's ``tracing`` keys beyond the collector's address and the sampling percentage.
UNIMPLEMENTED_TRACING = ("exporters", "sampling_rate", "span_attributes", "trace_arch_internal")

# Plano's ``provider_interface`` values -> the API the gateway speaks to that provider.
# "claude" is Plano's name for Anthropic's Messages API; the others are OpenAI-compatible.
PLANO_INTERFACES = {
    "claude": "anthropic",
    "deepseek": "openai",
    "digitalocean": "openai",
    "gemini": "openai",
    "groq": "openai",
    "mistral": "openai",
    "moonshotai": "openai",
    "openrouter": "openai",
    "vercel": "openai",
    "xiaomi": "openai",
}
# Plano's values for APIs this gateway cannot speak, and why.
UNSUPPORTED_INTERFACES = {
    "chatgpt": "ChatGPT's subscription backend (the Responses API through a ChatGPT login)",
    "plano": "Plano's own hosted models",
}


def describe(provider_key: str, listeners: object, version: object) -> str:
    """The format a file is in, as ``validate`` prints it."""
    name = "Plano v0.3+" if provider_key == CURRENT_PROVIDERS else "legacy Plano"
    if isinstance(listeners, list):
        shape = "listeners as a list"
    elif isinstance(listeners, dict):
        shape = "listeners.egress_traffic"
    else:
        shape = "default listener"
    parts = [provider_key, shape] + ([f"version {version}"] if isinstance(version, str) else [])
    return f"{name} ({', '.join(parts)})"

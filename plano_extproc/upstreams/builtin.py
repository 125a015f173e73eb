"""Built-in providers: where each well-known LLM API lives and how it takes a key.

A data table, not branches: adding a provider is adding a row. Each row names the API its
provider speaks (``interface``): OpenAI's chat completions at ``base_url`` +
``/chat/completions``, or Anthropic's Messages at ``base_url`` + ``/messages``. A config entry
may say otherwise with ``provider_interface`` (e.g. Anthropic through its OpenAI-compatible
endpoint, which Anthropic means for testing and comparing models, not for production).
The APIs themselves are the other modules of this package.

The names are Plano's, with its aliases (``google`` is ``gemini``...), so that a Plano config
loads as it is; README "Providers" has the table with what each one needs.
"""

from __future__ import annotations

from dataclasses import dataclass

# Azure OpenAI's latest generally available data-plane version with a date.
AZURE_API_VERSION = "2024-10-21"


@dataclass(frozen=True)
class ProviderSpec:
    # None: the config must give one (``note`` says what it looks like).
    base_url: str | None
    interface: str = "openai"  # the API it speaks unless the config says otherwise
    # The key's header and the text before the key, when not the API's own.
    auth_header: str | None = None
    auth_prefix: str = ""
    # Set: Azure OpenAI's deployment API (the model id is the deployment, in the path, and
    # this is the default ``api-version`` query).
    api_version: str | None = None
    # Model-id prefixes of the provider's own models: where a bare id goes when several
    # ``provider/*`` entries could take it.
    families: tuple[str, ...] = ()
    note: str = ""


_OPENAI_MODELS = ("gpt-", "o1", "o3", "o4-", "chatgpt-", "ft:gpt-", "codex-", "computer-use-")
_GEMINI_MODELS = ("gemini-", "gemma-")
_TOGETHER = ProviderSpec("https://api.together.xyz/v1")
_GEMINI = ProviderSpec(
    "https://generativelanguage.googleapis.com/v1beta/openai", families=_GEMINI_MODELS
)
_DIGITALOCEAN = ProviderSpec("https://inference.do-ai.run/v1")

BUILTIN_PROVIDERS: dict[str, ProviderSpec] = {
    "openai": ProviderSpec("https://api.openai.com/v1", families=_OPENAI_MODELS),
    "anthropic": ProviderSpec("https://api.anthropic.com/v1", "anthropic", families=("claude-",)),
    "azure_openai": ProviderSpec(
        None,
        auth_header="api-key",
        api_version=AZURE_API_VERSION,
        families=_OPENAI_MODELS,
        note="your resource's endpoint, e.g. https://<resource>.openai.azure.com",
    ),
    "gemini": _GEMINI,
    "google": _GEMINI,
    "groq": ProviderSpec("https://api.groq.com/openai/v1"),
    "mistral": ProviderSpec(
        "https://api.mistral.ai/v1",
        families=(
            "mistral-",
            "open-mistral-",
            "codestral-",
            "devstral-",
            "magistral-",
            "ministral-",
            "pixtral-",
        ),
    ),
    "deepseek": ProviderSpec("https://api.deepseek.com/v1", families=("deepseek-",)),
    "together_ai": _TOGETHER,
    "together": _TOGETHER,
    "xai": ProviderSpec("https://api.x.ai/v1", families=("grok-",)),
    "moonshotai": ProviderSpec("https://api.moonshot.ai/v1", families=("kimi-", "moonshot-")),
    "zhipu": ProviderSpec("https://open.bigmodel.cn/api/paas/v4", families=("glm-",)),
    "qwen": ProviderSpec(
        None,
        families=("qwen", "qwq-", "qvq-"),
        note="DashScope's OpenAI-compatible endpoint, e.g. "
        "https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
    ),
    "xiaomi": ProviderSpec("https://api.xiaomimimo.com/v1", families=("mimo-",)),
    "digitalocean": _DIGITALOCEAN,
    "do": _DIGITALOCEAN,
    "do_ai": _DIGITALOCEAN,
    "vercel": ProviderSpec("https://ai-gateway.vercel.sh/v1"),
    "openrouter": ProviderSpec("https://openrouter.ai/api/v1"),
    "fireworks": ProviderSpec("https://api.fireworks.ai/inference/v1"),
    "perplexity": ProviderSpec("https://api.perplexity.ai"),
    "cerebras": ProviderSpec("https://api.cerebras.ai/v1"),
    # Local servers: no key, plain HTTP on their usual ports.
    "ollama": ProviderSpec("http://127.0.0.1:11434/v1"),
    "vllm": ProviderSpec("http://127.0.0.1:8000/v1"),
}

# Plano's providers whose API this gateway does not speak: named so that the error says why.
# With a base_url and an OpenAI-compatible endpoint behind it, such a name is a custom provider.
UNSUPPORTED_PROVIDERS: dict[str, str] = {
    "amazon_bedrock": "Bedrock's Converse API is not one this gateway speaks",
    "amazon": "Bedrock's Converse API is not one this gateway speaks",
    "chatgpt": "ChatGPT's subscription backend is not an API this gateway speaks",
    "plano": "Plano's own hosted models are reached through Plano",
}


def family_owner(model_id: str) -> str | None:
    """The provider whose own models ``model_id`` is of by its name (``claude-`` is
    Anthropic's), or None; the first in the table, so OpenAI's before Azure's."""
    for name, spec in BUILTIN_PROVIDERS.items():
        if spec.families and model_id.startswith(spec.families):
            return name
    return None

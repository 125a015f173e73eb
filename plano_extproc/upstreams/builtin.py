"""Built-in providers: where each well-known LLM API lives and how it takes a key.

A data table, not branches: adding a provider is adding a row. Each row names the API its
provider speaks (``interface``): OpenAI's chat completions at ``base_url`` +
``/chat/completions``, or Anthropic's Messages at ``base_url`` + ``/messages``. A config entry
may say otherwise with ``provider_interface`` (e.g. Anthropic through its OpenAI-compatible
endpoint, which Anthropic means for testing and comparing models, not for production).
The APIs themselves are the other modules of this package.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProviderSpec:
    base_url: str
    interface: str = "openai"  # the API it speaks unless the config says otherwise


BUILTIN_PROVIDERS: dict[str, ProviderSpec] = {
    "openai": ProviderSpec("https://api.openai.com/v1"),
    "anthropic": ProviderSpec("https://api.anthropic.com/v1", "anthropic"),
    "gemini": ProviderSpec("https://generativelanguage.googleapis.com/v1beta/openai"),
    "groq": ProviderSpec("https://api.groq.com/openai/v1"),
    "mistral": ProviderSpec("https://api.mistral.ai/v1"),
    "deepseek": ProviderSpec("https://api.deepseek.com/v1"),
    "together": ProviderSpec("https://api.together.xyz/v1"),
    "xai": ProviderSpec("https://api.x.ai/v1"),
    "fireworks": ProviderSpec("https://api.fireworks.ai/inference/v1"),
    "openrouter": ProviderSpec("https://openrouter.ai/api/v1"),
    "perplexity": ProviderSpec("https://api.perplexity.ai"),
    "cerebras": ProviderSpec("https://api.cerebras.ai/v1"),
    # Local servers: no key, plain HTTP on their usual ports.
    "ollama": ProviderSpec("http://127.0.0.1:11434/v1"),
    "vllm": ProviderSpec("http://127.0.0.1:8000/v1"),
}

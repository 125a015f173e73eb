"""Built-in providers: where each well-known LLM API lives and how it takes a key.

A data table, not branches: adding a provider is adding a row. Every row speaks OpenAI's
chat-completions schema at ``base_url`` + ``/chat/completions`` (Anthropic through its
OpenAI-compatible endpoint for now).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProviderSpec:
    base_url: str
    # Header that carries the key, and the text before the key in its value.
    auth_header: str = "authorization"
    auth_prefix: str = "Bearer "


BUILTIN_PROVIDERS: dict[str, ProviderSpec] = {
    "openai": ProviderSpec("https://api.openai.com/v1"),
    "anthropic": ProviderSpec("https://api.anthropic.com/v1"),
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

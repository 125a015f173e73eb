"""OpenAI's chat completions as providers serve it: OpenAI itself and every OpenAI-compatible
server (vLLM, Ollama, Groq, DeepSeek, Gemini's compatibility endpoint...)."""

from __future__ import annotations

from .base import UpstreamApi

OPENAI_COMPATIBLE = UpstreamApi(
    name="openai",
    path="/chat/completions",
    count_tokens_path=None,
    auth_header="authorization",
    auth_prefix="Bearer ",
)

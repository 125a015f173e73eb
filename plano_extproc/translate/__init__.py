"""Translation between the two LLM APIs the gateway speaks: OpenAI chat completions and
Anthropic Messages.

A client may call either API and a provider may speak either; when the two differ, the
request body, the response (whole or streamed) and errors are translated by the pair that
``translator(client_api, upstream_api)`` returns. Pure functions, no I/O: the ext_proc
server calls them per message. ``base`` has the interface, ``sse`` the event-stream parser
and writer, and each pair's module lists what maps to what and what is dropped or refused.
"""

from __future__ import annotations

from .anthropic_to_openai import AnthropicToOpenAI
from .base import (
    ANTHROPIC,
    OPENAI,
    StreamTranslator,
    TranslationError,
    Translator,
    wants_stream,
)
from .openai_to_anthropic import OpenAIToAnthropic

APIS = (OPENAI, ANTHROPIC)

_PAIRS: dict[tuple[str, str], Translator] = {
    (OPENAI, ANTHROPIC): OpenAIToAnthropic(),
    (ANTHROPIC, OPENAI): AnthropicToOpenAI(),
}


def translator(client_api: str, upstream_api: str) -> Translator | None:
    """The pair for a client API and an upstream API; None when they are the same API.

    Raises ``ValueError`` for a name that is not one of ``APIS``.
    """
    for name in (client_api, upstream_api):
        if name not in APIS:
            raise ValueError(f"unknown API {name!r}: expected one of {', '.join(APIS)}")
    if client_api == upstream_api:
        return None
    return _PAIRS[(client_api, upstream_api)]


__all__ = [
    "ANTHROPIC",
    "APIS",
    "OPENAI",
    "AnthropicToOpenAI",
    "OpenAIToAnthropic",
    "StreamTranslator",
    "TranslationError",
    "Translator",
    "translator",
    "wants_stream",
]

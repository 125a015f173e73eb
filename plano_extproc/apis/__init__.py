"""The client APIs the gateway serves, one module each: where each is served, what the
router reads of a request, and the shape of its errors.

Everything API-specific the rest of the gateway needs is on a ``ClientApi``: the Envoy routes
are generated from ``CLIENT_APIS``, the ext_proc server learns which API a request came in on
from the gRPC metadata its route sets (``API_METADATA``), and every error reply, the
server's and Envoy's own, is rendered by the request's API.
"""

from __future__ import annotations

from .anthropic_messages import ANTHROPIC_MESSAGES, COUNT_TOKENS
from .base import API_METADATA, ClientApi
from .openai_chat import OPENAI_CHAT

# In the order their Envoy routes are generated; OpenAI's chat is the default for a stream
# that says nothing (an Envoy config of the user's own).
CLIENT_APIS: tuple[ClientApi, ...] = (OPENAI_CHAT, ANTHROPIC_MESSAGES, COUNT_TOKENS)
BY_METADATA = {api.metadata: api for api in CLIENT_APIS}


def client_api(metadata_value: str | None) -> ClientApi | None:
    """The API a stream's metadata names (None: not given, the default); None if unknown."""
    if metadata_value is None:
        return OPENAI_CHAT
    return BY_METADATA.get(metadata_value)


__all__ = [
    "ANTHROPIC_MESSAGES",
    "API_METADATA",
    "CLIENT_APIS",
    "COUNT_TOKENS",
    "OPENAI_CHAT",
    "ClientApi",
    "client_api",
]

"""The APIs providers speak, one module each, and the built-in providers (builtin.py).

Adding a provider that speaks one of these APIs is a row in ``BUILTIN_PROVIDERS`` (or a
``base_url`` in the config); adding an API is a module here, a client module in apis/ if
clients may call it too, and the translation pairs in translate/.
"""

from __future__ import annotations

from .anthropic_native import ANTHROPIC_NATIVE, ANTHROPIC_VERSION
from .base import UpstreamApi
from .builtin import AZURE_API_VERSION, BUILTIN_PROVIDERS, UNSUPPORTED_PROVIDERS, ProviderSpec
from .openai_compatible import OPENAI_COMPATIBLE

UPSTREAM_APIS = {api.name: api for api in (OPENAI_COMPATIBLE, ANTHROPIC_NATIVE)}
INTERFACES = tuple(UPSTREAM_APIS)

__all__ = [
    "ANTHROPIC_NATIVE",
    "ANTHROPIC_VERSION",
    "AZURE_API_VERSION",
    "BUILTIN_PROVIDERS",
    "INTERFACES",
    "OPENAI_COMPATIBLE",
    "UNSUPPORTED_PROVIDERS",
    "UPSTREAM_APIS",
    "ProviderSpec",
    "UpstreamApi",
]

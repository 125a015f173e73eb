"""OpenAI's chat completions, as clients call it: ``POST /v1/chat/completions``.

Errors are ``{"error": {"message", "type", "param", "code"}}``; the openai SDK picks its
exception from the HTTP status alone.
"""

from __future__ import annotations

from typing import Any

from ..errors import error_object
from ..upstreams import ANTHROPIC_NATIVE, OPENAI_COMPATIBLE
from .base import ClientApi


def _error(status: int, message: str, type: str, param: str | None, code: str | None) -> Any:
    return error_object(message, type, param, code)


OPENAI_CHAT = ClientApi(
    name=OPENAI_COMPATIBLE.name,
    metadata="openai",
    path="/v1/chat/completions",
    route_prefix="chat",
    upstream_paths={
        OPENAI_COMPATIBLE.name: OPENAI_COMPATIBLE.path,
        ANTHROPIC_NATIVE.name: ANTHROPIC_NATIVE.path,
    },
    error_object=_error,
)

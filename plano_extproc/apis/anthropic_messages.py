"""Anthropic's Messages API, as clients call it: ``POST /v1/messages`` (any query string,
e.g. Claude Code's ``?beta=true``) and ``POST /v1/messages/count_tokens``.

Errors are ``{"type": "error", "error": {"type", "message"}}``, the type naming the category
of the HTTP status (translate/error_shapes.py has the table).

Token counting: for a provider that speaks the Messages API the request goes to it (its
count is exact). Any other provider has no such endpoint, so the gateway answers with an
estimate (``estimate_input_tokens``), as Claude Code only uses the count to show and manage
how full its context is.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from ..translate.error_shapes import anthropic_error, anthropic_type_for_status
from ..upstreams import ANTHROPIC_NATIVE, OPENAI_COMPATIBLE
from .base import ClientApi

# Average characters per token of the Claude and GPT tokenizers on English prose and code
# (3.5-4); the lower end, so an estimate errs towards a fuller context, the safe side.
CHARS_PER_TOKEN = 3.5
# What a message costs beyond its text (role and separators), and an image of unknown size
# (Anthropic's rule is width x height / 750, at most about 1,600 for a resized image).
MESSAGE_OVERHEAD_TOKENS = 4
IMAGE_TOKENS = 1600


def _error(status: int, message: str, type: str, param: str | None, code: str | None) -> Any:
    return anthropic_error(anthropic_type_for_status(status), message)


ANTHROPIC_MESSAGES = ClientApi(
    name=ANTHROPIC_NATIVE.name,
    metadata="anthropic",
    path="/v1/messages",
    route_prefix="messages",
    upstream_paths={
        ANTHROPIC_NATIVE.name: ANTHROPIC_NATIVE.path,
        OPENAI_COMPATIBLE.name: OPENAI_COMPATIBLE.path,
    },
    error_object=_error,
)

COUNT_TOKENS = ClientApi(
    name=ANTHROPIC_NATIVE.name,
    metadata="anthropic-count-tokens",
    path="/v1/messages/count_tokens",
    route_prefix="messages_count_tokens",  # a "messages" route: Anthropic's error shape
    upstream_paths={ANTHROPIC_NATIVE.name: str(ANTHROPIC_NATIVE.count_tokens_path)},
    error_object=_error,
    generates=False,
)


def estimate_input_tokens(body: Mapping[str, Any]) -> int:
    """An estimate of the input tokens of a Messages request (count_tokens' answer): the
    characters of its system prompt, messages and tool definitions at CHARS_PER_TOKEN, plus
    a little per message and a fixed cost per image or document."""
    chars = _chars(body.get("system")) + _chars(body.get("tools"))
    tokens = 0
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        tokens += MESSAGE_OVERHEAD_TOKENS
        if isinstance(message, Mapping):
            content = message.get("content")
            chars += _chars(content)
            tokens += IMAGE_TOKENS * _media_blocks(content)
    return max(1, tokens + math.ceil(chars / CHARS_PER_TOKEN))


def _chars(value: object) -> int:
    """The characters a tokenizer would read in a field: text as it is, anything else
    (tool schemas, tool inputs) as its JSON; images and documents are counted apart."""
    if value is None:
        return 0
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_chars(item) for item in value)
    if isinstance(value, Mapping):
        kind = value.get("type")
        if kind in ("image", "document"):
            return 0
        if kind == "text" and isinstance(value.get("text"), str):
            return len(value["text"])
        if kind == "tool_result":
            return _chars(value.get("content"))
        return len(json.dumps(value, ensure_ascii=False, default=str))
    return len(str(value))


def _media_blocks(content: object) -> int:
    if not isinstance(content, list):
        return 0
    count = 0
    for block in content:
        if isinstance(block, Mapping):
            if block.get("type") in ("image", "document"):
                count += 1
            elif block.get("type") == "tool_result":
                count += _media_blocks(block.get("content"))
    return count

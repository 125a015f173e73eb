"""OpenAI-style error replies: what the gateway answers instead of forwarding a request."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# A lone surrogate (a client's "\udc80" escape, echoed in a message) has no UTF-8 encoding.
_SURROGATE = re.compile("[\ud800-\udfff]")
# How much of a client's value an error message quotes.
QUOTE_CHARS = 100


# An API's error body from (status, message, type, param, code).
ErrorShape = Callable[[int, str, str, str | None, str | None], Any]


@dataclass(frozen=True)
class ErrorReply:
    """An error the gateway answers with: its HTTP status and, in OpenAI's terms, what went
    wrong; each client API renders it in its own shape (apis/)."""

    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None

    def body(self, shape: ErrorShape | None = None) -> bytes:
        """The JSON body in ``shape`` (OpenAI's by default), valid UTF-8 whatever the
        message quotes."""
        if shape is None:
            error: object = error_object(self.message, self.type, self.param, self.code)
        else:
            error = shape(self.status, self.message, self.type, self.param, self.code)
        text = json.dumps(error, ensure_ascii=False)
        try:
            return text.encode()
        except UnicodeEncodeError:
            return _SURROGATE.sub("\ufffd", text).encode()


def error_object(
    message: str, type: str = "invalid_request_error", param: str | None = None,
    code: str | None = None,
) -> dict[str, dict[str, str | None]]:  # fmt: skip
    """The OpenAI error shape, shared by the server's replies and Envoy's own."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def quoted(value: str) -> str:
    """A client's string for an error message: in quotes, cut to ``QUOTE_CHARS``."""
    if len(value) > QUOTE_CHARS:
        value = value[:QUOTE_CHARS] + "…"
    return f"'{value}'"


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> ErrorReply:
    return ErrorReply(400, message, "invalid_request_error", param, code)


def too_large(max_body_bytes: int) -> ErrorReply:
    """A body over ``max_body_size``: the same words as Envoy's own 413 (envoy_config/replies)."""
    return ErrorReply(
        413,
        f"Request body larger than this gateway's limit of {max_body_bytes} bytes.",
        code="request_too_large",
    )

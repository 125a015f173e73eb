"""OpenAI-style error replies: what the gateway answers instead of forwarding a request."""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class ErrorReply:
    """``{"error": {"message", "type", "param", "code"}}`` with its HTTP status."""

    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None

    def body(self) -> bytes:
        error = error_object(self.message, self.type, self.param, self.code)
        return json.dumps(error, ensure_ascii=False).encode()


def error_object(
    message: str, type: str = "invalid_request_error", param: str | None = None,
    code: str | None = None,
) -> dict[str, dict[str, str | None]]:  # fmt: skip
    """The OpenAI error shape, shared by the server's replies and Envoy's own."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> ErrorReply:
    return ErrorReply(400, message, "invalid_request_error", param, code)


def too_large(max_body_bytes: int) -> ErrorReply:
    """A body over ``max_body_size``: the same words as Envoy's own 413 (envoy_config.py)."""
    return ErrorReply(
        413,
        f"Request body larger than this gateway's limit of {max_body_bytes} bytes.",
        code="request_too_large",
    )

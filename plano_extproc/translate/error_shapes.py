"""Both APIs' error bodies, and how an error in one maps to the other.

OpenAI: ``{"error": {"message", "type", "param", "code"}}``; the SDK picks its exception
from the HTTP status alone. Anthropic: ``{"type": "error", "error": {"type", "message"}}``
where ``error.type`` names the category and the status follows from it:

| Anthropic type          | status | OpenAI status | OpenAI type             |
|-------------------------|--------|---------------|-------------------------|
| invalid_request_error   | 400    | 400           | invalid_request_error   |
| authentication_error    | 401    | 401           | authentication_error    |
| billing_error           | 402    | 402           | insufficient_quota      |
| permission_error        | 403    | 403           | permission_error        |
| not_found_error         | 404    | 404           | not_found_error         |
| request_too_large       | 413    | 413           | invalid_request_error   |
| rate_limit_error        | 429    | 429           | rate_limit_error        |
| api_error               | 500    | 500           | server_error            |
| timeout_error           | 504    | 504           | timeout_error           |
| overloaded_error        | 529    | 503           | server_error            |

An Anthropic error keeps its own status (529 becomes 503, which OpenAI clients know as
"overloaded"); the OpenAI ``code`` is the Anthropic type, so nothing is lost. An OpenAI
error becomes the Anthropic type of its status (503 becomes 529 overloaded_error; an OpenAI
429 whose code or type is ``insufficient_quota`` becomes billing_error). A status that is
not an error (an upstream that said 200 but sent an error body, or a 3xx) becomes 502
api_error, the gateway's word for "the upstream answered wrongly".
"""

from __future__ import annotations

import json
from typing import Any

from plano_extproc.errors import error_object

from .sse import dumps

# How much of an unparseable upstream body an error message quotes.
QUOTE_BYTES = 500

ANTHROPIC_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
_ANTHROPIC_TYPE = {status: type for type, status in ANTHROPIC_STATUS.items()}
_OPENAI_TYPE = {
    "billing_error": "insufficient_quota",
    "request_too_large": "invalid_request_error",
    "api_error": "server_error",
    "overloaded_error": "server_error",
}
OVERLOADED = 529


def openai_error(
    message: str, type: str = "invalid_request_error", code: str | None = None,
    param: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    return error_object(message, type, param, code)


def anthropic_error(type: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": type, "message": message}}


def encode(body: dict[str, Any]) -> bytes:
    return dumps(body).encode()


def anthropic_type_for_status(status: int) -> str:
    """The Anthropic category of an HTTP error status (any status, as a fallback rule)."""
    if status in _ANTHROPIC_TYPE:
        return _ANTHROPIC_TYPE[status]
    if status == 503:
        return "overloaded_error"
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def openai_type_for_anthropic(type: str) -> str:
    return _OPENAI_TYPE.get(type, type)


def error_status(status: int) -> int:
    """An upstream's status as an error status: anything that is not 4xx/5xx is a 502."""
    return status if 400 <= status <= 599 else 502


def parse_json(body: bytes) -> Any:
    """The body as JSON, or None when it is not JSON (never an exception)."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def quote_body(status: int, body: bytes) -> str:
    """A message for an error body nobody can read: the status and the first bytes of it."""
    text = body[:QUOTE_BYTES].decode("utf-8", "replace").strip()
    if len(body) > QUOTE_BYTES:
        text += "…"
    return f"upstream returned HTTP {status}" + (f": {text}" if text else " with no body")


def read_anthropic_error(status: int, body: bytes) -> tuple[str, str]:
    """(type, message) of an Anthropic error body; any bytes at all."""
    parsed = parse_json(body)
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if isinstance(error, dict):
            type = error.get("type")
            message = error.get("message")
            if isinstance(type, str) and type and isinstance(message, str):
                return type, message
            if isinstance(message, str):
                return anthropic_type_for_status(status), message
    return anthropic_type_for_status(status), quote_body(status, body)


def read_openai_error(status: int, body: bytes) -> tuple[str, str, str | None]:
    """(type, message, code) of an OpenAI-style error body; any bytes at all.

    OpenAI-compatible servers vary: ``{"error": {...}}``, ``{"error": "text"}``,
    ``{"message": ...}``, ``{"detail": ...}`` (FastAPI-based servers).
    """
    parsed = parse_json(body)
    default_type = "invalid_request_error" if 400 <= status < 500 else "server_error"
    if isinstance(parsed, dict):
        error = parsed.get("error", parsed)
        if isinstance(error, str):
            return default_type, error, None
        if isinstance(error, dict):
            message = error.get("message", error.get("detail"))
            if isinstance(message, str):
                type = error.get("type")
                code = error.get("code")
                return (
                    type if isinstance(type, str) and type else default_type,
                    message,
                    str(code) if isinstance(code, (str, int)) and code != "" else None,
                )
    return default_type, quote_body(status, body), None


def anthropic_to_openai(status: int, body: bytes) -> tuple[int, bytes]:
    """An Anthropic upstream's error as an OpenAI client's error."""
    type, message = read_anthropic_error(status, body)
    status = error_status(status)
    if type == "overloaded_error" or status == OVERLOADED:
        status = 503
    openai_type = openai_type_for_anthropic(type)
    return status, encode(openai_error(message, openai_type, code=type))


def openai_to_anthropic(status: int, body: bytes) -> tuple[int, bytes]:
    """An OpenAI-compatible upstream's error as an Anthropic client's error."""
    openai_type, message, code = read_openai_error(status, body)
    status = error_status(status)
    type = anthropic_type_for_status(status)
    if status == 503:
        status = OVERLOADED
    elif "insufficient_quota" in (openai_type, code):
        type = "billing_error"
    return status, encode(anthropic_error(type, message))

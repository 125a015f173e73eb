"""What the fuzzers share: arbitrary JSON values, and the closed vocabularies of the two APIs
(written from their references, not read from the gateway's code, so a test checks the
gateway against the APIs rather than against itself)."""

from __future__ import annotations

from hypothesis import strategies as st

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)


def json_values(max_leaves: int = 12) -> st.SearchStrategy[object]:
    """Any JSON value: scalars, and lists and objects of them."""
    return st.recursive(
        SCALARS,
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=max_leaves,
    )


# Anthropic's error types (error.type), and a message's stop reasons.
ANTHROPIC_ERROR_TYPES = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "billing_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "rate_limit_error",
        "api_error",
        "timeout_error",
        "overloaded_error",
    }
)
STOP_REASONS = frozenset(
    {"end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal", "pause_turn"}
)
# OpenAI's finish reasons.
FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})


def sse_events(raw: bytes, *, complete: bool = True) -> list[tuple[str | None, str]]:
    """(event name, data) per server-sent event, read by the SSE rules (several data lines
    join, comments are skipped). ``complete``: the stream must end with a blank line."""
    events: list[tuple[str | None, str]] = []
    name: str | None = None
    data: list[str] = []
    text = raw.decode("utf-8")
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if not line:
            if data:
                events.append((name, "\n".join(data)))
            name, data = None, []
        elif line.startswith(":"):
            continue
        else:
            key, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if key == "event":
                name = value
            elif key == "data":
                data.append(value)
    if data:
        assert not complete, f"an event with no blank line after it: {raw[-300:]!r}"
        events.append((name, "\n".join(data)))
    return events

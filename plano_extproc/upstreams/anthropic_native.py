"""Anthropic's Messages API as Anthropic serves it: the key in x-api-key, a required
anthropic-version, and a token-counting endpoint."""

from __future__ import annotations

from .base import UpstreamApi

# The version translated requests are written for.
ANTHROPIC_VERSION = "2023-06-01"

ANTHROPIC_NATIVE = UpstreamApi(
    name="anthropic",
    path="/messages",
    count_tokens_path="/messages/count_tokens",
    auth_header="x-api-key",
    auth_prefix="",
    required_headers={"anthropic-version": ANTHROPIC_VERSION},
    client_headers=(
        "anthropic-version",
        "anthropic-beta",
        "anthropic-dangerous-direct-browser-access",
    ),
)

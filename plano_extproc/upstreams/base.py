"""What every upstream API module provides."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class UpstreamApi:
    """An API a provider speaks: where it is below the provider's base URL, how it takes a
    key, and what every request to it must carry."""

    name: str  # "openai" or "anthropic": the schema, as translate.APIS names it
    path: str  # the generation endpoint below the base URL
    count_tokens_path: str | None  # None: it cannot count tokens
    auth_header: str  # the header that carries the key
    auth_prefix: str  # the text before the key in its value
    # Headers it requires, set when the request was translated for it (a client of the same
    # API sends its own, which pass untouched, or these when it sent none).
    required_headers: dict[str, str] = field(default_factory=dict)
    # Headers of this API's clients that mean nothing to another API: removed when such a
    # client's request is translated for another upstream.
    client_headers: tuple[str, ...] = ()

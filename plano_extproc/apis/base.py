"""What every client API module provides."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Provider
from ..errors import ErrorReply, ErrorShape

# The gRPC metadata (an HTTP/2 header of the ext_proc stream) by which a route tells the
# server which API the request came in on: the server sees no path, the headers phase being
# skipped.
API_METADATA = "x-plano-api"


@dataclass(frozen=True)
class ClientApi:
    name: str  # the schema: "openai" or "anthropic" (translate.APIS)
    metadata: str  # its API_METADATA value
    path: str  # as clients send it, e.g. /v1/chat/completions
    # Envoy route names for this API start so; the local replies tell the API by it.
    route_prefix: str
    # The endpoint below a provider's base URL that serves it, by provider interface: a
    # provider of another interface gets the request translated, unless absent here (the
    # server answers such requests itself).
    upstream_paths: dict[str, str]
    error_object: ErrorShape
    generates: bool = True  # False: counts tokens, never routed by preference

    @property
    def path_regex(self) -> str:
        return f"^{self.path}/?$"

    def reaches(self, provider: Provider) -> bool:
        """Whether a request of this API goes to ``provider`` (else the server answers it)."""
        return provider.interface in self.upstream_paths

    def error_body(self, error: ErrorReply) -> bytes:
        return error.body(self.error_object)

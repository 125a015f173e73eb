"""Envoy's own error replies, as JSON in the client API's shape (the local-reply mappers)."""

from __future__ import annotations

from dataclasses import dataclass

from envoy_data_plane.envoy.config.accesslog import v3 as accesslog
from envoy_data_plane.envoy.config.core import v3 as core
from envoy_data_plane.envoy.extensions.access_loggers.filters.cel import v3 as cel
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager import v3 as hcm
from envoy_data_plane.google.protobuf import Any, Struct

from ..apis import ANTHROPIC_MESSAGES, OPENAI_CHAT, ClientApi
from ..config import Listener
from ..errors import too_large
from ..wire import (
    LOCAL_REPLY_HEADER,
    SERVER_REPLY_DETAILS,
)
from .common import error_struct, header
from .filters import STATUS_ON_ERROR


def _status(code: int, op: str = "EQ") -> accesslog.AccessLogFilter:
    value = core.RuntimeUInt32(default_value=code)
    comparison = accesslog.ComparisonFilter(op=accesslog.ComparisonFilterOp[op], value=value)
    return accesslog.AccessLogFilter(
        status_code_filter=accesslog.StatusCodeFilter(comparison=comparison)
    )


def _flags(*flags: str) -> accesslog.AccessLogFilter:
    """Any of ``flags``; with none, any response flag at all."""
    return accesslog.AccessLogFilter(
        response_flag_filter=accesslog.ResponseFlagFilter(flags=list(flags))
    )


def _both(a: accesslog.AccessLogFilter, b: accesslog.AccessLogFilter) -> accesslog.AccessLogFilter:
    return accesslog.AccessLogFilter(and_filter=accesslog.AndFilter(filters=[a, b]))


# Mappers are tried in order and the first match wins. What tells the cases apart, as seen
# in %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% of an access log:
# - our server's ImmediateResponses carry their own details (SERVER_REPLY_DETAILS) and the
#   routes Envoy answers from the config say "direct_response": both are JSON already, and
#   no mapper matches them. There is no top-level body_format: it would wrap them.
# - body over the buffer limit: 413, no flag (request_payload_too_large).
# - a provider cluster at its circuit breakers' limit: UO 503 (..._reset_reason:_overflow).
# - provider: UF 503 (refused, or TLS verification failed), with URX once retried; UC 503
#   (connection closed before the response); UT 504 (our per-try idle timeout); SI 504
#   (stream idle timeout while the upstream request is pending).
# - ext_proc: no flag. STATUS_ON_ERROR for a refused connection (ext_proc_error_gRPC_error_14),
#   a gRPC error (..._13), a forbidden mutation (header_mutation_set_headers_failed) or a
#   wrong content-length (mismatch_between_content_length_and_the_length_of_the_mutated_body);
#   but 504 whatever status_on_error says for a message timeout
#   (ext_proc_error_per-message_timeout_exceeded). The plano_extproc cluster at its limit is
#   a gRPC error 14 whose details end in "{overflow}". Provider flags are matched first, so a
#   502 or 504 that gets past them is the routing service's.
# - the client's own mistakes at the HTTP level: a protocol upgrade (WebSocket) is 403
#   upgrade_failed; headers over Envoy's limit 431 http1.headers_too_large (DPE); a request
#   that is not valid HTTP 400 http1.codec_error (DPE) or http2.* for HTTP/2. The DPE flag is
#   set after the mappers ran, so those are told apart by their details (a CEL filter).
_UPSTREAM_DOWN = ("UF", "UH", "UC", "UR", "URX", "UPE", "NC", "DF")


_OURS = f"response.code_details in ['{SERVER_REPLY_DETAILS}', 'direct_response']"


# A 503 with retry-after tells a client when to come back: the openai and anthropic SDKs
# retry a 503 and read retry-after when they do.
_RETRY_AFTER_S = 1


# Envoy's own replies on a Messages route (its entry route, or a provider route it took:
# their names start so) are in Anthropic's shape; the rest in OpenAI's.
# The route's name first: a provider route has rewritten the path by then (an OpenAI
# client's request to an Anthropic provider is on /v1/messages). A request that matched no
# route yet (a malformed one) is told by its path.
_ANTHROPIC_ROUTE = (
    f"xds.route_name.startsWith('{ANTHROPIC_MESSAGES.route_prefix}') || "
    f"(request.path.startsWith('{ANTHROPIC_MESSAGES.path}') && "
    f"!xds.route_name.startsWith('{OPENAI_CHAT.route_prefix}'))"
)


@dataclass(frozen=True)
class _Reply:
    match: accesslog.AccessLogFilter
    message: str
    type: str
    code: str
    status: int | None = None  # replaces Envoy's status
    retry_after: bool = False
    anthropic_type: str | None = None  # None: the category of the type (api_error...)
    # Given by the codec before any filter ran: no filter would remove our marker header.
    before_filters: bool = False

    def body(self, api: ClientApi) -> Struct:
        if api is ANTHROPIC_MESSAGES:
            category = self.anthropic_type or (
                "api_error" if self.type == "server_error" else "invalid_request_error"
            )
            return Struct.from_dict(
                {"type": "error", "error": {"type": category, "message": self.message}}
            )
        return error_struct(self.message, self.code, type_=self.type)


def local_replies(listener: Listener) -> hcm.LocalReplyConfig:
    service = "The routing service (plano-extproc)"
    capacity = (
        f"The gateway is at capacity ({listener.max_concurrent_requests} requests in flight "
        "to one provider, or routing decisions in flight; "
        "listeners.egress_traffic.max_concurrent_requests): retry shortly."
    )
    table = [
        _Reply(
            _both(_status(413), _cel(f"!({_OURS})")),
            too_large(listener.max_body_bytes).message,
            "invalid_request_error",
            "request_too_large",
            anthropic_type="request_too_large",
        ),
        _Reply(
            _flags("UO"),
            capacity,
            "server_error",
            "gateway_at_capacity",
            retry_after=True,
            anthropic_type="overloaded_error",
        ),
        _Reply(
            _both(_status(STATUS_ON_ERROR), _cel("response.code_details.contains('overflow')")),
            capacity,
            "server_error",
            "gateway_at_capacity",
            status=503,
            retry_after=True,
            anthropic_type="overloaded_error",
        ),
        _Reply(
            _both(_status(504), _flags("UT", "SI")),
            "The model provider did not answer in time: %LOCAL_REPLY_BODY%",
            "server_error",
            "upstream_timeout",
            anthropic_type="timeout_error",
        ),
        _Reply(
            _flags(*_UPSTREAM_DOWN),
            "The model provider could not be reached: %LOCAL_REPLY_BODY%",
            "server_error",
            "upstream_unavailable",
        ),
        _Reply(
            _status(STATUS_ON_ERROR),
            f"{service} failed or could not be reached.",
            "server_error",
            "router_unavailable",
        ),
        _Reply(
            _status(504), f"{service} did not answer in time.", "server_error", "router_unavailable"
        ),
        _Reply(
            _cel("response.code_details == 'upgrade_failed'"),
            "This gateway does not take protocol upgrades (WebSocket): send plain HTTP requests.",
            "invalid_request_error",
            "upgrade_not_supported",
        ),
        _Reply(
            _status(431),
            "The request's headers are larger than this gateway accepts (60 KiB in all).",
            "invalid_request_error",
            "request_headers_too_large",
            before_filters=True,
        ),
        _Reply(
            _cel(
                "response.code_details.startsWith('http1.') || "
                "response.code_details.startsWith('http2.')"
            ),
            "The request is not valid HTTP (%RESPONSE_CODE_DETAILS%).",
            "invalid_request_error",
            "malformed_request",
            before_filters=True,
        ),
        # Anything else Envoy answers itself is JSON too, with Envoy's status.
        _Reply(
            _both(_status(500, "GE"), _cel(f"!({_OURS})")),
            "%LOCAL_REPLY_BODY%",
            "server_error",
            "gateway_error",
        ),
        _Reply(
            _cel(f"!({_OURS})"), "%LOCAL_REPLY_BODY%", "invalid_request_error", "invalid_request"
        ),
    ]
    anthropic = _cel(_ANTHROPIC_ROUTE)
    return hcm.LocalReplyConfig(
        mappers=[
            hcm.ResponseMapper(
                filter=_both(anthropic, reply.match) if api is ANTHROPIC_MESSAGES else reply.match,
                status_code=reply.status,
                body_format_override=core.SubstitutionFormatString(json_format=reply.body(api)),
                headers_to_add=([] if reply.before_filters else [header(LOCAL_REPLY_HEADER, "1")])
                + ([header("retry-after", str(_RETRY_AFTER_S))] if reply.retry_after else []),
            )
            for reply in table
            # Each reply in Anthropic's shape first (on a Messages route), then in OpenAI's.
            for api in (ANTHROPIC_MESSAGES, OPENAI_CHAT)
        ]
    )


def _cel(expression: str) -> accesslog.AccessLogFilter:
    return accesslog.AccessLogFilter(
        extension_filter=accesslog.ExtensionFilter(
            name="envoy.access_loggers.extension_filters.cel",
            typed_config=Any.pack(cel.ExpressionFilter(expression=expression)),
        )
    )

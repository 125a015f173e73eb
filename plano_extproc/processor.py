"""One ext_proc message: Envoy's buffered request body in, the routing decision out.

No I/O here: the server feeds each ProcessingRequest to ``Processor.handle`` and sends back
what it returns. Envoy sends one message per chat request, the whole body (the headers
phase is skipped: Envoy's route table checks method and path and answers /v1/models). The
answer replaces the body when the model changes and carries the decision as dynamic
metadata, which the provider routes match (envoy_config.py). Every answer's fixed part is
built once per (provider, routing, route) and copied per request. A big body read by a
helper process (offload.py) is answered with a ``SplicedAnswer``: its new text is written
once, straight into the answer's bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import struct_pb2

from ._proto import ext_proc_pb2 as pb
from .body import pieces, with_model
from .config import Config
from .errors import ErrorReply, too_large
from .resolve import (
    AskRouter,
    ChatRequest,
    Decision,
    parse_chat_request,
    resolve,
    resolve_preference,
)
from .router.base import RouteChoice
from .wire import (
    AUTH_KEY,
    METADATA_NAMESPACE,
    MODEL_KEY,
    ROUTE_KEY,
    ROUTING_KEY,
    SERVER_REPLY_DETAILS,
)

_OVERWRITE = pb.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD

# Envoy (1.40) clears the route cache only for an answer that carries a header mutation,
# even one it cannot apply: without the headers phase it applies none. This removal of a
# header nobody sends is that mutation; clear_route_cache then makes the router match the
# provider route from the new metadata.
_CLEAR_ROUTE = pb.CommonResponse(
    header_mutation=pb.HeaderMutation(remove_headers=["x-plano-clear-route-cache"]),
    clear_route_cache=True,
)


def _immediate(status: int, body: bytes) -> pb.ProcessingResponse:
    # raw_value, not value: Envoy 1.40 applied a `value` string as an empty header value.
    content_type = pb.HeaderValueOption(
        header=pb.HeaderValue(key="content-type", raw_value=b"application/json"),
        append_action=_OVERWRITE,
    )
    return pb.ProcessingResponse(
        immediate_response=pb.ImmediateResponse(
            status=pb.HttpStatus(code=status),
            headers=pb.HeaderMutation(set_headers=[content_type]),
            body=body,
            # Envoy's local-reply mappers tell our replies from its own by this.
            details=SERVER_REPLY_DETAILS,
        )
    )


def error_response(error: ErrorReply) -> pb.ProcessingResponse:
    return _immediate(error.status, error.body())


@dataclass(frozen=True)
class SplicedAnswer:
    """A routed answer whose body (a big one, as views of the bytes the server holds) is
    joined once into the serialized answer. Through a message it would be copied in, then
    out: each copy of a 15 MB body holds the event loop for milliseconds."""

    head: pb.ProcessingResponse  # the answer without the new body
    body: list[bytes | memoryview]

    def SerializeToString(self) -> bytes:  # as a message has it
        # A serialized message followed by another of the same type reads as the two merged
        # (protobuf's wire rule for embedded messages): here, the body mutation.
        length = sum(len(piece) for piece in self.body)
        return b"".join((self.head.SerializeToString(), _body_mutation_field(length), *self.body))


def _body_mutation_field(length: int) -> bytes:
    """The start of ProcessingResponse.request_body.response.body_mutation.body (fields 3, 1,
    3, 1: length-delimited) for a body of ``length`` bytes, up to where the body goes."""
    prefix = b""
    for tag in (b"\x0a", b"\x1a", b"\x0a", b"\x1a"):  # innermost first
        field = tag + _encode_varint(length)
        prefix = field + prefix
        length += len(field)
    return prefix


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# What the server sends back, once serialized (both have SerializeToString).
Answer = pb.ProcessingResponse | SplicedAnswer


@dataclass(frozen=True)
class PendingRoute:
    """A body that named no model: the router must read it before it can be routed."""

    request: ChatRequest


class Processor:
    """Turns a config into ext_proc answers; shared by all streams, read-only after init
    but for the cache of answer templates (bounded: providers x routings x routes)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._templates: dict[tuple[str, str, str | None], pb.ProcessingResponse] = {}

    def handle(self, request: pb.ProcessingRequest) -> Answer | PendingRoute:
        kind = request.WhichOneof("request")
        if kind == "request_body":
            return self.on_request_body(request.request_body.body)
        # A phase we did not ask for (an Envoy config of the user's own): let it through.
        return _passthrough(kind)

    def on_request_body(self, body: bytes) -> Answer | PendingRoute:
        if len(body) > self.config.listener.max_body_bytes:
            return self.too_large()
        return self.decide(parse_chat_request(body))

    def too_large(self) -> pb.ProcessingResponse:
        # Envoy lets a little more through (wire.envoy_body_limit) so that the body with its
        # model put in still fits its buffer: the client's limit is enforced here.
        return error_response(too_large(self.config.listener.max_body_bytes))

    def decide(self, request: ChatRequest | ErrorReply) -> Answer | PendingRoute:
        """The answer to a parsed body: read here (``on_request_body``), or a big one read in
        a helper process (``resolve.read_chat_request``)."""
        if isinstance(request, ErrorReply):
            return error_response(request)
        decision = resolve(request.model, self.config)
        if isinstance(decision, AskRouter):
            return PendingRoute(request)
        if isinstance(decision, ErrorReply):
            return error_response(decision)
        return self.route(decision, request)

    def on_route_choice(self, pending: PendingRoute, choice: RouteChoice | None) -> Answer:
        """Finish a ``PendingRoute`` with the router's choice (None: it failed or timed out)."""
        decision = resolve_preference(choice, self.config)
        if isinstance(decision, ErrorReply):
            return error_response(decision)
        return self.route(decision, pending.request)

    def route(self, decision: Decision, request: ChatRequest) -> Answer:
        response = pb.ProcessingResponse()
        response.CopyFrom(self._template(decision))
        if type(request.wire.text) is not str:  # a big body, read by a helper process
            return SplicedAnswer(response, pieces(request.wire, decision.provider.model_id))
        new_body = with_model(request.wire, decision.provider.model_id)
        if new_body is not None:
            # Envoy sets content-length from the new body itself (no headers phase).
            response.request_body.response.body_mutation.body = new_body
        return response

    def _template(self, decision: Decision) -> pb.ProcessingResponse:
        key = (decision.provider.name, decision.routing, decision.route)
        template = self._templates.get(key)
        if template is None:
            provider = decision.provider
            fields = {MODEL_KEY: provider.name, ROUTING_KEY: decision.routing}
            if decision.route is not None:
                fields[ROUTE_KEY] = decision.route
            if provider.access_key is not None:
                fields[AUTH_KEY] = provider.auth_prefix + provider.access_key
            metadata = struct_pb2.Struct()
            metadata.update({METADATA_NAMESPACE: fields})
            template = pb.ProcessingResponse(
                request_body=pb.BodyResponse(response=_CLEAR_ROUTE), dynamic_metadata=metadata
            )
            self._templates[key] = template
        return template


def request_body_span(payload: bytes) -> tuple[int, int] | None:
    """Where a serialized ProcessingRequest that carries a request body holds the body's
    bytes, read from the protobuf wire format without parsing or copying them; None for any
    other message, or one this does not read plainly (a field given twice, malformed)."""
    try:
        return _request_body_span(payload)
    except ValueError:
        return None


def _request_body_span(payload: bytes) -> tuple[int, int] | None:
    span = None
    for field, kind, start, end in _fields(payload, 0, len(payload)):
        if field == _REQUEST_BODY and kind == _LEN and span is None:
            for inner, inner_kind, body_start, body_end in _fields(payload, start, end):
                if inner == _BODY and inner_kind == _LEN and span is None:
                    span = (body_start, body_end)
                elif inner == _BODY:
                    return None
            if span is None:
                return None
        elif field == _REQUEST_BODY or field in _OTHER_REQUESTS:
            return None
    return span


# ProcessingRequest.request_body, HttpBody.body, and ProcessingRequest's other phases.
_REQUEST_BODY, _BODY, _OTHER_REQUESTS = 4, 1, frozenset((2, 3, 5, 6, 7))
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def _fields(data: bytes, at: int, end: int) -> list[tuple[int, int, int, int]]:
    """The fields of the message in ``data[at:end]``: (number, wire type, start, end) of
    each value (for a length-delimited one, its contents). ValueError on malformed input."""
    fields = []
    while at < end:
        key, at = _varint(data, at)
        field, kind = key >> 3, key & 7
        if kind == _VARINT:
            start = at
            _, at = _varint(data, at)
        elif kind == _LEN:
            length, start = _varint(data, at)
            at = start + length
        elif kind in (_I64, _I32):
            start = at
            at += 8 if kind == _I64 else 4
        else:
            raise ValueError(f"wire type {kind}")
        if at > end:
            raise ValueError("truncated")
        fields.append((field, kind, start, at))
    return fields


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise ValueError("bad varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def _passthrough(kind: str | None) -> pb.ProcessingResponse:
    empty = pb.CommonResponse()
    if kind == "request_headers":
        return pb.ProcessingResponse(request_headers=pb.HeadersResponse(response=empty))
    if kind == "response_headers":
        return pb.ProcessingResponse(response_headers=pb.HeadersResponse(response=empty))
    if kind == "response_body":
        return pb.ProcessingResponse(response_body=pb.BodyResponse(response=empty))
    if kind == "request_trailers":
        return pb.ProcessingResponse(request_trailers=pb.TrailersResponse())
    return pb.ProcessingResponse(response_trailers=pb.TrailersResponse())

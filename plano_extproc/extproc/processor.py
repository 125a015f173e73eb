"""One ext_proc message: Envoy's buffered request body in, the routing decision out.

No I/O here: the server feeds each ProcessingRequest to ``Processor.handle``, with the client
API its route named, and sends back what it returns. Envoy sends one message per request,
the whole body (the headers phase is skipped: Envoy's route table checks method and path and
answers /v1/models). The decision comes from decide.py; the answer carries it as dynamic
metadata, which the provider routes match (envoy_config/routes.py), and the body to forward: the
client's own with the provider's model id spliced in when the provider speaks the client's
API, the translated request when it speaks the other one (translate/). Every answer's fixed
part is built once per (provider, routing, route, chain, client API, stream) and copied per
request. A big body read by
a helper process (offload.py) is answered with a ``SplicedAnswer``: its new text is written
once, straight into the answer's bytes.
"""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from google.protobuf import struct_pb2

from .._proto import ext_proc_pb2 as pb
from ..apis import OPENAI_CHAT, ClientApi
from ..apis.anthropic_messages import estimate_input_tokens
from ..body import pieces, with_model
from ..config import Config
from ..decide import Pending, begin, conclude
from ..errors import ErrorReply, too_large
from ..resolve import ChatRequest, Decision, parse_chat_request
from ..router.base import RouteChoice
from ..translate import TranslationError, translator, wants_stream
from ..wire import (
    AUTH_KEY,
    CHAIN_KEY,
    CLIENT_API_KEY,
    INCLUDE_USAGE_KEY,
    METADATA_NAMESPACE,
    MODEL_ID_KEY,
    MODEL_KEY,
    PROVIDER_KEY,
    RESPONSE_NAMESPACE,
    ROUTE_KEY,
    ROUTER_MS_KEY,
    ROUTING_KEY,
    SERVER_REPLY_DETAILS,
    STREAM_KEY,
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


def immediate(status: int, body: bytes) -> pb.ProcessingResponse:
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


def error_response(error: ErrorReply, api: ClientApi = OPENAI_CHAT) -> pb.ProcessingResponse:
    return immediate(error.status, api.error_body(error))


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


def decision_fields(answer: Answer) -> MutableMapping[str, struct_pb2.Value]:
    """The answer's decision metadata (the ``plano`` namespace), by key, to read or write."""
    head = answer.head if isinstance(answer, SplicedAnswer) else answer
    return head.dynamic_metadata.fields[METADATA_NAMESPACE].struct_value.fields


# A body nested just under what the parser reads, which the translation (a level or two
# deeper: tools[].function.parameters) or the token estimate cannot write back.
TOO_DEEP = ErrorReply(
    400,
    "The request body nests arrays and objects too deeply to be translated.",
    code="invalid_json",
)


def _value(request: ChatRequest) -> Any:
    """The request's parsed body; a big body read by a helper process is parsed again here,
    which only a translated or counted one needs."""
    if request.wire.value is not None:
        return request.wire.value
    text = request.wire.text
    return json.loads(text if isinstance(text, str) else bytes(text or b""))


def json_bytes(value: object) -> bytes:
    """Strict JSON for an upstream: ValueError for a number JSON cannot spell (1e999)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate the client sent escaped: escaped it stays
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


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
# An answer template's cache key: provider entry, routing, route, chain, client API, stream.
_TemplateKey = tuple[str, str, str | None, str | None, str, bool]


class Processor:
    """Turns a config into ext_proc answers; shared by all streams, read-only after init
    but for the cache of answer templates (bounded: providers x routings x routes x chains x
    client APIs x 2)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._templates: dict[_TemplateKey, pb.ProcessingResponse] = {}

    def handle(
        self, request: pb.ProcessingRequest, api: ClientApi = OPENAI_CHAT
    ) -> Answer | Pending:
        kind = request.WhichOneof("request")
        if kind == "request_body":
            return self.on_request_body(request.request_body.body, api)
        # A phase we did not ask for (an Envoy config of the user's own): let it through.
        return passthrough(kind)

    def on_request_body(self, body: bytes, api: ClientApi = OPENAI_CHAT) -> Answer | Pending:
        if len(body) > self.config.listener.max_body_bytes:
            return self.too_large(api)
        return self.decide(parse_chat_request(body), api)

    def too_large(self, api: ClientApi = OPENAI_CHAT) -> pb.ProcessingResponse:
        # Envoy lets a little more through (wire.envoy_body_limit) so that the body with its
        # model put in still fits its buffer: the client's limit is enforced here.
        return error_response(too_large(self.config.listener.max_body_bytes), api)

    def decide(
        self, request: ChatRequest | ErrorReply, api: ClientApi = OPENAI_CHAT
    ) -> Answer | Pending:
        """The answer to a parsed body: read here (``on_request_body``), or a big one read in
        a helper process (``resolve.read_chat_request``)."""
        step = begin(request, api, self.config)
        if isinstance(step, Pending):
            return step
        if isinstance(step, ErrorReply):
            return error_response(step, api)
        assert isinstance(request, ChatRequest)  # begin passes an ErrorReply on
        return self.route(step, request, api)

    def on_route_choice(
        self, pending: Pending, choice: RouteChoice | None, router_ms: float | None = None
    ) -> Answer:
        """Finish a ``Pending`` request with the router's choice (None: it failed or timed
        out); ``router_ms``, how long the router took, goes into the answer's metadata for
        the access log."""
        decision = conclude(pending, choice, self.config)
        answer: Answer
        if isinstance(decision, ErrorReply):
            answer = error_response(decision, pending.api)
        else:
            answer = self.route(decision, pending.request, pending.api)
        if router_ms is not None:
            # The answer is a copy (or a reply of its own): the cached template stays as it is.
            decision_fields(answer)[ROUTER_MS_KEY].number_value = round(router_ms, 3)
        return answer

    def route(
        self, decision: Decision, request: ChatRequest, api: ClientApi = OPENAI_CHAT
    ) -> Answer:
        interface = decision.provider.interface
        if interface not in api.upstream_paths:
            # Only a token count asks this: a provider that cannot count gets an estimate.
            try:
                counted = json_bytes({"input_tokens": estimate_input_tokens(_value(request))})
            except RecursionError:
                return error_response(TOO_DEEP, api)
            return self._decided_reply(decision, request, api, 200, counted)
        response = pb.ProcessingResponse()
        response.CopyFrom(self._template(decision, api, request.stream))
        if decision.provider.wildcard:
            _name_the_model(response.dynamic_metadata, decision)
        if interface != api.name:
            return self._translated(response, decision, request, api)
        if type(request.wire.text) is not str:  # a big body, read by a helper process
            return SplicedAnswer(response, pieces(request.wire, decision.model_id))
        new_body = with_model(request.wire, decision.model_id)
        if new_body is not None:
            # Envoy sets content-length from the new body itself (no headers phase).
            response.request_body.response.body_mutation.body = new_body
        return response

    def _translated(
        self,
        response: pb.ProcessingResponse,
        decision: Decision,
        request: ChatRequest,
        api: ClientApi,
    ) -> Answer:
        pair = translator(api.name, decision.provider.interface)
        assert pair is not None  # the APIs differ
        body = _value(request)
        try:
            translated = pair.request(body, decision.model_id)
        except TranslationError as refused:
            status, reply = pair.refusal(refused)
            return self._decided_reply(decision, request, api, status, reply)
        try:
            response.request_body.response.body_mutation.body = json_bytes(translated)
        except ValueError:  # a number past a double's range (1e999) has no JSON spelling
            out_of_range = pair.refusal(TranslationError("The request has a number out of range."))
            return self._decided_reply(decision, request, api, *out_of_range)
        except RecursionError:  # the translation nests a level or two deeper than the body
            return error_response(TOO_DEEP, api)
        if wants_stream(body):
            # What the response's translator needs of the request (response_translation.py)
            # reaches it as metadata that Envoy forwards with the response.
            options = body.get("stream_options")
            usage = isinstance(options, dict) and options.get("include_usage") is True
            response.dynamic_metadata.update({RESPONSE_NAMESPACE: {INCLUDE_USAGE_KEY: usage}})
        return response

    def _decided_reply(
        self, decision: Decision, request: ChatRequest, api: ClientApi, status: int, body: bytes
    ) -> pb.ProcessingResponse:
        """A reply the server gives itself for a routed request (a token estimate, a request
        the provider's API cannot be asked): with the decision's metadata, so the client
        sees the decision headers as on any routed response."""
        reply = immediate(status, body)
        template = self._template(decision, api, request.stream)
        reply.dynamic_metadata.CopyFrom(template.dynamic_metadata)
        if decision.provider.wildcard:
            _name_the_model(reply.dynamic_metadata, decision)
        return reply

    def _template(self, decision: Decision, api: ClientApi, stream: bool) -> pb.ProcessingResponse:
        """The answer's fixed part for a decision, made once per (entry, routing, route,
        chain, client API, stream). A wildcard's names the model the client chose:
        ``_name_the_model`` writes it into the copy (a cache keyed by client-chosen ids would
        grow without bound). The client's API and the stream flag are there for the access
        log only: in the template they cost a request nothing more than the copy."""
        provider = decision.provider.name
        key = (provider, decision.routing, decision.route, decision.chain, api.metadata, stream)
        template = self._templates.get(key)
        if template is None:
            template = self._make_template(decision)
            fields = template.dynamic_metadata.fields[METADATA_NAMESPACE].struct_value.fields
            fields[CLIENT_API_KEY].string_value = api.metadata
            fields[STREAM_KEY].bool_value = stream
            self._templates[key] = template
        return template

    @staticmethod
    def _make_template(decision: Decision) -> pb.ProcessingResponse:
        provider = decision.provider
        fields = {
            PROVIDER_KEY: provider.name,
            # A wildcard's is written per request (_name_the_model), never kept here.
            MODEL_KEY: provider.name if provider.wildcard else decision.model,
            ROUTING_KEY: decision.routing,
        }
        if decision.route is not None:
            fields[ROUTE_KEY] = decision.route
        if decision.chain is not None:
            fields[CHAIN_KEY] = decision.chain
        if provider.access_key is not None:
            fields[AUTH_KEY] = provider.auth_prefix + provider.access_key
        metadata = struct_pb2.Struct()
        metadata.update({METADATA_NAMESPACE: fields})
        return pb.ProcessingResponse(
            request_body=pb.BodyResponse(response=_CLEAR_ROUTE), dynamic_metadata=metadata
        )


def _name_the_model(metadata: struct_pb2.Struct, decision: Decision) -> None:
    """A wildcard's decision in its answer's metadata: the model the client chose."""
    fields = metadata.fields[METADATA_NAMESPACE].struct_value.fields
    fields[MODEL_KEY].string_value = decision.model
    fields[MODEL_ID_KEY].string_value = decision.model_id


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


def passthrough(kind: str | None) -> pb.ProcessingResponse:
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

"""One ext_proc message: Envoy's buffered request body in, the routing decision out.

No I/O here: the server feeds each ProcessingRequest to ``Processor.handle`` and sends back
what it returns. Envoy sends one message per chat request, the whole body (the headers
phase is skipped: Envoy's route table checks method and path and answers /v1/models). The
answer replaces the body when the model changes and carries the decision as dynamic
metadata, which the provider routes match (envoy_config.py). Every answer's fixed part is
built once per (provider, routing, route) and copied per request.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import struct_pb2

from ._proto import ext_proc_pb2 as pb
from .body import with_model
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
    # raw_value, not value: Envoy applied a `value` string as empty (ARCHITECTURE.md).
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
class PendingRoute:
    """A body that named no model: the router must read it before it can be routed."""

    request: ChatRequest


class Processor:
    """Turns a config into ext_proc answers; shared by all streams, read-only after init
    but for the cache of answer templates (bounded: providers x routings x routes)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._templates: dict[tuple[str, str, str | None], pb.ProcessingResponse] = {}

    def handle(self, request: pb.ProcessingRequest) -> pb.ProcessingResponse | PendingRoute:
        kind = request.WhichOneof("request")
        if kind == "request_body":
            return self.on_request_body(request.request_body.body)
        # A phase we did not ask for (an Envoy config of the user's own): let it through.
        return _passthrough(kind)

    def on_request_body(self, body: bytes) -> pb.ProcessingResponse | PendingRoute:
        if len(body) > self.config.listener.max_body_bytes:
            # Envoy lets a little more through (wire.envoy_body_limit) so that the body with
            # its model put in still fits its buffer: the client's limit is enforced here.
            return error_response(too_large(self.config.listener.max_body_bytes))
        request = parse_chat_request(body)
        if isinstance(request, ErrorReply):
            return error_response(request)
        decision = resolve(request.model, self.config)
        if isinstance(decision, AskRouter):
            return PendingRoute(request)
        if isinstance(decision, ErrorReply):
            return error_response(decision)
        return self.route(decision, request)

    def on_route_choice(
        self, pending: PendingRoute, choice: RouteChoice | None
    ) -> pb.ProcessingResponse:
        """Finish a ``PendingRoute`` with the router's choice (None: it failed or timed out)."""
        decision = resolve_preference(choice, self.config)
        if isinstance(decision, ErrorReply):
            return error_response(decision)
        return self.route(decision, pending.request)

    def route(self, decision: Decision, request: ChatRequest) -> pb.ProcessingResponse:
        response = pb.ProcessingResponse()
        response.CopyFrom(self._template(decision))
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

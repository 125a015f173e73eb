"""One ext_proc exchange: Envoy's ProcessingRequest in, our ProcessingResponse out.

No I/O here: the gRPC servicer feeds each message of a stream to ``Exchange.handle`` and sends
back what it returns. Everything that depends only on the config (each provider's header
mutations, the /v1/models reply) is built once in ``Processor.__init__``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ._proto import ext_proc_pb2 as pb
from .config import Config, Provider
from .errors import ErrorReply, invalid_request
from .headers import CLUSTER_HEADER, MODEL_HEADER, OWN_HEADERS, ROUTE_HEADER, ROUTING_HEADER
from .resolve import (
    AskRouter,
    ChatRequest,
    Decision,
    parse_chat_request,
    resolve,
    resolve_preference,
)
from .router.base import RouteChoice

CHAT_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"
UPSTREAM_CHAT_SUFFIX = "/chat/completions"

# Client credentials are meant for the gateway, never for the provider.
CLIENT_AUTH_HEADERS = ("authorization", "x-api-key", "api-key")

_OVERWRITE = pb.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def _header(key: str, value: str | bytes) -> pb.HeaderValueOption:
    raw = value.encode() if isinstance(value, str) else value
    # raw_value, not value: Envoy applied a `value` string as empty (ARCHITECTURE.md).
    return pb.HeaderValueOption(
        header=pb.HeaderValue(key=key, raw_value=raw), append_action=_OVERWRITE
    )


def _immediate(status: int, body: bytes, *extra: pb.HeaderValueOption) -> pb.ProcessingResponse:
    headers = pb.HeaderMutation(set_headers=[_header("content-type", "application/json"), *extra])
    return pb.ProcessingResponse(
        immediate_response=pb.ImmediateResponse(
            status=pb.HttpStatus(code=status), headers=headers, body=body
        )
    )


def error_response(error: ErrorReply) -> pb.ProcessingResponse:
    return _immediate(error.status, error.body())


@dataclass(frozen=True)
class PendingRoute:
    """A body that named no model: the router must read it before it can be routed."""

    request: ChatRequest
    query: str


@dataclass(frozen=True)
class _Target:
    """What a routed request to one provider always gets, built once per config."""

    set_headers: tuple[pb.HeaderValueOption, ...]
    remove_headers: tuple[str, ...]
    path: str  # the upstream path before any query string


class Processor:
    """Turns a config into ext_proc answers; shared by all streams, read-only after init."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._targets = {p.name: self._target(p) for p in config.providers}
        self._models = self._models_list()
        # The headers phase of a chat request: drop spoofed copies of our headers, go on.
        self._continue_headers = pb.ProcessingResponse(
            request_headers=pb.HeadersResponse(
                response=pb.CommonResponse(
                    header_mutation=pb.HeaderMutation(remove_headers=list(OWN_HEADERS))
                )
            )
        )

    def exchange(self) -> Exchange:
        return Exchange(self)

    @staticmethod
    def _target(p: Provider) -> _Target:
        headers = [_header(CLUSTER_HEADER, p.cluster), _header(MODEL_HEADER, p.name)]
        if p.access_key is not None:
            headers.append(_header(p.auth_header, p.auth_prefix + p.access_key))
        removed = tuple(
            h for h in CLIENT_AUTH_HEADERS if not (p.access_key is not None and h == p.auth_header)
        )
        return _Target(tuple(headers), removed, p.endpoint.path_prefix + UPSTREAM_CHAT_SUFFIX)

    def _models_list(self) -> dict[str, dict[str, object]]:
        models: dict[str, dict[str, object]] = {}
        for p in self.config.providers:
            models[p.name] = {"id": p.name, "object": "model", "created": 0, "owned_by": p.provider}
        for alias in self.config.aliases.values():
            models[alias.name] = {
                "id": alias.name,
                "object": "model",
                "created": 0,
                "owned_by": "plano",
                "target": alias.target.name,
            }
        return models

    def on_request_headers(self, headers: pb.HttpHeaders) -> tuple[pb.ProcessingResponse, str]:
        """The answer to the headers phase, and the query string to keep for the body phase."""
        method, path = "", ""
        for h in headers.headers.headers:
            if h.key == ":path":
                path = h.raw_value.decode("latin-1")
            elif h.key == ":method":
                method = h.raw_value.decode("latin-1")
        route, _, query = path.partition("?")
        route = route.rstrip("/") or "/"
        if route == CHAT_PATH:
            if method != "POST":
                return error_response(
                    ErrorReply(
                        405, f"{CHAT_PATH} takes POST, not {method}.", code="method_not_allowed"
                    )
                ), ""
            if headers.end_of_stream:
                return error_response(
                    invalid_request(
                        "The request has no body: send a JSON chat-completions request.",
                        code="missing_body",
                    )
                ), ""
            return self._continue_headers, query
        if route == MODELS_PATH or route.startswith(MODELS_PATH + "/"):
            return self._models_reply(method, route), ""
        return error_response(
            ErrorReply(
                404,
                f"Unknown endpoint {method} {route}: this gateway serves POST {CHAT_PATH} "
                f"and GET {MODELS_PATH}.",
                code="unknown_url",
            )
        ), ""

    def _models_reply(self, method: str, route: str) -> pb.ProcessingResponse:
        if method != "GET":
            return error_response(
                ErrorReply(
                    405, f"{MODELS_PATH} takes GET, not {method}.", code="method_not_allowed"
                )
            )
        if route == MODELS_PATH:
            data = list(self._models.values())
            return _immediate(200, json.dumps({"object": "list", "data": data}).encode())
        model = self._models.get(route[len(MODELS_PATH) + 1 :])
        if model is None:
            return error_response(
                ErrorReply(
                    404,
                    f"The model '{route[len(MODELS_PATH) + 1 :]}' is not served by this gateway.",
                    param="model",
                    code="model_not_found",
                )
            )
        return _immediate(200, json.dumps(model).encode())

    def on_request_body(self, body: bytes, query: str) -> pb.ProcessingResponse | PendingRoute:
        request = parse_chat_request(body)
        if isinstance(request, ErrorReply):
            return error_response(request)
        decision = resolve(request.model, self.config)
        if isinstance(decision, AskRouter):
            return PendingRoute(request, query)
        if isinstance(decision, ErrorReply):
            return error_response(decision)
        return self.route(decision, request.body, query)

    def on_route_choice(
        self, pending: PendingRoute, choice: RouteChoice | None
    ) -> pb.ProcessingResponse:
        """Finish a ``PendingRoute`` with the router's choice (None: it failed or timed out)."""
        decision = resolve_preference(choice, self.config)
        if isinstance(decision, ErrorReply):
            return error_response(decision)
        return self.route(decision, pending.request.body, pending.query)

    def route(
        self, decision: Decision, body: dict[str, object], query: str
    ) -> pb.ProcessingResponse:
        provider = decision.provider
        target = self._targets[provider.name]
        body["model"] = provider.model_id
        new_body = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        headers = [
            *target.set_headers,
            _header(":path", f"{target.path}?{query}" if query else target.path),
            # Envoy answers 500 if a replaced body disagrees with content-length.
            _header("content-length", str(len(new_body))),
            _header(ROUTING_HEADER, decision.routing),
        ]
        if decision.route is not None:
            headers.append(_header(ROUTE_HEADER, decision.route))
        return pb.ProcessingResponse(
            request_body=pb.BodyResponse(
                response=pb.CommonResponse(
                    header_mutation=pb.HeaderMutation(
                        set_headers=headers, remove_headers=list(target.remove_headers)
                    ),
                    body_mutation=pb.BodyMutation(body=new_body),
                    # Without this Envoy keeps the route it chose before x-plano-cluster existed.
                    clear_route_cache=True,
                )
            )
        )


class Exchange:
    """The state of one gRPC stream: one HTTP request's trip through the filter."""

    __slots__ = ("_processor", "_query")

    def __init__(self, processor: Processor) -> None:
        self._processor = processor
        self._query = ""

    def handle(self, request: pb.ProcessingRequest) -> pb.ProcessingResponse | PendingRoute:
        kind = request.WhichOneof("request")
        if kind == "request_headers":
            response, self._query = self._processor.on_request_headers(request.request_headers)
            return response
        if kind == "request_body":
            return self._processor.on_request_body(request.request_body.body, self._query)
        # Phases we did not ask for (a config mismatch): let them through unchanged.
        return _passthrough(kind)


def _passthrough(kind: str | None) -> pb.ProcessingResponse:
    empty = pb.CommonResponse()
    if kind == "response_headers":
        return pb.ProcessingResponse(response_headers=pb.HeadersResponse(response=empty))
    if kind == "response_body":
        return pb.ProcessingResponse(response_body=pb.BodyResponse(response=empty))
    if kind == "request_trailers":
        return pb.ProcessingResponse(request_trailers=pb.TrailersResponse())
    return pb.ProcessingResponse(response_trailers=pb.TrailersResponse())

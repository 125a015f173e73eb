"""The decision as request headers, for a mesh or gateway ingress (``serve --decision-headers``).

Our own Envoy config (envoy_config/) routes on the decision's dynamic metadata and turns it
into the provider's credential header. An ingress whose route table is the mesh's own (Gateway
API ``HTTPRoute`` rules, deploy/kubernetes/mesh/) can match request headers but neither
dynamic metadata nor a header value taken from it. So in this mode the server does what our
provider routes would, in the request's headers, and the ingress's rules match the result
(wire.py names the headers):

- the request headers phase (the ingress must send it, and the body buffered after it): the
  client's API from ``:path`` (the mesh sets no gRPC metadata); an unknown path, a wrong
  method or a missing body answered at once in the client's error shape; every ``x-plano-*``
  header the client sent removed; what the client's API requires (``anthropic-version``) added
  when absent;
- the body phase: the usual answer (the body with its ``model``, the metadata without the
  key), and a header mutation: ``x-plano-provider`` and ``x-plano-upstream`` for the mesh's
  rules, the provider's credential header with the gateway's key, the entry's configured
  ``headers``, the new body's ``content-length``, Azure OpenAI's deployment ``:path``; the
  client's credential headers and cookies removed (under ``passthrough_auth`` the client's
  credential stays and no key is set); ``clear_route_cache``, so that the ingress picks its
  route again from these headers.

What needs our generated Envoy config and is NOT done here: translation between OpenAI's and
Anthropic's APIs (a second ext_proc stream on the response, on routes of ours), so a decision
for a provider of the other API is refused with a 400 in the client's shape, never sent to a
route that would forward it untranslated; fail-over chains (the primary serves alone); the
``x-plano-model``/``-routing``/``-route`` response headers; ``GET /v1/models``. The answers
carry provider keys in clear: the server's port must be reachable from the ingress only.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING
from urllib.parse import quote

from google.protobuf.message import DecodeError

from .._proto import ext_proc_pb2 as pb
from ..apis import CLIENT_APIS, OPENAI_CHAT, ClientApi
from ..apis.anthropic_messages import ANTHROPIC_MESSAGES
from ..config import Config, Endpoint, Provider
from ..errors import ErrorReply
from ..resolve import ChatRequest, Decision
from ..upstreams import UPSTREAM_APIS
from ..wire import (
    AUTH_KEY,
    CLIENT_AUTH_HEADERS,
    CLIENT_ONLY_HEADERS,
    METADATA_NAMESPACE,
    OUR_HEADER_PREFIX,
    PROVIDER_HEADER,
    UPSTREAM_HEADER,
)
from .h2grpc import FinalAnswer
from .processor import Answer, Processor, SplicedAnswer, error_response

if TYPE_CHECKING:
    from .server import ExtProcService

log = logging.getLogger("plano_extproc.server")

_OVERWRITE = pb.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_API_NAMES = {"openai": "OpenAI's chat completions API", "anthropic": "Anthropic's Messages API"}
# Characters a path segment may hold as they are (RFC 3986 pchar, but '%'): a deployment name
# is made of them; anything else is percent-encoded, never a second segment or a query.
_PCHAR = "-._~!$&'()*+,;=:@"

Handler = Callable[[bytes], "bytes | Awaitable[bytes]"]

# The headers answer that changes nothing (most requests'), serialized once.
CONTINUE = pb.ProcessingResponse(request_headers=pb.HeadersResponse(response=pb.CommonResponse()))
_CONTINUE_BYTES = CONTINUE.SerializeToString()


class DecisionHeadersProcessor(Processor):
    """A ``Processor`` whose answers also carry the decision as request headers. The mode is
    this class, chosen once when the server is built: the metadata mode's answers are
    unchanged, and pay nothing for this one."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        # Per client path: its API. A trailing slash is the same path, as on our routes.
        self._apis = {p: api for api in CLIENT_APIS for p in (api.path, api.path + "/")}
        self._served = ", ".join(f"POST {api.path}" for api in CLIENT_APIS)
        self._required_names = {n for api in UPSTREAM_APIS.values() for n in api.required_headers}

    # --- the request headers phase -----------------------------------------------------------

    def on_request_headers(
        self, message: pb.HttpHeaders
    ) -> tuple[ClientApi | None, pb.ProcessingResponse]:
        """The client's API (None: the request is answered here, and the answer ends it)
        and the answer to the headers (``CONTINUE`` when it changes nothing)."""
        path = method = ""
        present: set[str] = set()
        ours: list[str] = []
        # Envoy's header names are lower-case already (its header map's keys are).
        for header in message.headers.headers:
            key = header.key
            if key == ":path":
                path = _text(header)
            elif key == ":method":
                method = _text(header)
            elif key.startswith(OUR_HEADER_PREFIX):
                ours.append(key)
            elif key in self._required_names:
                present.add(key)
        api = self._apis.get(path.partition("?")[0])
        error = self._refusal(api, path, method, message.end_of_stream)
        if error is not None:
            shape = api or (ANTHROPIC_MESSAGES if path.startswith("/v1/messages") else OPENAI_CHAT)
            return None, error_response(error, shape)
        assert api is not None
        # Only a provider of the client's own API is reached here (no translation): what that
        # API requires, the client's own value standing.
        missing = [
            _header(name, value)
            for name, value in UPSTREAM_APIS[api.name].required_headers.items()
            if name not in present
        ]
        if not ours and not missing:
            return api, CONTINUE
        # A client's x-plano-* header could pose as the decision to the ingress's rules.
        mutation = pb.HeaderMutation(remove_headers=sorted(set(ours)), set_headers=missing)
        return api, pb.ProcessingResponse(
            request_headers=pb.HeadersResponse(response=pb.CommonResponse(header_mutation=mutation))
        )

    def _refusal(
        self, api: ClientApi | None, path: str, method: str, no_body: bool
    ) -> ErrorReply | None:
        """What our own route table answers without the server (the mesh's rules send every
        path under /v1 here)."""
        if api is None:
            return ErrorReply(
                404,
                f"No route for this request: this gateway serves {self._served}.",
                code="unknown_url",
            )
        if method != "POST":
            return ErrorReply(405, f"{api.path} takes POST.", code="method_not_allowed")
        if no_body:
            return ErrorReply(
                400,
                f"The request has no body: send a JSON body to {api.path}.",
                code="missing_body",
            )
        return None

    # --- the body phase ----------------------------------------------------------------------

    def route(
        self, decision: Decision, request: ChatRequest, api: ClientApi = OPENAI_CHAT
    ) -> Answer:
        provider = decision.provider
        if provider.interface != api.name and provider.interface in api.upstream_paths:
            # Translation needs our routes (its response stream); the ingress's rule for the
            # provider would forward the request untranslated.
            return error_response(_cross_api(decision, api), api)
        answer = super().route(decision, request, api)
        head = answer.head if isinstance(answer, SplicedAnswer) else answer
        if head.WhichOneof("response") != "request_body":
            return answer  # a reply the server gives itself (a token estimate)
        common = head.request_body.response
        sets = common.header_mutation.set_headers
        # The client's content-length is the old body's: Envoy refuses to forward a mutated
        # body whose length differs from the header.
        if isinstance(answer, SplicedAnswer):
            sets.append(_header("content-length", str(sum(len(p) for p in answer.body))))
        elif common.HasField("body_mutation"):
            sets.append(_header("content-length", str(len(common.body_mutation.body))))
        if provider.api_version is not None:
            sets.append(_header(":path", _deployment_path(provider, decision.model_id)))
        return answer

    @staticmethod
    def _make_template(decision: Decision) -> pb.ProcessingResponse:
        template = Processor._make_template(decision)
        # The key travels in the header; kept out of the ingress's metadata (and its logs).
        fields = template.dynamic_metadata.fields[METADATA_NAMESPACE].struct_value.fields
        if AUTH_KEY in fields:
            del fields[AUTH_KEY]
        common = template.request_body.response
        common.header_mutation.CopyFrom(decision_mutation(decision.provider))
        common.clear_route_cache = True
        return template


def decision_mutation(provider: Provider) -> pb.HeaderMutation:
    """What our provider route for ``provider`` does to the request's headers, as a header
    mutation: the selectors, the credential, the configured headers; the client's
    credentials removed. No header is both set and removed (Envoy's order is not ours to
    rely on)."""
    sets = {PROVIDER_HEADER: provider.name, UPSTREAM_HEADER: upstream_name(provider.endpoint)}
    if provider.keyed and provider.access_key is not None:
        sets[provider.auth_header.lower()] = provider.auth_prefix + provider.access_key
    for name, value in provider.headers:
        sets[name] = value
    # With passthrough_auth the client's credential headers pass as sent.
    kept = CLIENT_AUTH_HEADERS if provider.passthrough_auth else ()
    remove = [h for h in CLIENT_ONLY_HEADERS if h not in kept and h not in sets]
    return pb.HeaderMutation(
        set_headers=[_header(name, value) for name, value in sets.items()],
        remove_headers=remove,
    )


def upstream_name(endpoint: Endpoint) -> str:
    """The ``x-plano-upstream`` value of a provider endpoint: its host, with ``:port`` when
    the port is not its scheme's default (the FQDN and port of the ingress's backend)."""
    host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
    default = 443 if endpoint.tls else 80
    return host if endpoint.port == default else f"{host}:{endpoint.port}"


def _deployment_path(provider: Provider, model_id: str) -> str:
    """Azure OpenAI's path (the model id is the deployment) with its api-version query, as
    our Azure routes and a fallback attempt write it; the client's query is not kept."""
    api_path = UPSTREAM_APIS[provider.interface].path
    deployment = quote(model_id, safe=_PCHAR)
    version = quote(str(provider.api_version), safe="")
    prefix = provider.endpoint.path_prefix
    return f"{prefix}/openai/deployments/{deployment}{api_path}?api-version={version}"


def _cross_api(decision: Decision, api: ClientApi) -> ErrorReply:
    other = next(a for a in CLIENT_APIS if a.name == decision.provider.interface and a.generates)
    return ErrorReply(
        400,
        f"The model {decision.model} speaks {_API_NAMES[decision.provider.interface]}, and this "
        f"gateway does not translate between APIs where it runs (a mesh ingress): send the "
        f"request to {other.path}, or choose a model that speaks {_API_NAMES[api.name]}.",
        param="model",
        code="translation_unavailable",
    )


_MISCONFIGURED = ErrorReply(
    500,
    "The gateway's ingress did not send the request headers to the router: its ext_proc "
    "processing mode must send the request headers, then the buffered body.",
    type="server_error",
    code="router_misconfigured",
)


class DecisionHeaderStreams:
    """The handlers of Envoy's streams in this mode: one ``_Stream`` per request."""

    def __init__(self, service: ExtProcService, processor: DecisionHeadersProcessor) -> None:
        self._service = service
        self._processor = processor

    def open_stream(self, metadata: Mapping[str, str]) -> Handler:
        # The mesh sets no gRPC metadata: the request's own path names its API.
        return _Stream(self._service, self._processor)


class _Stream:
    """One request: its headers (the API), then its body, answered as any decision."""

    __slots__ = ("_api", "_processor", "_service")

    def __init__(self, service: ExtProcService, processor: DecisionHeadersProcessor) -> None:
        self._service = service
        self._processor = processor
        self._api: ClientApi | None = None

    def __call__(self, payload: bytes) -> bytes | Awaitable[bytes]:
        if self._api is not None:
            return self._service.handle(payload, self._api)
        try:
            request = pb.ProcessingRequest.FromString(payload)
        except DecodeError as exc:
            log.warning("an ext_proc message that is not a ProcessingRequest: %s", exc)
            return FinalAnswer(error_response(_MISCONFIGURED).SerializeToString())
        if not request.HasField("request_headers"):
            # Without the headers phase Envoy applies no header mutation: nothing this mode
            # decides could reach the ingress's route table. Refused, never let through.
            log.error("%s", _MISCONFIGURED.message)
            return FinalAnswer(error_response(_MISCONFIGURED).SerializeToString())
        api, answer = self._processor.on_request_headers(request.request_headers)
        if api is None:
            return FinalAnswer(answer.SerializeToString())
        self._api = api
        return _CONTINUE_BYTES if answer is CONTINUE else answer.SerializeToString()


def _text(header: pb.HeaderValue) -> str:
    return header.raw_value.decode("latin-1") if header.raw_value else header.value


def _header(key: str, value: str) -> pb.HeaderValueOption:
    # raw_value, not value: Envoy 1.40 applied a `value` string as an empty header value.
    return pb.HeaderValueOption(
        header=pb.HeaderValue(key=key, raw_value=value.encode()), append_action=_OVERWRITE
    )

"""One fallback attempt: the ext_proc messages of a chain's upstream filter in, answers out.

A decision that names a fail-over chain (config.Chain) sends the request to the chain's
aggregate cluster; Envoy tries the members in order, and each attempt runs the aggregate's
upstream filters (envoy_config/fallback.py): a header_mutation names the member Envoy chose
in ``x-plano-host-target``, then an ext_proc stream to this server (gRPC metadata
``x-plano-fallback: <chain id>``) readies the request for that member, unless it is the
primary on the first attempt, which the decision readied already. No I/O here: the server
feeds each message to ``FallbackAttempt.handle`` and sends back what it returns.

What the stream is given is the request as the PRIMARY's route left it, and on a later
attempt as the attempt before left it: Envoy replays the body it received (the decision's,
shaped for the primary: its API, its ``model``), and upstream filters mutate the router's
own header map, so an attempt starts from the previous attempt's path, key and
content-length. Every answer therefore states everything the member needs, never "keep":

- request headers: the member's ``:path`` (the query dropped), no credential but the
  member's own, no header of another API or of another member's config, the member's API's
  required headers, and a ``mode_override`` that turns the response phases off unless the
  member speaks another API than the primary;
- request body (buffered, whole): the primary-shaped body with the member's ``model``, or
  translated from the primary's API to the member's, and its ``content-length``;
- response (only when the APIs differ): translated back to the primary's API, exactly as a
  translated provider route does (response_translation.py), the "client" of that pair being
  the primary's API. Whatever is downstream (the decision route's own response translation,
  when the client speaks another API than the primary) then works unchanged.

An immediate response of this filter is a local reply of an upstream filter: Envoy does not
retry it (checked on 1.40: a 503 from this filter's headers phase reached the client after one
attempt, no provider asked), so a member this server refuses ends the chain there.
"""

from __future__ import annotations

from urllib.parse import quote

from .._proto import ext_proc_pb2 as pb
from ..apis import ANTHROPIC_MESSAGES, OPENAI_CHAT, ClientApi
from ..body import NestedTooDeeply, parse, with_model
from ..config import Chain, Config, Target
from ..errors import ErrorReply, invalid_request
from ..translate import TranslationError, Translator, translator, wants_stream
from ..upstreams import UPSTREAM_APIS
from ..wire import CLIENT_AUTH_HEADERS, HOST_TARGET_HEADER, envoy_body_limit
from .processor import TOO_DEEP, error_response, immediate, json_bytes, passthrough
from .response_translation import TranslatedResponse

_Action = pb.HeaderValueOption.HeaderAppendAction
_OVERWRITE = pb.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_SEND, _SKIP = pb.ProcessingMode.SEND, pb.ProcessingMode.SKIP

# The shape of the errors this stream answers with: the primary's API, which is what the
# response of this attempt must look like (a client of another API gets it through the
# decision route's own response translation, as any of the primary's replies).
_ERROR_SHAPES: dict[str, ClientApi] = {api.name: api for api in (OPENAI_CHAT, ANTHROPIC_MESSAGES)}

# The member's request phases are stated again in every override: ProcessingMode is one
# whole message, and an override that left request_body_mode at 0 (NONE) while the filter's
# config says BUFFERED hung the request on Envoy 1.40 (the provider never got it).
_SAME_API = pb.ProcessingMode(
    request_header_mode=_SEND,
    request_body_mode=pb.ProcessingMode.BUFFERED,
    # The member answers in the primary's API already: no response phase, no more messages.
    response_header_mode=_SKIP,
    response_body_mode=pb.ProcessingMode.NONE,
    request_trailer_mode=_SKIP,
    response_trailer_mode=_SKIP,
)
_OTHER_API = pb.ProcessingMode(
    request_header_mode=_SEND,
    request_body_mode=pb.ProcessingMode.BUFFERED,
    # The response is translated as it flows, an event stream chunk by chunk.
    response_header_mode=_SEND,
    response_body_mode=pb.ProcessingMode.STREAMED,
    request_trailer_mode=_SKIP,
    response_trailer_mode=_SKIP,
)

_UNKNOWN_TARGET = ErrorReply(
    502,
    "The gateway could not tell which model of the fail-over chain this attempt goes to.",
    type="server_error",
    code="fallback_target_unknown",
)
# Characters a path segment may hold as they are (RFC 3986 pchar, but '%'): a configured
# deployment name is made of them; anything else is percent-encoded, never a second segment
# or a query.
_PCHAR = "-._~!$&'()*+,;=:@"


class FallbackAttempt:
    """The state of one attempt of a chain's request; a new one per gRPC stream."""

    def __init__(self, config: Config, chain: Chain) -> None:
        self._members = {member.name: member for member in chain.members}
        self._primary_api = chain.primary.provider.interface
        # The API whose shape this stream's error replies take: the primary's (see
        # _ERROR_SHAPES); the server's own, should this fail, too.
        self.error_api = _ERROR_SHAPES[self._primary_api]
        # A body past what Envoy buffers would make it fail while applying the answer; the
        # decision's body fits, but a translation may write a longer one.
        self._body_limit = envoy_body_limit(config.listener.max_body_bytes)
        # Every member's credential header, and the values of every key the gateway sends
        # (a chain member's is what the primary's route or an earlier attempt left in the
        # headers; any provider's, to be sure): a passthrough member gets none of them.
        self._credential_headers = sorted(
            {*CLIENT_AUTH_HEADERS, *(m.provider.auth_header for m in chain.members)}
        )
        self._our_credentials = {
            p.auth_prefix + p.access_key
            for p in config.providers
            if p.keyed and p.access_key is not None
        }
        # Every member's configured header names: another member's must not reach this one.
        self._configured_headers = {name for m in chain.members for name, _ in m.provider.headers}
        self._target: Target | None = None
        self._pair: Translator | None = None  # primary's API -> the member's, when they differ
        self._response: TranslatedResponse | None = None

    def handle(self, request: pb.ProcessingRequest) -> tuple[pb.ProcessingResponse, bool]:
        """The answer to one message, and whether it is the last this attempt needs."""
        kind = request.WhichOneof("request")
        if kind == "request_headers":
            return self._request_headers(request.request_headers)
        if kind == "request_body":
            return self._request_body(request.request_body)
        if kind in ("response_headers", "response_body") and self._response is not None:
            return self._response.handle(request)
        # A response of the primary's API (an Envoy that ignored the mode override), trailers
        # nobody asked for, or a phase of a config of the user's own: let it through.
        last = kind == "response_trailers" or (
            kind == "response_body" and request.response_body.end_of_stream
        )
        return passthrough(kind), last

    # --- request headers ---------------------------------------------------------------------

    def _request_headers(self, message: pb.HttpHeaders) -> tuple[pb.ProcessingResponse, bool]:
        headers: dict[str, list[str]] = {}
        for header in message.headers.headers:
            value = header.raw_value.decode("latin-1") if header.raw_value else header.value
            headers.setdefault(header.key.lower(), []).append(value)
        names = headers.get(HOST_TARGET_HEADER, [])
        target = self._members.get(names[0]) if len(names) == 1 else None
        if target is None:
            # The upstream filter before this one names a member on every attempt: without
            # one (or with a name the config does not know: a server of another config) the
            # request cannot be readied for anyone, and must not leave as the last attempt
            # left it (another provider's path and key).
            return self._error(_UNKNOWN_TARGET), True
        provider = target.provider
        if provider.missing_vars:
            # The decision answers this for a model it chose (resolve._checked); a member's
            # missing key is found only now. Sending the request without a key would cost a
            # provider's 401 (not retried either) that hides the cause; this names it. It is
            # not retried: the members after this one are not tried.
            return self._error(_missing_key(target)), True
        self._target = target
        self._pair = translator(self._primary_api, provider.interface)  # None: the same API
        mutation = self._header_mutation(target, headers)
        answer = pb.ProcessingResponse(
            request_headers=pb.HeadersResponse(
                response=pb.CommonResponse(header_mutation=mutation)
            ),
            mode_override=_OTHER_API if self._pair is not None else _SAME_API,
        )
        # A request without a body (not one the decision routes) gets no body message.
        return answer, message.end_of_stream and self._pair is None

    def _header_mutation(self, target: Target, headers: dict[str, list[str]]) -> pb.HeaderMutation:
        provider = target.provider
        member_api = UPSTREAM_APIS[provider.interface]
        sets: dict[str, tuple[str, _Action]] = {":path": (_path(target), _OVERWRITE)}
        for name, value in provider.headers:
            sets[name] = (value, _OVERWRITE)
        # What the member's API requires (Anthropic: a version), as its provider routes set
        # it. A translated request is written for ours, over any. Of the primary's API, the
        # client's own value (or the primary route's, or the member's configured one) stands;
        # ours is added if an attempt at a member of the other API removed it. Decided here,
        # not by ADD_IF_ABSENT: Envoy 1.40's ext_proc applied that as an overwrite (checked:
        # a client's header was replaced).
        translated = provider.interface != self._primary_api
        for name, value in member_api.required_headers.items():
            if translated or (name not in sets and name not in headers):
                sets[name] = (value, _OVERWRITE)
        remove = {"content-length"}  # the body answer sets it (this body's, not the last one's)
        if provider.passthrough_auth:
            # The client's credential goes to this member as the client sent it; only a key
            # of the gateway's that an earlier attempt set is removed. Limit: the client's
            # credential is there only if the primary passed it too (a primary of the
            # gateway's own key had its route remove the client's) and no earlier attempt at
            # a keyed member removed it: such a member gets no credential at all.
            remove.update(
                name
                for name in self._credential_headers
                if any(value in self._our_credentials for value in headers.get(name, ()))
            )
        else:
            # The primary's key (its route set it) or an earlier member's: never this one's.
            remove.update(self._credential_headers)
            if provider.keyed and provider.access_key is not None:
                sets[provider.auth_header] = (
                    provider.auth_prefix + provider.access_key,
                    _OVERWRITE,
                )
        # Another member's configured headers are meant for that member only.
        remove.update(self._configured_headers)
        # Headers of another upstream API mean nothing to this member's: what that API
        # requires (an earlier attempt at such a member set it), and, for a translated
        # request, the primary API's client headers (anthropic-beta...).
        for api in UPSTREAM_APIS.values():
            if api.name != provider.interface:
                remove.update(api.required_headers)
                if api.name == self._primary_api:
                    remove.update(api.client_headers)
        # No header is both removed and set: the order Envoy applies the two in is not ours
        # to rely on.
        return pb.HeaderMutation(
            set_headers=[_header(name, value, action) for name, (value, action) in sets.items()],
            remove_headers=sorted(remove - sets.keys()),
        )

    # --- request body ------------------------------------------------------------------------

    def _request_body(self, message: pb.HttpBody) -> tuple[pb.ProcessingResponse, bool]:
        target = self._target
        if target is None:
            # No headers phase (a config of the user's own): no member to ready it for.
            return self._error(_UNKNOWN_TARGET), True
        # BUFFERED: the whole body in this one message.
        raw = message.body
        new_body = self._new_body(raw, target)
        if isinstance(new_body, pb.ProcessingResponse):
            return new_body, True
        if len(new_body) > self._body_limit:
            return self._error(_too_large(target, self._body_limit)), True
        common = pb.CommonResponse(
            # An attempt starts from the last one's headers: its content-length is another
            # body's. Envoy refuses a mutated body whose length differs from the header.
            header_mutation=pb.HeaderMutation(
                set_headers=[_header("content-length", str(len(new_body)))]
            )
        )
        if new_body != raw:
            common.body_mutation.body = new_body
        answer = pb.ProcessingResponse(request_body=pb.BodyResponse(response=common))
        return answer, self._response is None

    def _new_body(self, raw: bytes, target: Target) -> bytes | pb.ProcessingResponse:
        """The body for ``target``, or the answer that refuses it. The decision read this
        body already; what it refuses here is what the primary's body cannot be for it."""
        try:
            body = parse(raw)
        except NestedTooDeeply:
            return self._error(TOO_DEEP)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, NaN/Infinity
            return self._error(
                invalid_request(f"The request body is not valid JSON: {exc}", code="invalid_json")
            )
        value = body.value
        if not isinstance(value, dict):
            return self._error(
                invalid_request(
                    f"The request body must be a JSON object, got {type(value).__name__}.",
                    code="invalid_body",
                )
            )
        pair = self._pair
        if pair is not None:
            options = value.get("stream_options")
            # What the response's translation needs of the request. The primary-shaped body
            # tells it: an OpenAI body's own option (the client's, or the one the decision
            # wrote translating an Anthropic client's request); an Anthropic body has none,
            # and its pair does not ask.
            include_usage = (
                wants_stream(value)
                and isinstance(options, dict)
                and options.get("include_usage") is True
            )
            try:
                translated = pair.request(value, target.model_id)
                new_body = json_bytes(translated)
            except TranslationError as refused:
                return immediate(*pair.refusal(refused))
            except ValueError:  # a number past a double's range (1e999) has no JSON spelling
                out_of_range = TranslationError("The request has a number out of range.")
                return immediate(*pair.refusal(out_of_range))
            except RecursionError:  # the translation nests a level or two deeper than the body
                return self._error(TOO_DEEP)
            self._response = TranslatedResponse(pair, include_usage=include_usage)
            return new_body
        # The same API: the primary's text with only its model changed (body.py).
        rewritten = with_model(body, target.model_id)
        return raw if rewritten is None else rewritten

    def _error(self, error: ErrorReply) -> pb.ProcessingResponse:
        return error_response(error, self.error_api)


def _path(target: Target) -> str:
    """The member's generation endpoint below its base URL. The query the request came with
    is not kept: what this filter sees is the path the primary's route (or the attempt
    before) wrote, whose query is the primary's (an Azure primary's api-version), not the
    client's; a member gets the query its own API needs."""
    provider = target.provider
    api_path = UPSTREAM_APIS[provider.interface].path
    prefix = provider.endpoint.path_prefix
    if provider.api_version is None:
        return prefix + api_path
    # Azure OpenAI's deployment API: the model id is the deployment, in the path.
    deployment = quote(target.model_id, safe=_PCHAR)
    version = quote(provider.api_version, safe="")
    return f"{prefix}/openai/deployments/{deployment}{api_path}?api-version={version}"


def _too_large(target: Target, limit: int) -> ErrorReply:
    return ErrorReply(
        413,
        f"The request written for {target.name}, a fallback of this request's model, is "
        f"larger than this gateway's limit of {limit} bytes.",
        code="request_too_large",
    )


def _missing_key(target: Target) -> ErrorReply:
    return ErrorReply(
        500,
        f"The gateway has no API key for {target.name}, a fallback of this request's model: "
        f"environment variable {', '.join(target.provider.missing_vars)} is not set where the "
        "gateway runs.",
        type="server_error",
        code="missing_api_key",
    )


def _header(key: str, value: str, action: _Action = _OVERWRITE) -> pb.HeaderValueOption:
    # raw_value, not value: Envoy 1.40 applied a `value` string as an empty header value.
    return pb.HeaderValueOption(
        header=pb.HeaderValue(key=key, raw_value=value.encode()), append_action=action
    )

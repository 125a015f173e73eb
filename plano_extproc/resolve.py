"""The routing decision: which provider and model serve a request. Pure, no I/O.

``parse_chat_request`` checks the body a client sent (either API: both name a ``model`` and
a non-empty ``messages`` list); ``resolve`` applies the resolution order (alias,
provider/model, unambiguous bare model id) to its ``model``. A request that names no model,
or a model that ``routing.route_named_models`` sends through the router, asks the preference
router (``AskRouter``) when routes are configured; ``resolve_preference`` turns the router's
answer (or its absence) into the decision, falling back to the named model or the default.
``read_chat_request`` is ``parse_chat_request`` as a helper process runs it for a big body
(extproc/offload.py), with an answer small enough to send back.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from typing import Literal

from . import body as json_body
from .config import AUTO_MODEL_NAMES, Chain, Config, Found, Provider, lookup
from .errors import ErrorReply, invalid_request, quoted
from .router.base import OTHER, RouteChoice
from .router.conversation import Reading, conversation

Routing = Literal["direct", "alias", "default", "preference"]


@dataclass(frozen=True)
class ChatRequest:
    """A parsed chat-completions body: what routing reads of it, and the body to rewrite."""

    model: str | None  # None when the client named no model (absent, empty or an auto name)
    # The client's messages; from ``read_chat_request``, only the turns a router reads.
    messages: Sequence[object]
    wire: json_body.JsonBody  # the body as sent, for rewriting its model in place
    stream: bool = False  # it asks for a streamed answer (for the access log: wire.STREAM_KEY)


@dataclass(frozen=True)
class Decision:
    provider: Provider  # the config entry that serves it (``openai/*`` for a wildcard)
    routing: Routing
    route: str | None = None  # the routing preference that chose it, for "preference"
    # The model id the provider receives, when ``provider`` is a wildcard ("": its own).
    wildcard_id: str = ""
    # The fail-over chain it is served along (config.Chain.id), None: this model alone.
    chain: str | None = None

    @property
    def model_id(self) -> str:
        """What the provider receives in ``model``."""
        return self.wildcard_id or self.provider.model_id

    @property
    def model(self) -> str:
        """The model that serves it, as the client sees it: ``openai/gpt-5.2``."""
        return f"{self.provider.provider}/{self.model_id}"


@dataclass(frozen=True)
class AskRouter:
    """Routes are configured and the request named no model, or one that goes through the
    router (``fallback``): the router must read it."""

    fallback: str | None = None  # the model to serve when no route fits


ASK_ROUTER = AskRouter()


def parse_chat_request(raw: bytes) -> ChatRequest | ErrorReply:
    try:
        wire = json_body.parse(raw)
    except json_body.NestedTooDeeply:
        return invalid_request(
            "The request body nests arrays and objects too deeply to be read.",
            code="invalid_json",
        )
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, NaN/Infinity
        if "integer string conversion" in str(exc):  # Python's advice is for its own callers
            limit = sys.get_int_max_str_digits()
            message = f"The request body has a number longer than {limit} digits."
        else:
            message = f"The request body is not valid JSON: {exc}"
        return invalid_request(message, code="invalid_json")
    body = wire.value
    if not isinstance(body, dict):
        return invalid_request(
            f"The request body must be a JSON object, got {type(body).__name__}.",
            code="invalid_body",
        )
    messages = body.get("messages")
    if messages is None:
        return invalid_request(
            "Missing required parameter: 'messages'.",
            param="messages",
            code="missing_required_parameter",
        )
    if not isinstance(messages, list) or not messages:
        return invalid_request(
            "'messages' must be a non-empty array of messages.",
            param="messages",
            code="invalid_type",
        )
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        return invalid_request(
            f"'model' must be a string, got {type(model).__name__}.",
            param="model",
            code="invalid_type",
        )
    if model is not None and model.strip() in AUTO_MODEL_NAMES:
        model = None
    return ChatRequest(model, messages, wire, body.get("stream") is True)


def read_chat_request(raw: bytes, reading: Reading) -> ChatRequest | ErrorReply:
    """``parse_chat_request`` as a helper process runs it for a big body: the same checks
    and errors, and an answer that is small to send back (only the turns ``reading`` lets
    a router read, and the body's positions as byte offsets into ``raw``, no text).
    ``attach_body`` makes it whole again where ``raw`` is."""
    request = parse_chat_request(raw)
    if isinstance(request, ErrorReply):
        return request
    turns = conversation(request.messages, reading)
    messages = [{"role": t.role, "content": t.text} for t in turns]
    detached = json_body.detach(request.wire, raw)
    return ChatRequest(request.model, messages, detached, request.stream)


def attach_body(request: ChatRequest, raw: bytes | memoryview) -> ChatRequest:
    """A request from ``read_chat_request`` with the body it was read from."""
    return replace(request, wire=json_body.attach(request.wire, raw))


def resolve(
    model: str | None,
    config: Config,
    *,
    by_preference: bool = True,
    needs_key: Callable[[Provider], bool] | None = None,
) -> Decision | ErrorReply | AskRouter:
    """The resolution order for a requested ``model`` (None: the client named none).
    ``by_preference`` False never asks the router (a token count is not a generation);
    ``needs_key`` says whether the request will reach the chosen provider (a token count
    the gateway estimates itself does not), so that its missing key is an error."""
    routed_name = (
        model is not None
        and bool(config.routes)
        and bool(config.router.route_named_models)  # off unless configured: skip the patterns
        and _routed_by_name(model, config)
    )
    if by_preference and config.routes:
        if model is None:
            return ASK_ROUTER
        if routed_name:
            return AskRouter(model)
    # A routed name's token counts go where its generations would (a coding agent calls both).
    decision = _routed_fallback(model, config) if routed_name else _choose(model, config)
    if (
        isinstance(decision, Decision)
        and needs_key is not None
        and not needs_key(decision.provider)
    ):
        return decision
    return _checked(decision)


def _routed_by_name(model: str, config: Config) -> bool:
    return any(fnmatchcase(model, pattern) for pattern in config.router.route_named_models)


# Why the router's answer places a request on no route (``unplaced``): the reasons the
# metrics count and ``route`` describes.
NO_ROUTE = OTHER
LOW_CONFIDENCE = "low_confidence"


def unplaced(choice: RouteChoice, config: Config) -> str | None:
    """Why ``choice`` places the request on no route: NO_ROUTE ("other", or a route name the
    config does not have, which only a router model can answer) or LOW_CONFIDENCE (below
    ``min_confidence``); None when it places it."""
    if choice.route == OTHER:
        return NO_ROUTE
    if choice.confidence < config.router.min_confidence:
        return LOW_CONFIDENCE
    if not any(route.name == choice.route for route in config.routes):
        return NO_ROUTE
    return None


def resolve_preference(
    choice: RouteChoice | None, config: Config, fallback: str | None = None
) -> Decision | ErrorReply:
    """The decision for a request the router read. ``None`` (a timeout or router failure)
    and a choice that places it on no route (``unplaced``) go to the ``fallback`` model the
    client named, or to the default provider when it named none or one the config does not
    serve."""
    if choice is None or unplaced(choice, config) is not None:
        return _checked(_routed_fallback(fallback, config))
    route = next(route for route in config.routes if route.name == choice.route)
    chain = config.chain_of_route.get(route.name) or config.chain_of_model.get(route.model)
    return _checked(Decision(route.provider, "preference", route.name, route.model_id, _id(chain)))


def _routed_fallback(model: str | None, config: Config) -> Decision | ErrorReply:
    """Who serves a request the router did not place: the model it named, or the default when
    it named none or one the config does not serve (a coding agent's dated model name)
    rather than a 400 for a request the config routes."""
    decision = _choose(model, config)
    if isinstance(decision, ErrorReply) and config.default is not None:
        return _default(config)
    return decision


def _default(config: Config) -> Decision:
    assert config.default is not None
    chain = config.chain_of_model.get(config.default.name)
    return Decision(config.default, "default", chain=_id(chain))


def _id(chain: Chain | None) -> str | None:
    return None if chain is None else chain.id


def _checked(decision: Decision | ErrorReply) -> Decision | ErrorReply:
    if isinstance(decision, Decision) and decision.provider.missing_vars:
        provider = decision.provider
        return ErrorReply(
            500,
            f"The gateway has no API key for {provider.name}: environment variable "
            f"{', '.join(provider.missing_vars)} is not set where the gateway runs.",
            type="server_error",
            code="missing_api_key",
        )
    return decision


def _choose(model: str | None, config: Config) -> Decision | ErrorReply:
    if model is None:
        if config.default is not None:
            return _default(config)
        return invalid_request(
            "No model was named and no default provider is configured. "
            f"Name one of: {', '.join(config.model_names())}.",
            param="model",
            code="model_not_found",
        )
    alias = config.aliases.get(model)
    if alias is not None:
        chain = config.chain_of_alias.get(alias.name) or config.chain_of_model.get(alias.model)
        return Decision(alias.target, "alias", wildcard_id=alias.model_id, chain=_id(chain))
    found = lookup(model, config.by_name, config.by_model_id, config.wildcards)
    if isinstance(found, Found):
        chain = config.chain_of_model.get(found.provider.name)
        return Decision(found.provider, "direct", wildcard_id=found.model_id, chain=_id(chain))
    if found.bad_id is not None:
        return invalid_request(
            f"The model {quoted(model)} cannot be sent on: {found.bad_id}.",
            param="model",
            code="model_not_found",
        )
    if found.candidates:
        return invalid_request(
            f"The model {quoted(model)} is served by several providers "
            f"({', '.join(found.candidates)}): name one as provider/model.",
            param="model",
            code="model_ambiguous",
        )
    if found.unclaimed:
        return invalid_request(
            f"The model {quoted(model)} is of no model family this gateway knows, and "
            f"several providers take any model id ({', '.join(found.unclaimed)}): name it "
            "as provider/model.",
            param="model",
            code="model_ambiguous",
        )
    return invalid_request(
        f"The model {quoted(model)} is not served by this gateway. "
        f"Use one of: {', '.join(config.model_names())}.",
        param="model",
        code="model_not_found",
    )

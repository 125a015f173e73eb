"""The decision sequence, and the one place it runs: the ext_proc server and
``plano-extproc route`` both call it.

parse the client's body -> resolve its model (alias, provider/model, bare id) -> ask the
preference router when the config says so -> the ``Decision``. Asking the router is the one
step that waits, so the sequence is two pure halves around it: ``begin`` decides or says
what the router must read (``Pending``), ``conclude`` finishes with the router's choice.
``decide`` runs both with the router in between.
"""

from __future__ import annotations

from dataclasses import dataclass

from .apis import ClientApi
from .config import Config
from .errors import ErrorReply
from .ops import metrics
from .resolve import (
    AskRouter,
    ChatRequest,
    Decision,
    parse_chat_request,
    resolve,
    resolve_preference,
)
from .router.base import RouteChoice
from .router.service import RouterService


@dataclass(frozen=True)
class Pending:
    """A request the router must read before it can be routed."""

    request: ChatRequest
    api: ClientApi
    ask: AskRouter


def begin(
    request: ChatRequest | ErrorReply, api: ClientApi, config: Config
) -> Decision | ErrorReply | Pending:
    """The decision for a parsed request, unless the router must read it first."""
    if isinstance(request, ErrorReply):
        return request
    decision = resolve(
        request.model,
        config,
        by_preference=api.generates,
        # A provider the request does not go to (a token count it cannot give, which the
        # gateway estimates) needs no key.
        needs_key=api.reaches,
    )
    if isinstance(decision, AskRouter):
        return Pending(request, api, decision)
    return decision


def conclude(pending: Pending, choice: RouteChoice | None, config: Config) -> Decision | ErrorReply:
    """The decision for a ``Pending`` request, from the router's choice (None: it failed or
    took too long): the chosen route, or the model the client named, or the default."""
    metrics.count_router_answer(choice, config)
    return resolve_preference(choice, config, pending.ask.fallback)


@dataclass(frozen=True)
class Decided:
    request: ChatRequest | None  # None when the body could not be read
    outcome: Decision | ErrorReply
    choice: RouteChoice | None  # what the router said, when it was asked and answered
    asked_router: bool


async def decide(
    raw: bytes, api: ClientApi, config: Config, router: RouterService | None
) -> Decided:
    """The whole sequence for one request body."""
    request = parse_chat_request(raw)
    step = begin(request, api, config)
    if not isinstance(step, Pending):
        return Decided(request if isinstance(request, ChatRequest) else None, step, None, False)
    choice = await router.choose(step.request.messages) if router is not None else None
    return Decided(step.request, conclude(step, choice, config), choice, True)

"""``plano-extproc route``: the server's routing decision for requests given as JSON lines.

Each request goes through the same decision sequence as in the server (decide.py), so what
this prints is what the gateway would do, with the router's scores and its latency. A line is
an OpenAI chat-completions body unless ``api`` says otherwise (``--api anthropic``: a
Messages body).
"""

from __future__ import annotations

import json
import os
import time
from typing import IO

from .apis import OPENAI_CHAT, ClientApi
from .config import Config, load_config
from .decide import decide
from .errors import ErrorReply
from .resolve import LOW_CONFIDENCE, Decision, unplaced
from .router import OTHER, RouteChoice
from .router.service import RouterService, load_service


def with_stand_in_keys(config: Config) -> Config:
    """``config`` reloaded with a stand-in for every unset key variable: decisions need no
    keys, and a missing one must not hide the route the gateway would take."""
    unset = {v: "unset" for p in config.providers for v in p.missing_vars}
    return load_config(config.source, {**os.environ, **unset}) if unset else config


async def route_lines(
    config: Config, lines: IO[str], out: IO[str], *, explain: bool, api: ClientApi = OPENAI_CHAT
) -> int:
    """Answer every line of ``lines``; 0 if all were routed, 1 if any got an error."""
    service = load_service(config)
    status = 0
    try:
        for line in lines:
            if not line.strip():
                continue
            result = await route_one(config, service, line.encode(), explain=explain, api=api)
            status |= "error" in result
            out.write(json.dumps(result, ensure_ascii=False) + "\n")
            out.flush()
    finally:
        if service is not None:
            service.close()
    return status


async def route_one(
    config: Config,
    service: RouterService | None,
    raw: bytes,
    *,
    explain: bool,
    api: ClientApi = OPENAI_CHAT,
) -> dict[str, object]:
    started = time.perf_counter()
    decided = await decide(raw, api, config, service)
    latency_ms = (time.perf_counter() - started) * 1e3 if decided.asked_router else 0.0
    if isinstance(decided.outcome, ErrorReply):
        return _error(decided.outcome)
    return _result(
        decided.outcome, decided.choice, latency_ms, config, explain, decided.asked_router
    )


def _result(
    decision: Decision,
    choice: RouteChoice | None,
    latency_ms: float,
    config: Config,
    explain: bool,
    asked_router: bool,
) -> dict[str, object]:
    provider = decision.provider
    result: dict[str, object] = {
        "route": decision.route or (OTHER if choice is not None else None),
        "provider": provider.provider,
        "model": decision.model,
        "routing": decision.routing,
        "scores": {k: round(v, 4) for k, v in choice.scores.items()} if choice else {},
        "latency_ms": round(latency_ms, 2),
    }
    if decision.chain is not None:
        # The models it fails over to, in order, when the one before fails.
        result["fallbacks"] = [m.name for m in config.chains[decision.chain].members[1:]]
    if asked_router and decision.routing != "preference":
        result["fallback"] = _fallback_reason(choice, config)
    if explain and choice is not None:
        result["confidence"] = round(choice.confidence, 4)
        result["explain"] = dict(choice.explain)
    return result


def _fallback_reason(choice: RouteChoice | None, config: Config) -> str:
    if choice is None:
        return "router timed out or failed"
    reason = unplaced(choice, config)
    if reason == LOW_CONFIDENCE:
        return (
            f"confidence {choice.confidence:.2f} for {choice.route} is below "
            f"min_confidence {config.router.min_confidence:g}"
        )
    if choice.route == OTHER:
        return "no route fits (other)"
    return f"the router chose {choice.route}, which is not a route of this config"


def _error(error: ErrorReply) -> dict[str, object]:
    body: dict[str, object] = json.loads(error.body())
    body["status"] = error.status
    return body

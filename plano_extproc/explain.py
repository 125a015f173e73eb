"""``plano-extproc route``: the server's routing decision for requests given as JSON lines.

Each request goes through the same functions as in the server (``parse_chat_request``,
``resolve``, ``RouterService.choose``, ``resolve_preference``), so what this prints is what
the gateway would do, with the router's scores and its latency.
"""

from __future__ import annotations

import json
import os
import time
from typing import IO

from .config import Config, load_config
from .errors import ErrorReply
from .resolve import AskRouter, Decision, parse_chat_request, resolve, resolve_preference
from .router import OTHER, RouteChoice, load_router
from .router.service import RouterService


def with_stand_in_keys(config: Config) -> Config:
    """``config`` reloaded with a stand-in for every unset key variable: decisions need no
    keys, and a missing one must not hide the route the gateway would take."""
    unset = {v: "unset" for p in config.providers for v in p.missing_vars}
    return load_config(config.source, {**os.environ, **unset}) if unset else config


async def route_lines(config: Config, lines: IO[str], out: IO[str], *, explain: bool) -> int:
    """Answer every line of ``lines``; 0 if all were routed, 1 if any got an error."""
    router = load_router(config)
    service = RouterService(router, config.router.timeout_s) if router is not None else None
    status = 0
    try:
        for line in lines:
            if not line.strip():
                continue
            result = await route_one(config, service, line.encode(), explain=explain)
            status |= "error" in result
            out.write(json.dumps(result, ensure_ascii=False) + "\n")
            out.flush()
    finally:
        if service is not None:
            service.close()
    return status


async def route_one(
    config: Config, service: RouterService | None, raw: bytes, *, explain: bool
) -> dict[str, object]:
    request = parse_chat_request(raw)
    if isinstance(request, ErrorReply):
        return _error(request)
    decision = resolve(request.model, config)
    choice: RouteChoice | None = None
    started = time.perf_counter()
    if isinstance(decision, AskRouter):
        if service is not None:
            choice = await service.choose(request.messages)
        decision = resolve_preference(choice, config)
    latency_ms = (time.perf_counter() - started) * 1e3
    if isinstance(decision, ErrorReply):
        return _error(decision)
    return _result(decision, choice, latency_ms, config, explain)


def _result(
    decision: Decision,
    choice: RouteChoice | None,
    latency_ms: float,
    config: Config,
    explain: bool,
) -> dict[str, object]:
    provider = decision.provider
    result: dict[str, object] = {
        "route": decision.route or (OTHER if choice is not None else None),
        "provider": provider.provider,
        "model": provider.name,
        "routing": decision.routing,
        "scores": {k: round(v, 4) for k, v in choice.scores.items()} if choice else {},
        "latency_ms": round(latency_ms, 2),
    }
    if decision.routing == "default" and config.routes:
        result["fallback"] = _fallback_reason(choice, config)
    if explain and choice is not None:
        result["confidence"] = round(choice.confidence, 4)
        result["explain"] = dict(choice.explain)
    return result


def _fallback_reason(choice: RouteChoice | None, config: Config) -> str:
    if choice is None:
        return "router timed out or failed"
    if choice.route == OTHER:
        return "no route fits (other)"
    return (
        f"confidence {choice.confidence:.2f} for {choice.route} is below "
        f"min_confidence {config.router.min_confidence:g}"
    )


def _error(error: ErrorReply) -> dict[str, object]:
    body: dict[str, object] = json.loads(error.body())
    body["status"] = error.status
    return body

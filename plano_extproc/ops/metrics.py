"""The server's own Prometheus metrics, defined in one place; call sites are one line each.

Every label value is bounded by the config or by this module: route names come from the
config, reasons and kinds are the constants below. Nothing a client sends becomes a label
(a model a client names is never one: Envoy's request counter takes the decision's config
entry, envoy_config/metrics.py).

Under ``up --workers N`` each server process writes its values to files in
``PROMETHEUS_MULTIPROC_DIR`` (set by the launcher before the process starts, which is when
prometheus-client reads it) and the one that serves the endpoint sums them: the library's
own multi-process mode.
"""

from __future__ import annotations

import os
from typing import Final

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

from ..config import Config
from ..resolve import LOW_CONFIDENCE, NO_ROUTE, unplaced
from ..router.base import RouteChoice

# Why a request the router read went to the default (or the model it named) instead of a
# route: the router took longer than routing.timeout, it failed, its best route scored under
# routing.min_confidence, or it said no route fits.
TIMEOUT: Final = "timeout"
FAILURE: Final = "failure"
FALLBACK_REASONS: Final = (TIMEOUT, FAILURE, LOW_CONFIDENCE, NO_ROUTE)

# What went wrong in the ext_proc server: a bug of ours answered 500 (internal), a message
# that is not a ProcessingRequest (malformed), a big body's helper process failed (reader).
INTERNAL: Final = "internal"
MALFORMED: Final = "malformed"
READER: Final = "reader"
ERROR_KINDS: Final = (INTERNAL, MALFORMED, READER)

# The *_created series say when a label set was first seen: no use to anyone here.
disable_created_metrics()  # type: ignore[no-untyped-call]

ROUTER_DECISIONS = Counter(
    "plano_router_decisions",
    "Requests the preference router placed on a route of the config.",
    ["route"],
)
ROUTER_FALLBACKS = Counter(
    "plano_router_fallbacks",
    "Requests the router read but did not place on a route, by why.",
    ["reason"],
)
ROUTER_DECISION_SECONDS = Histogram(
    "plano_router_decision_seconds",
    "Time to the router's answer (or its timeout), cached answers included.",
    ["cached"],
    # The embedded router answers in ~5-30 ms on a CPU, Arch-Router on a GPU in ~50-200 ms;
    # the default timeout is 1 s.
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
EXTPROC_ERRORS = Counter(
    "plano_extproc_errors",
    "ext_proc messages the server could not answer as asked (answered 500), by kind.",
    ["kind"],
)

# The children made once: a labelled child costs a dict lookup and a lock per use otherwise.
_FALLBACKS = {reason: ROUTER_FALLBACKS.labels(reason) for reason in FALLBACK_REASONS}
_ERRORS = {kind: EXTPROC_ERRORS.labels(kind) for kind in ERROR_KINDS}
_DECISION_TIME = {
    cached: ROUTER_DECISION_SECONDS.labels(str(cached).lower()) for cached in (True, False)
}


def count_router_answer(choice: RouteChoice | None, config: Config) -> None:
    """One request the router read: a decision for its route, or a fallback and why."""
    if choice is None:
        return  # counted as a timeout or failure by the router service
    reason = unplaced(choice, config)
    if reason is None:
        ROUTER_DECISIONS.labels(choice.route).inc()
    else:
        # A route name the config lacks (a router model's answer) is never a label.
        _FALLBACKS[reason].inc()


def router_fallback(reason: str) -> None:
    _FALLBACKS[reason].inc()


def router_time(seconds: float, cached: bool) -> None:
    _DECISION_TIME[cached].observe(seconds)


def extproc_error(kind: str) -> None:
    _ERRORS[kind].inc()


def exposition() -> bytes:
    """The server's metrics in Prometheus' text format: this process's, or, in multi-process
    mode, every server process's summed."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)

"""The one interface both routers implement, and what they answer."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..config import Route

OTHER = "other"


class RouterLoadError(Exception):
    """The configured router model cannot be loaded; the message says how to fix it."""


@dataclass(frozen=True)
class RouteChoice:
    """A router's answer for one conversation."""

    route: str  # a route name, or OTHER when none fits
    confidence: float  # the router's probability for ``route``, 0 to 1
    scores: Mapping[str, float]  # every route name (and OTHER) -> probability
    # What the router read and how it weighed it, for ``route --explain``; never parsed.
    explain: Mapping[str, object] = field(default_factory=dict)


class Router(Protocol):
    """Reads a conversation and picks a route. Blocking and CPU-bound: callers run it off
    the event loop (``RouterService``). ``messages`` is the request's raw ``messages``.
    A router whose ``choose`` may run in several threads at once says how many in a
    ``concurrency`` attribute (none: one at a time)."""

    routes: tuple[Route, ...]

    def choose(self, messages: Sequence[object]) -> RouteChoice: ...


def probabilities(names: Sequence[str], logits: Sequence[float]) -> dict[str, float]:
    """Softmax of ``logits``, keyed by ``names``; numerically safe for any range."""
    top = max(logits)
    weights = [math.exp(v - top) for v in logits]
    total = sum(weights)
    return {n: w / total for n, w in zip(names, weights, strict=True)}


def best(scores: Mapping[str, float]) -> tuple[str, float]:
    name = max(scores, key=lambda n: scores[n])
    return name, scores[name]

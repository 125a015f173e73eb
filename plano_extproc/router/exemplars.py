"""Requests the router has seen: a reading of a turn by the requests nearest to it.

An adapter compares a request with a route's *description*, two kinds of text; how people
ask for a task is told better by other requests for it. The adapters' training requests
(modelbuild/data: about 2,700 of them, over 184 routes) are such requests, but for the
training routes, not the config's; ``make models`` embeds them with each encoder into
``FILE_NAME`` beside its model (modelbuild/build_exemplars.py). They are carried over by
description: a training route lends its requests to the config routes whose descriptions are
near its own (``lend``, once per config load; one near none of them lends to none). A turn
is then read by its nearest training requests (``nearest``, then ``votes``): each of the
``NEIGHBOURS`` nearest votes, by its nearness, for the config routes its own route lends to.
The votes are centred over the routes, so, like the lexical reading, they move routes
against each other and never all of them against "other".

Pure functions of arrays; ``load`` reads the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]

# How many training requests read a turn, and how sharply the nearest count most (a softmax
# over their cosine similarities). Chosen on the development set and leave-routes-out
# (bench/RESULTS.md, "Requests the router has seen").
NEIGHBOURS = 10
NEARNESS_SHARPNESS = 20.0
# How a training route lends to the config's routes: a softmax over its description's
# cosine similarities to theirs, beside a "none of them" at LEND_FLOOR, so that a training
# route unlike every config route lends next to nothing.
LEND_SHARPNESS = 20.0
LEND_FLOOR = 0.5
# Where an encoder's exemplars are, in its model directory.
FILE_NAME = "exemplars.npz"


@dataclass(frozen=True)
class Exemplars:
    """One encoder's embedded training requests (unit vectors), the training route of each,
    and the training routes' embedded descriptions and names."""

    requests: Array  # [requests, dim]
    request_route: Array  # [requests] index into route_vectors
    route_vectors: Array  # [training routes, dim]
    route_names: tuple[str, ...]

    def without_routes(self, dropped: Array) -> Exemplars:
        """These exemplars less the requests of the training routes in ``dropped`` (a bool
        mask over the training routes): what a router would know had it never seen them
        (bench/router/leave_routes_out.py)."""
        keep = ~dropped[self.request_route]
        return Exemplars(
            self.requests[keep], self.request_route[keep], self.route_vectors, self.route_names
        )


def arrays(seen: Exemplars, source: str) -> dict[str, Any]:
    """What the file holds. The embeddings are kept as float16: half the size (2 MB an
    encoder), and a cosine similarity moves by under 1e-3. ``source`` says what they were
    embedded from (modelbuild/build_exemplars.py compares it to tell a stale file). Typed
    Any for numpy.savez, whose stubs would take the dict for its allow_pickle keyword."""
    return {
        "requests": seen.requests.astype(np.float16),
        "request_route": seen.request_route.astype(np.int32),
        "route_vectors": seen.route_vectors.astype(np.float16),
        "route_names": np.array(seen.route_names, dtype=str),
        "source": np.array(source),
    }


def load(path: Path) -> Exemplars | None:
    """The exemplars in ``path``; None when there is no such file (an encoder directory a user
    brought: the router then has no votes)."""
    if not path.is_file():
        return None
    with np.load(path) as data:
        return Exemplars(
            data["requests"].astype(np.float32),
            data["request_route"].astype(np.intp),
            data["route_vectors"].astype(np.float32),
            tuple(str(n) for n in data["route_names"]),
        )


def lend(route_vectors: Array, config_vectors: Array) -> Array:
    """[training routes, config routes]: how much of each training route's requests count
    for each config route (rows sum to under 1; the rest is lent to none)."""
    similarities = route_vectors @ config_vectors.T
    floor = np.full((len(route_vectors), 1), LEND_FLOOR, dtype=similarities.dtype)
    logits = LEND_SHARPNESS * np.hstack([similarities, floor])
    shares = np.exp(logits - logits.max(axis=1, keepdims=True))
    shares /= shares.sum(axis=1, keepdims=True)
    result: Array = shares[:, :-1].astype(np.float32)
    return result


def nearest(views: Array, exemplars: Exemplars, k: int = NEIGHBOURS) -> tuple[Array, Array]:
    """For each view (unit vectors [views, dim]): the indices of its ``k`` nearest training
    requests and their cosine similarities, nearest first (none when there are no
    requests)."""
    similarities = views @ exemplars.requests.T
    k = min(k, similarities.shape[1])
    if k == 0:
        return np.zeros((len(views), 0), np.intp), np.zeros((len(views), 0), np.float32)
    top = np.argpartition(-similarities, k - 1, axis=1)[:, :k]
    top_sims = np.take_along_axis(similarities, top, axis=1)
    order = np.argsort(-top_sims, axis=1)
    return np.take_along_axis(top, order, axis=1), np.take_along_axis(top_sims, order, axis=1)


def votes(top: Array, top_sims: Array, exemplars: Exemplars, lent: Array) -> Array:
    """[views, config routes]: the votes of each view's nearest training requests (``top``
    and ``top_sims`` from ``nearest``) for the config routes (``lent`` from ``lend``), less
    their mean over the routes. Zeros when there are none."""
    if top.shape[1] == 0 or lent.shape[1] == 0:
        return np.zeros((len(top), lent.shape[1]), dtype=np.float32)
    weights = np.exp(NEARNESS_SHARPNESS * (top_sims - top_sims[:, :1]))
    weights /= weights.sum(axis=1, keepdims=True)
    cast = np.einsum("vk,vkr->vr", weights, lent[exemplars.request_route[top]])
    centred: Array = cast - cast.mean(axis=1, keepdims=True)
    return centred

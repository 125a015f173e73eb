"""Train an encoder's adapter for the embedded router (numpy only: embedding the data takes a
few minutes on 2 cores, the fit seconds).

A sentence encoder places "can u whip up a go thing that pings slack" far from "writing new
code from a specification": one is a request, the other the description of a category. The
adapter learns, for one encoder:

- ``w`` (dim x dim, from the identity): route vectors become ``W d``, so that ``q . (W d)``
  is high for a request and the description of its route;
- ``threshold`` and ``other``: "other" scores ``threshold + q . other`` from the latest turn,
  so small talk and closings ("perfect, thanks!") find their place;
- ``context``: how much the earlier turn counts, so a follow-up ("shorter please") keeps its
  conversation's route while a clear new request still switches. (Serving adds to it after a
  short turn, without lifting any route towards "other": embedded.follow_up_boost, a fixed
  rule chosen on the benchmarks, not fitted here.)

It is fitted on routes and requests written for this purpose (``modelbuild/data/``:
``train_*.jsonl`` routes with requests, ``followups.jsonl``, ``closings.jsonl``,
``other_*.jsonl``), never on the benchmark sets, in episodes that look like configs: the
true route among others, plus "other". ``--hard`` makes a share of those others the true
route's nearest neighbours by description ("explain this code" beside "write code" and "fix
code"), the pairs a user's config holds and a random draw of 200 routes seldom does
(leave-routes-out, bench/router/leave_routes_out.py: 72.8% against 70.1% at 0 on routes
never trained on). At serving time it costs nothing: route
vectors are multiplied by ``W`` once, at config load.

    python -m plano_extproc.modelbuild.train_adapter [--model-dir build/models/<encoder>]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..config import DEFAULT_ROUTER
from ..router import default_models_dir
from ..router.embedded import DEFAULT_MEMBERS, Encoder, adapter_path, route_text
from ..router.exemplars import Exemplars

Array = npt.NDArray[Any]
# What the adapters are fitted on (build-time only); the adapters themselves are serving
# data and are written to router/data (embedded.adapter_path).
DATA = Path(__file__).parent / "data"
NO_ROUTE = -1
TWIN_SIGMAS = 5.0
GROUPED_OTHERS = ("a", "e")


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


@dataclass
class Corpus:
    # One per route: its name and description as a config gives them, and the two as the
    # router embeds them (embedded.route_text).
    names: list[str] = field(default_factory=list)
    plain_descriptions: list[str] = field(default_factory=list)
    descriptions: list[str] = field(default_factory=list)
    route_groups: list[int] = field(default_factory=list)  # which train_*.jsonl it came from
    requests: list[str] = field(default_factory=list)
    request_route: list[int] = field(default_factory=list)
    followups: list[str] = field(default_factory=list)
    followup_route: list[int] = field(default_factory=list)
    closings: list[str] = field(default_factory=list)
    others: list[str] = field(default_factory=list)  # requests that fit no route of ...
    other_group: list[int] = field(default_factory=list)  # ... this group (-1: of any group)

    def add_route(self, name: str, description: str) -> int:
        """A new route's index."""
        self.names.append(name)
        self.plain_descriptions.append(description)
        self.descriptions.append(route_text(name, description))
        return len(self.names) - 1


def read_corpus(data: Path = DATA) -> Corpus:
    c = Corpus()
    index: dict[str, int] = {}
    files = sorted(data.glob("train_*.jsonl"))
    for group, path in enumerate(files):
        for row in _lines(path):
            index[row["name"]] = c.add_route(row["name"], row["description"])
            c.route_groups.append(group)
            c.requests += row["requests"]
            c.request_route += [index[row["name"]]] * len(row["requests"])
    for path in sorted(data.glob("followups*.jsonl")):
        for row in _lines(path):
            if row["name"] in index:
                c.followups += row["followups"]
                c.followup_route += [index[row["name"]]] * len(row["followups"])
    c.closings = [row["request"] for row in _lines(data / "closings.jsonl")]
    suffixes = [p.stem.removeprefix("train_") for p in files]
    for path in sorted(data.glob("other_*.jsonl")):
        # other_a and other_e were written against their own train file's routes only
        # (they have cooking, which train_b has as a route); other_b and other_d are small
        # talk that fits no route at all.
        suffix = path.stem.removeprefix("other_")
        grouped = suffix in GROUPED_OTHERS and suffix in suffixes
        group = suffixes.index(suffix) if grouped else -1
        for row in _lines(path):
            c.others.append(row["request"])
            c.other_group.append(group)
    return c


def twins(descriptions: Array) -> list[Array]:
    """For each route, the other routes whose descriptions are nearly the same: written by
    different people, two training files may describe one task twice, and an episode must
    not count the twin as a wrong answer. "Nearly the same" is relative to the encoder (e5's
    similarities are all high): TWIN_SIGMAS standard deviations above the mean pair."""
    sims = descriptions @ descriptions.T
    pairs = sims[~np.eye(len(sims), dtype=bool)]
    threshold = pairs.mean() + TWIN_SIGMAS * pairs.std()
    np.fill_diagonal(sims, -np.inf)
    return [np.flatnonzero(row >= threshold) for row in sims]


@dataclass
class Examples:
    latest: Array  # [n, dim] the latest turn
    context: Array  # [n, dim] the earlier turn, zeros when there is none
    label: Array  # route index, or NO_ROUTE
    forced: Array  # a route every episode of this example includes (the context's), or -1
    pools: list[Array]  # the routes an episode may draw from


@dataclass
class Fit:
    w: Array
    threshold: float
    other: Array
    context: float


@dataclass
class Vectors:
    requests: Array
    descriptions: Array
    followups: Array
    closings: Array
    others: Array


def examples(c: Corpus, v: Vectors, routes: Array, rng: np.random.Generator) -> Examples:
    """One epoch's examples over the routes in ``routes`` (a fresh draw each epoch)."""
    dim = v.requests.shape[1]
    allowed = set(routes.tolist())
    groups = np.array(c.route_groups)
    by_route: dict[int, list[int]] = {}
    for i, r in enumerate(c.request_route):
        if r in allowed:
            by_route.setdefault(r, []).append(i)
    latest: list[Array] = []
    context: list[Array] = []
    label: list[int] = []
    forced: list[int] = []
    pools: list[Array] = []

    def add(q: Array, ctx: Array | None, lab: int, force: int, pool: Array) -> None:
        latest.append(q)
        context.append(np.zeros(dim) if ctx is None else ctx)
        label.append(lab)
        forced.append(force)
        pools.append(pool)

    def some_request(route: int) -> Array:
        result: Array = v.requests[rng.choice(by_route[route])]
        return result

    keys = np.array(sorted(by_route))
    for route, ids in by_route.items():
        for i in ids:
            add(v.requests[i], None, route, -1, routes)
            if rng.random() < 0.3:  # a topic shift: the context was another route's request
                before = int(rng.choice(keys[keys != route]))
                add(v.requests[i], some_request(before), route, before, routes)
    for i, route in enumerate(c.followup_route):
        if route in allowed:
            add(v.followups[i], some_request(route), route, -1, routes)
    for i in range(len(c.closings)):
        before = int(rng.choice(keys))
        add(v.closings[i], some_request(before), NO_ROUTE, before, routes)
        add(v.closings[i], None, NO_ROUTE, -1, routes)
    for i, group in enumerate(c.other_group):
        add(
            v.others[i],
            None,
            NO_ROUTE,
            -1,
            routes if group < 0 else routes[groups[routes] == group],
        )
    return Examples(np.array(latest), np.array(context), np.array(label), np.array(forced), pools)


def neighbours(descriptions: Array, twin: list[Array], k: int) -> list[Array]:
    """For each route, the ``k`` routes whose descriptions are nearest (twins excepted): the
    ones a request of it is most easily mistaken for."""
    sims = descriptions @ descriptions.T
    np.fill_diagonal(sims, -np.inf)
    for route, others in enumerate(twin):
        sims[route, others] = -np.inf
    return [np.argsort(-row)[:k] for row in sims]


def episodes(
    ex: Examples,
    batch: Array,
    twin: list[Array],
    near: list[Array],
    episode: int,
    hard: float,
    rng: np.random.Generator,
) -> tuple[Array, Array]:
    """For each example of ``batch``: the routes of its episode (the true route first, the
    forced one next, then others) [len(batch), episode], and which slots hold a route (a pool
    smaller than the episode leaves some empty). A share ``hard`` of the others are the true
    route's nearest neighbours in the pool, the rest random: a user's config puts "explain
    this code" beside "write code" and "fix code", which a random draw of routes seldom does."""
    chosen = np.zeros((len(batch), episode), dtype=int)
    valid = np.zeros((len(batch), episode), dtype=bool)
    for row, i in enumerate(batch):
        label, force = int(ex.label[i]), int(ex.forced[i])
        fixed = [r for r in (label, force) if r >= 0]
        banned = [*fixed, *(twin[label] if label >= 0 else ())]
        pool = ex.pools[i][~np.isin(ex.pools[i], banned)]
        size = min(episode - len(fixed), len(pool))
        picked = list(fixed)
        if label >= 0 and hard > 0:
            close = near[label][np.isin(near[label], pool)][: round(size * hard)]
            picked += close.tolist()
            pool = pool[~np.isin(pool, close)]
            size -= len(close)
        picked += rng.choice(pool, size=size, replace=False).tolist()
        chosen[row, : len(picked)] = picked
        valid[row, : len(picked)] = True
    return chosen, valid


def train(
    c: Corpus,
    v: Vectors,
    routes: Array,
    *,
    scale: float,
    l2: float,
    epochs: int,
    lr: float,
    episode: int,
    seed: int,
    hard: float = 0.0,
) -> Fit:
    """Softmax over an episode (the true route and the forced one among random others, like
    a config of ``episode`` routes) plus "other"; gradient descent, L2 pull to the identity.
    Each batch is computed at once (numpy over the batch): a fit takes seconds."""
    rng = np.random.default_rng(seed)
    d = v.descriptions
    dim = d.shape[1]
    twin = twins(d)
    near = neighbours(d, twin, episode)
    eye = np.eye(dim)
    fit = Fit(eye.copy(), 0.3, np.zeros(dim), 0.5)
    for _ in range(epochs):
        ex = examples(c, v, routes, rng)
        order = rng.permutation(len(ex.label))
        for batch in np.array_split(order, max(len(order) // 64, 1)):
            chosen, valid = episodes(ex, batch, twin, near, episode, hard, rng)
            dr = d[chosen]  # [n, episode, dim]
            wd = (d @ fit.w.T)[chosen]
            latest, context = ex.latest[batch], ex.context[batch]
            query = latest + fit.context * context
            route_logits = np.where(valid, scale * np.einsum("nkd,nd->nk", wd, query), -np.inf)
            other_logit = scale * (fit.threshold + latest @ fit.other)
            logits = np.hstack([route_logits, other_logit[:, None]])
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            err = p
            err[np.arange(len(batch)), np.where(ex.label[batch] >= 0, 0, episode)] -= 1.0
            err_r, err_o = err[:, :-1], err[:, -1]
            # logit_r = scale * (q_L + a q_C) . (W d_r); logit_other = scale * (b + q_L . o)
            grad_w = scale * query.T @ np.einsum("nk,nkd->nd", err_r, dr)
            grad_a = scale * float((err_r * np.einsum("nkd,nd->nk", wd, context)).sum())
            grad_b = scale * float(err_o.sum())
            grad_o = scale * err_o @ latest
            n = len(batch)
            fit.w -= lr * (grad_w / n + l2 * (fit.w - eye))
            fit.other -= lr * (grad_o / n + l2 * fit.other)
            fit.threshold -= lr * grad_b / n
            fit.context = max(0.0, fit.context - lr * grad_a / n)
    return fit


def accuracy(c: Corpus, v: Vectors, routes: Array, fit: Fit, seed: int) -> float:
    """Accuracy over episodes drawn from ``routes`` only (e.g. routes never trained on)."""
    ex = examples(c, v, routes, np.random.default_rng(seed))
    wd = v.descriptions[routes] @ fit.w.T
    query = ex.latest + fit.context * ex.context
    scores = np.hstack([query @ wd.T, (fit.threshold + ex.latest @ fit.other)[:, None]])
    pred = scores.argmax(axis=1)
    truth = np.array([np.flatnonzero(routes == lab)[0] if lab >= 0 else len(routes)
                      for lab in ex.label])  # fmt: skip
    return float((pred == truth).mean())


def embed_queries(encoder: Encoder, texts: list[str], tokens: int = 256) -> Array:
    """Requests as the encoder reads them at serving time (with its query prefix)."""
    if not texts:
        return np.zeros((0, encoder.dim))
    prefixed = [encoder.query_prefix + t for t in texts]
    chunks = [encoder.embed(prefixed[i : i + 64], tokens) for i in range(0, len(texts), 64)]
    return np.vstack(chunks)


def embed_corpus(encoder: Encoder, corpus: Corpus) -> Vectors:
    passages = [encoder.passage_prefix + t for t in corpus.descriptions]
    return Vectors(
        requests=embed_queries(encoder, corpus.requests),
        descriptions=encoder.embed(passages, 128),
        followups=embed_queries(encoder, corpus.followups),
        closings=embed_queries(encoder, corpus.closings),
        others=embed_queries(encoder, corpus.others),
    )


@dataclass(frozen=True)
class Hyper:
    """How an adapter is fitted; the defaults are what ``make adapters`` ships."""

    epochs: int = 20
    l2: float = 0.01
    scale: float = 20.0
    lr: float = 0.05
    seed: int = 0
    hard: float = 0.3
    episode: int = 10

    def fit_args(self) -> dict[str, Any]:
        return dict(scale=self.scale, l2=self.l2, epochs=self.epochs, lr=self.lr,
                    episode=self.episode, hard=self.hard)  # fmt: skip


def exemplars_of(corpus: Corpus, requests: Array, descriptions: Array) -> Exemplars:
    """The training requests as the router reads them (router/exemplars.py), given their
    embeddings and their routes' descriptions' (``Vectors.requests`` and ``.descriptions``)."""
    return Exemplars(
        requests.astype(np.float32),
        np.asarray(corpus.request_route, dtype=np.intp),
        descriptions.astype(np.float32),
        tuple(corpus.names),
    )


def adapter_arrays(final: Fit, scale: float) -> dict[str, Array]:
    """What an adapter file holds (embedded.Adapter reads it)."""
    return {
        "w": final.w.astype(np.float32),
        "threshold": np.asarray(final.threshold, dtype=np.float32),
        "other": final.other.astype(np.float32),
        "context": np.asarray(final.context, dtype=np.float32),
        "scale": np.asarray(scale, dtype=np.float32),
    }


def fit_adapter(corpus: Corpus, vectors: Vectors, hyper: Hyper) -> dict[str, Array]:
    """The adapter fitted on every route of ``corpus``: what ``make adapters`` writes, and
    what tests/unit/test_adapters_current.py compares the committed files with."""
    routes = np.arange(len(corpus.descriptions))
    final = train(corpus, vectors, routes, seed=hyper.seed, **hyper.fit_args())
    return adapter_arrays(final, hyper.scale)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    default = default_models_dir() / DEFAULT_MEMBERS[0].name
    defaults = Hyper()
    parser.add_argument("--model-dir", type=Path, default=default)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--l2", type=float, default=defaults.l2)
    parser.add_argument("--scale", type=float, default=defaults.scale)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--hard", type=float, default=defaults.hard,
                        help="share of nearest routes")  # fmt: skip
    args = parser.parse_args()
    hyper = Hyper(epochs=args.epochs, l2=args.l2, scale=args.scale, lr=args.lr, seed=args.seed,
                  hard=args.hard)  # fmt: skip

    corpus = read_corpus()
    encoder = Encoder(args.model_dir, DEFAULT_ROUTER)
    vectors = embed_corpus(encoder, corpus)
    # Generalisation to routes never trained on: hold a fifth of the routes out, train on the
    # rest, score episodes drawn from the held-out routes only.
    rng = np.random.default_rng(args.seed)
    n = len(corpus.descriptions)
    held = np.sort(rng.choice(n, size=n // 5, replace=False))
    seen = np.setdiff1d(np.arange(n), held)
    fit = train(corpus, vectors, seen, seed=args.seed, **hyper.fit_args())
    identity = Fit(np.eye(encoder.dim), 0.3, np.zeros(encoder.dim), 0.5)
    for name, candidate in (("identity", identity), ("adapted", fit)):
        acc = accuracy(corpus, vectors, held, candidate, args.seed)
        print(f"{len(held)} routes never trained on, {name}: accuracy {acc:.3f}")

    arrays = fit_adapter(corpus, vectors, hyper)
    out = adapter_path(args.model_dir)
    # Any: numpy's stubs would otherwise take the dict for its allow_pickle keyword.
    fields: dict[str, Any] = dict(arrays)
    np.savez_compressed(out, **fields)
    context, threshold = float(arrays["context"]), float(arrays["threshold"])
    print(f"context weight {context:.3f}, threshold {threshold:.3f}")
    print(f"adapter written: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

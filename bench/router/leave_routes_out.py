"""Leave-routes-out: how the embedded router does on routes nobody trained its adapters on.

The adapters' training routes come in four files (plano_extproc/modelbuild/data/train_a..d,
about 40 routes each, written at different times). For each file in turn, both encoders'
adapters are re-fitted without that file's routes (and without a quarter of the "other"
requests and closings, kept aside for the same fold), then the whole router (both encoders,
their pooling, views, "other") decides conversations of the held-out routes, in configs of
9 of those routes at a time, described only by their descriptions:

- ``single``: a request of the route, alone;
- ``follow_up``: the route's follow-ups ("shorter please") after one of its requests;
- ``topic_shift``: a request after another route's request from the same config;
- ``other``: held-out requests that fit no route, and closings ("thanks, bye") after a
  request: the answer is ``other``.

Three adapters are compared on the same conversations: ``identity`` (none: plain cosine
similarity, the floor), ``held_out`` (fitted without the fold's routes: the honest figure
for a user's own routes) and ``all_routes`` (fitted on every route, as shipped: it has seen
these routes' requests, so the gap to ``held_out`` is how much the adapters fit their
training routes rather than the task).

    python bench/router/leave_routes_out.py [--l2 0.01] [--epochs 20] [--misses]

Embeddings of the training data are computed once per run (a minute or two on 2 cores);
each fit takes seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import overrides  # noqa: E402
from results import heading, table_head, write_section  # noqa: E402

from plano_extproc.config import DEFAULT_ROUTER, Provider, Route, load_config  # noqa: E402
from plano_extproc.explain import with_stand_in_keys  # noqa: E402
from plano_extproc.modelbuild import train_adapter as ta  # noqa: E402
from plano_extproc.router import default_models_dir  # noqa: E402
from plano_extproc.router.base import OTHER  # noqa: E402
from plano_extproc.router.embedded import (  # noqa: E402
    DEFAULT_MEMBERS,
    Adapter,
    Encoder,
    EncoderRouter,
    Member,
)
from plano_extproc.router.exemplars import Exemplars  # noqa: E402

CONFIG_ROUTES = 9
# Fold k also keeps aside the "other" requests and closings numbered k modulo this.
OTHER_SPLIT = 4
CACHE = ROOT / "build/leave-routes-out"
SHIFT_EVERY = 3  # every third request is also asked after another route's request
REPLY = "Sure, here it is. Let me know if you want any changes."
# The scale each encoder's adapter is fitted with (the Makefile's `adapters` target).
SCALES = {"all-MiniLM-L6-v2": 20.0, "multilingual-e5-small": 30.0}


@dataclass(frozen=True)
class Case:
    kind: str
    messages: list[dict[str, str]]
    expected: str


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def subset(c: ta.Corpus, v: ta.Vectors, others: Sequence[int], closings: Sequence[int]) -> Any:
    """The corpus with only the given "other" requests and closings."""
    oi, ci = list(others), list(closings)
    corpus = replace(
        c,
        others=[c.others[i] for i in oi],
        other_group=[c.other_group[i] for i in oi],
        closings=[c.closings[i] for i in ci],
    )
    vectors = replace(v, others=v.others[oi], closings=v.closings[ci])
    return corpus, vectors


def fit_adapter(fit: ta.Fit, scale: float, seen: Exemplars | None = None) -> Adapter:
    return Adapter(
        fit.w.astype(np.float32),
        float(fit.threshold),
        fit.other.astype(np.float32),
        float(fit.context),
        scale,
        seen,
    )


def cases_for(
    c: ta.Corpus, config: Sequence[int], names: list[str], others: list[str], closings: list[str]
) -> list[Case]:
    """The conversations asked of one config (route indices into the corpus)."""
    rng = np.random.default_rng(len(config) * 7919 + config[0])
    requests: dict[int, list[str]] = {r: [] for r in config}
    for text, route in zip(c.requests, c.request_route, strict=True):
        if route in requests:
            requests[route].append(text)
    cases: list[Case] = []
    for route in config:
        for j, text in enumerate(requests[route]):
            cases.append(Case("single", [user(text)], names[route]))
            if j % SHIFT_EVERY == 0:
                before = int(rng.choice([r for r in config if r != route]))
                first = requests[before][j % len(requests[before])]
                convo = [user(first), assistant(REPLY), user(text)]
                cases.append(Case("topic_shift", convo, names[route]))
    for text, route in zip(c.followups, c.followup_route, strict=True):
        if route in requests:
            first = requests[route][len(text) % len(requests[route])]
            convo = [user(first), assistant(REPLY), user(text)]
            cases.append(Case("follow_up", convo, names[route]))
    for text in others:
        cases.append(Case("other", [user(text)], OTHER))
    for j, text in enumerate(closings):
        route = config[j % len(config)]
        convo = [user(requests[route][0]), assistant(REPLY), user(text)]
        cases.append(Case("other", convo, OTHER))
    return cases


def cached_vectors(encoder: Encoder, name: str, corpus: ta.Corpus) -> ta.Vectors:
    """The corpus's embeddings; every text's vector is kept under build/ so that a run after
    a change to the training data embeds only the new texts."""
    keys_path, vectors_path = CACHE / f"{name}.json", CACHE / f"{name}.npy"
    known: dict[str, int] = {}
    stored = np.zeros((0, encoder.dim), np.float32)
    if keys_path.is_file() and vectors_path.is_file():
        known = {k: i for i, k in enumerate(json.loads(keys_path.read_text()))}
        stored = np.load(vectors_path)
    groups = {
        "requests": corpus.requests,
        "followups": corpus.followups,
        "closings": corpus.closings,
        "others": corpus.others,
    }
    missing = sorted({t for texts in groups.values() for t in texts if "q:" + t not in known})
    missing_d = sorted({t for t in corpus.descriptions if "p:" + t not in known})
    new_q = ta.embed_queries(encoder, missing)
    passages = [encoder.passage_prefix + t for t in missing_d]
    new_p = encoder.embed(passages, 128) if passages else np.zeros((0, encoder.dim))
    for key in ["q:" + t for t in missing] + ["p:" + t for t in missing_d]:
        known[key] = len(known)
    stored = np.vstack([stored, new_q, new_p]).astype(np.float32)
    if missing or missing_d:
        CACHE.mkdir(parents=True, exist_ok=True)
        keys_path.write_text(json.dumps(sorted(known, key=known.__getitem__)))
        np.save(vectors_path, stored)

    def rows(texts: list[str], prefix: str) -> Any:
        return stored[[known[prefix + t] for t in texts]].reshape(len(texts), encoder.dim)

    return ta.Vectors(
        descriptions=rows(corpus.descriptions, "p:"),
        **{k: rows(texts, "q:") for k, texts in groups.items()},
    )


def load_encoders() -> dict[str, Encoder]:
    """The default router's encoders, by name."""
    return {
        spec.name: Encoder(default_models_dir() / spec.name, DEFAULT_ROUTER)
        for spec in DEFAULT_MEMBERS
    }


def identity_adapters(encoders: dict[str, Encoder]) -> dict[str, Adapter]:
    """No adapter: plain cosine similarity (Adapter.load's stand-in for a missing file)."""
    return {name: Adapter.load(Path("/nonexistent"), e.dim) for name, e in encoders.items()}


def shipped_adapters(encoders: dict[str, Encoder]) -> dict[str, Adapter]:
    """The adapters the router ships with (plano_extproc/router/data), with their exemplars."""
    return {
        name: Adapter.for_model(default_models_dir() / name, e.dim) for name, e in encoders.items()
    }


def stand_in_provider() -> Provider:
    """A provider every benchmark route is served by (routing never calls it)."""
    return with_stand_in_keys(load_config(ROOT / "bench/router/dev-config.yaml")).routes[0].provider


def configs_of(routes: Any, seed: int) -> list[Any]:
    """``routes`` (indices) shuffled by ``seed`` and cut into configs of CONFIG_ROUTES."""
    order = np.random.default_rng(seed).permutation(routes)
    return [order[i : i + CONFIG_ROUTES] for i in range(0, len(order), CONFIG_ROUTES)]


def router_for(
    routes: tuple[Route, ...], encoders: dict[str, Encoder], adapters: dict[str, Adapter]
) -> EncoderRouter:
    """The default router over ``routes`` with the given encoders and adapters."""
    members = [
        Member(spec, encoders[spec.name], adapters[spec.name], routes) for spec in DEFAULT_MEMBERS
    ]
    return EncoderRouter(routes, DEFAULT_ROUTER, members)


@dataclass
class Tally:
    total: Counter[str]
    right: Counter[str]
    misses: list[str]

    def record(self, keys: Sequence[str], case: Case, got: str) -> None:
        """One decision of ``case``, counted under each of ``keys``."""
        ok = got == case.expected
        for key in keys:
            self.total[key] += 1
            self.right[key] += ok
        if not ok:
            last = case.messages[-1]["content"][:70].replace("\n", " ")
            self.misses.append(f"{case.kind}: {case.expected} -> {got}: {last}")

    def cell(self, key: str) -> str:
        if not self.total[key]:
            return "-"
        return (
            f"{100 * self.right[key] / self.total[key]:.1f}% ({self.right[key]}/{self.total[key]})"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--l2", type=float, default=0.01)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--hard", type=float, default=0.3)
    overrides.add(
        parser,
        "other_bias",
        "assistant_weight",
        "follow_up_boost",
        "lexical_weight",
        "exemplar_weight",
    )
    parser.add_argument(
        "--cascade-confidence", type=float, help="instead of embedded's (above 1: no cascade)"
    )
    parser.add_argument("--misses", action="store_true", help="list held_out's wrong answers")
    parser.add_argument("--folds", default="", help="only these train files' suffixes, e.g. abcd")
    parser.add_argument("--variants", default="identity,held_out,all_routes")
    parser.add_argument("--write", type=Path, help="also write the report to this file")
    parser.add_argument("--data", type=Path, default=ta.DATA, help="the training data")
    args = parser.parse_args()
    started = time.perf_counter()

    corpus = ta.read_corpus(args.data)
    groups = np.array(corpus.route_groups)
    names, descriptions = corpus.names, corpus.plain_descriptions
    provider = stand_in_provider()
    encoders = load_encoders()
    vectors = {name: cached_vectors(e, name, corpus) for name, e in encoders.items()}
    # The fold's re-fitted adapters join these two, which are the same for every fold.
    fixed = {"identity": identity_adapters(encoders), "all_routes": shipped_adapters(encoders)}
    print(f"embedded the training data in {time.perf_counter() - started:.0f} s", flush=True)

    variants = tuple(args.variants.split(","))
    tallies = {v: Tally(Counter(), Counter(), []) for v in variants}
    scores: list[tuple[Mapping[str, float], str]] = []
    hyper = dict(l2=args.l2, epochs=args.epochs, lr=args.lr, episode=10, hard=args.hard)
    overrides.apply(args)
    suffixes = [p.stem.removeprefix("train_") for p in sorted(args.data.glob("train_*.jsonl"))]
    folds = [f for f in range(len(suffixes)) if not args.folds or suffixes[f] in args.folds]
    for fold in folds:
        split = fold % OTHER_SPLIT
        held = np.flatnonzero(groups == fold)
        seen = np.flatnonzero(groups != fold)
        kept_others = [i for i in range(len(corpus.others)) if i % OTHER_SPLIT != split]
        kept_closings = [i for i in range(len(corpus.closings)) if i % OTHER_SPLIT != split]
        # The fold's "other" requests: those that fit no route of any file, and other_a's
        # (written against train_a's routes) when train_a's routes are held out.
        asked_others = [
            corpus.others[i]
            for i in range(len(corpus.others))
            if i % OTHER_SPLIT == split and corpus.other_group[i] in (-1, fold)
        ]
        asked_closings = [
            corpus.closings[i] for i in range(len(corpus.closings)) if i % OTHER_SPLIT == split
        ]
        adapters = {**fixed, "held_out": {}}
        for spec in DEFAULT_MEMBERS:
            scale = SCALES[spec.name]
            sub_c, sub_v = subset(corpus, vectors[spec.name], kept_others, kept_closings)
            fit = ta.train(sub_c, sub_v, seen, scale=scale, seed=fold, **hyper)
            # Its exemplars too are only the requests of the routes it was fitted on.
            v = vectors[spec.name]
            known = ta.exemplars_of(corpus, v.requests, v.descriptions)
            known = known.without_routes(groups == fold)
            adapters["held_out"][spec.name] = fit_adapter(fit, scale, known)
        configs = configs_of(held, fold)
        for k, config in enumerate(configs):
            routes = tuple(Route(names[r], descriptions[r], provider) for r in config.tolist())
            # Each config asks its share of the fold's "other" requests and closings.
            share = slice(k, None, len(configs))
            cases = cases_for(
                corpus, config.tolist(), names, asked_others[share], asked_closings[share]
            )
            for variant in variants:
                router = router_for(routes, encoders, adapters[variant])
                if args.cascade_confidence is not None:
                    router.cascade_confidence = args.cascade_confidence
                for case in cases:
                    choice = router.choose(case.messages)
                    if variant == "held_out":
                        scores.append((choice.scores, case.expected))
                    counted = ("ALL", f"kind:{case.kind}", f"fold:{suffixes[fold]}")
                    tallies[variant].record(counted, case, choice.route)
        print(f"fold {suffixes[fold]} done at {time.perf_counter() - started:.0f} s", flush=True)

    keys = ["ALL", *(f"kind:{k}" for k in ("single", "follow_up", "topic_shift", "other"))]
    keys += [f"fold:{suffixes[f]}" for f in folds]
    settings = {k: v for k, v in vars(args).items() if k not in ("misses", "write", "data")}
    lines = heading("Router: leave-routes-out")
    lines += [
        "Written by `python bench/router/leave_routes_out.py --write bench/RESULTS.md`. For each",
        "training file (plano_extproc/modelbuild/data/train_<fold>.jsonl, 14 to 45 routes), both",
        "adapters are re-fitted without its routes, then the whole router decides that file's",
        f"requests in configs of {CONFIG_ROUTES} of those routes, described only by their",
        "descriptions: alone (`single`), the route's follow-ups after one of its requests, a",
        "request after another route's (`topic_shift`), and held-out off-route requests and",
        "closings (`other`). `identity`: no adapter (cosine similarity); `held_out`: fitted",
        "without the fold's routes (what a user's own routes get); `all_routes`: the shipped",
        "adapters, which saw these routes' requests (the gap to `held_out` is how much they fit",
        f"their training routes rather than the task). Settings: {settings}.",
        "",
        *table_head("", variants),
    ]
    for key in keys:
        lines.append(f"| {key} | " + " | ".join(tallies[v].cell(key) for v in variants) + " |")
    if scores:
        lines += [
            "",
            "`held_out` with `OTHER_BIAS` moved by delta: requests of a route right, off-route",
        ]
        lines += ["right, all right:", "", "| delta | route | other | all |", "|---|---|---|---|"]
    for delta in np.arange(-1.5, 1.51, 0.5) if scores else ():
        right: Counter[str] = Counter()
        total: Counter[str] = Counter()
        for sc, expected in scores:
            best = max((n for n in sc if n != OTHER), key=sc.__getitem__)
            got = OTHER if np.log(max(sc[OTHER], 1e-300)) + delta > np.log(sc[best]) else best
            kind = "other" if expected == OTHER else "route"
            total[kind] += 1
            right[kind] += got == expected
        cells = [f"{100 * right[k] / max(total[k], 1):.1f}%" for k in ("route", "other")]
        overall = 100 * sum(right.values()) / max(sum(total.values()), 1)
        lines.append(f"| {delta:+.1f} | {' | '.join(cells)} | {overall:.1f}% |")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.misses:
        print("\nheld_out misses:\n  " + "\n  ".join(tallies["held_out"].misses))
    if args.write:
        write_section(args.write, "router-leave-routes-out", report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

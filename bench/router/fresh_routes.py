"""Fresh routes: the router as shipped, on 144 routes its adapters never saw.

Leave-routes-out (leave_routes_out.py) re-fits the adapters without some training routes;
this measures the shipped adapters themselves on routes written after them and apart from
their training data (bench/router/fresh/, see its README): four files of 36 routes each
(code, documents, reasoning/creative/career, multilingual), each route with 16 requests in
several voices (terse, chatty, non-native, formal, pasted material, another language,
indirect) and 5 follow-ups, and 40 requests per file that fit none of its routes. The
routes of a file border each other on purpose: the same object (SQL, a contract, a
résumé) with different actions (explain it, write one, fix it, summarise it).

The whole router (both encoders, the cascade, pooling, "other") decides them in configs of
9 routes of one file at a time, described only by their descriptions, with the
conversations leave_routes_out.py asks (`single`, `follow_up`, `topic_shift`, `other`),
under two adapters: `identity` (none: plain cosine similarity) and `shipped`.

    python bench/router/fresh_routes.py [--write bench/RESULTS.md] [--misses]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "bench/router"))

from leave_routes_out import CONFIG_ROUTES, Tally, cases_for  # noqa: E402
from results import heading, publish, table_head  # noqa: E402

from plano_extproc.config import DEFAULT_ROUTER, Route, load_config  # noqa: E402
from plano_extproc.explain import with_stand_in_keys  # noqa: E402
from plano_extproc.modelbuild.train_adapter import Corpus  # noqa: E402
from plano_extproc.router import default_models_dir  # noqa: E402
from plano_extproc.router.embedded import (  # noqa: E402
    DEFAULT_MEMBERS,
    Adapter,
    Encoder,
    EncoderRouter,
    Member,
    adapter_path,
)

FRESH = ROOT / "bench/router/fresh"
KINDS = ("single", "follow_up", "topic_shift", "other")
WEAK_ROUTE = 0.7  # the floor for any one route


def read_group(path: Path) -> tuple[Corpus, list[str]]:
    """One file's routes as a corpus (requests and follow-ups), and its off-route requests."""
    corpus = Corpus([], [], [], [], [], [], [], [], [])
    for index, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        row = json.loads(line)
        corpus.descriptions.append(f"{row['name']}: {row['description']}")
        corpus.route_groups.append(0)
        corpus.requests += row["requests"]
        corpus.request_route += [index] * len(row["requests"])
        corpus.followups += row["followups"]
        corpus.followup_route += [index] * len(row["followups"])
    other_path = path.with_name(path.stem + ".other.jsonl")
    others = [json.loads(line)["request"] for line in other_path.read_text().splitlines()]
    return corpus, others


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", type=Path, help="also write the report to this file")
    parser.add_argument("--misses", action="store_true", help="list the shipped router's misses")
    args = parser.parse_args()
    started = time.perf_counter()

    provider = with_stand_in_keys(load_config(ROOT / "bench/router/dev-config.yaml")).routes[0]
    encoders = {
        spec.name: Encoder(default_models_dir() / spec.name, DEFAULT_ROUTER)
        for spec in DEFAULT_MEMBERS
    }
    adapters = {
        "identity": {n: Adapter.load(Path("/nonexistent"), e.dim) for n, e in encoders.items()},
        "shipped": {
            n: Adapter.load(adapter_path(default_models_dir() / n), e.dim)
            for n, e in encoders.items()
        },
    }
    tallies = {v: Tally(Counter(), Counter(), []) for v in adapters}
    groups = sorted(p for p in FRESH.glob("*.jsonl") if not p.name.endswith(".other.jsonl"))
    routes_seen = 0
    for group, path in enumerate(groups):
        corpus, others = read_group(path)
        routes_seen += len(corpus.descriptions)
        names = [d.split(":", 1)[0] for d in corpus.descriptions]
        descriptions = [d.split(": ", 1)[1] for d in corpus.descriptions]
        order = np.random.default_rng(group).permutation(len(names))
        configs = [order[i : i + CONFIG_ROUTES] for i in range(0, len(order), CONFIG_ROUTES)]
        for k, config in enumerate(configs):
            routes = tuple(
                Route(names[r], descriptions[r], provider.provider) for r in config.tolist()
            )
            cases = cases_for(corpus, config.tolist(), names, others[k :: len(configs)], [])
            for variant, members_adapters in adapters.items():
                members = [
                    Member(spec, encoders[spec.name], members_adapters[spec.name], routes)
                    for spec in DEFAULT_MEMBERS
                ]
                router = EncoderRouter(routes, DEFAULT_ROUTER, members)
                tally = tallies[variant]
                for case in cases:
                    got = router.choose(case.messages).route
                    ok = got == case.expected
                    keys = ["ALL", f"kind:{case.kind}", f"file:{path.stem}"]
                    if case.kind == "single":  # two files may name a route alike
                        keys.append(f"route:{path.stem}/{case.expected}")
                    for key in keys:
                        tally.total[key] += 1
                        tally.right[key] += ok
                    if not ok:
                        last = case.messages[-1]["content"][:70].replace("\n", " ")
                        tally.misses.append(f"{case.kind}: {case.expected} -> {got}: {last}")
        print(f"{path.stem} done at {time.perf_counter() - started:.0f} s", flush=True)

    shipped = tallies["shipped"]
    rates = {
        key.removeprefix("route:"): shipped.right[key] / shipped.total[key]
        for key in shipped.total
        if key.startswith("route:")
    }
    weak = sorted((rate, name.split("/")[1]) for name, rate in rates.items() if rate < WEAK_ROUTE)
    keys = ["ALL", *(f"kind:{k}" for k in KINDS), *(f"file:{p.stem}" for p in groups)]
    lines = heading("Router: fresh routes")
    lines += [
        "Written by `python bench/router/fresh_routes.py --write bench/RESULTS.md`. The shipped",
        f"router on the {routes_seen} routes of bench/router/fresh/ (written after its adapters",
        "were fitted and apart from their training data), in configs of",
        f"{CONFIG_ROUTES} bordering routes of one file, with the conversations",
        "leave_routes_out.py asks. `identity`: no adapter (plain cosine similarity).",
        "",
        *table_head("", list(adapters)),
    ]
    for key in keys:
        lines.append(f"| {key} | " + " | ".join(tallies[v].cell(key) for v in adapters) + " |")
    lines += [
        "",
        f"Routes under {WEAK_ROUTE:.0%} on their single requests (shipped): {len(weak)} of "
        f"{len(rates)}; the weakest: "
        + ", ".join(f"{name} {rate:.0%}" for rate, name in weak[:8])
        + ".",
    ]
    publish("\n".join(lines) + "\n", args.write, "router-fresh-routes")
    if args.misses:
        print("\nshipped misses:\n  " + "\n  ".join(shipped.misses))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

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
        [--follow-up-boost B] [--lexical-weight W]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "bench/router"))

import overrides  # noqa: E402
from leave_routes_out import (  # noqa: E402
    CONFIG_ROUTES,
    Tally,
    cases_for,
    configs_of,
    identity_adapters,
    load_encoders,
    router_for,
    shipped_adapters,
    stand_in_provider,
)
from results import heading, publish, table_head  # noqa: E402

from plano_extproc.config import Route  # noqa: E402
from plano_extproc.modelbuild.train_adapter import Corpus  # noqa: E402

FRESH = ROOT / "bench/router/fresh"
KINDS = ("single", "follow_up", "topic_shift", "other")
WEAK_ROUTE = 0.7  # the floor for any one route


@dataclass
class Topic:
    """One file of the set: its routes, their requests and follow-ups (as a corpus that
    leave_routes_out.cases_for reads), and its off-route requests."""

    corpus: Corpus
    others: list[str]


def read_topic(path: Path) -> Topic:
    corpus = Corpus()
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        index = corpus.add_route(row["name"], row["description"])
        corpus.requests += row["requests"]
        corpus.request_route += [index] * len(row["requests"])
        corpus.followups += row["followups"]
        corpus.followup_route += [index] * len(row["followups"])
    other_path = path.with_name(path.stem + ".other.jsonl")
    others = [json.loads(line)["request"] for line in other_path.read_text().splitlines()]
    return Topic(corpus, others)


def topic_files() -> list[Path]:
    return sorted(p for p in FRESH.glob("*.jsonl") if not p.name.endswith(".other.jsonl"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", type=Path, help="also write the report to this file")
    parser.add_argument("--misses", action="store_true", help="list the shipped router's misses")
    overrides.add(parser, "follow_up_boost", "lexical_weight", "exemplar_weight")
    args = parser.parse_args()
    overrides.apply(args)
    started = time.perf_counter()

    provider = stand_in_provider()
    encoders = load_encoders()
    adapters = {"identity": identity_adapters(encoders), "shipped": shipped_adapters(encoders)}
    tallies = {v: Tally(Counter(), Counter(), []) for v in adapters}
    files = topic_files()
    routes_seen = 0
    for seed, path in enumerate(files):
        topic = read_topic(path)
        names, descriptions = topic.corpus.names, topic.corpus.plain_descriptions
        routes_seen += len(names)
        configs = configs_of(len(names), seed)
        for k, config in enumerate(configs):
            routes = tuple(Route(names[r], descriptions[r], provider) for r in config)
            others = topic.others[k :: len(configs)]
            cases = cases_for(topic.corpus, config.tolist(), names, others, [])
            for variant, chosen in adapters.items():
                router = router_for(routes, encoders, chosen)
                for case in cases:
                    keys = ["ALL", f"kind:{case.kind}", f"file:{path.stem}"]
                    if case.kind == "single":  # two files may name a route alike
                        keys.append(f"route:{path.stem}/{case.expected}")
                    tallies[variant].record(keys, case, router.choose(case.messages).route)
        print(f"{path.stem} done at {time.perf_counter() - started:.0f} s", flush=True)

    shipped = tallies["shipped"]
    rates = {
        key.removeprefix("route:"): shipped.right[key] / shipped.total[key]
        for key in shipped.total
        if key.startswith("route:")
    }
    weak = sorted((rate, name.split("/")[1]) for name, rate in rates.items() if rate < WEAK_ROUTE)
    keys = ["ALL", *(f"kind:{k}" for k in KINDS), *(f"file:{p.stem}" for p in files)]
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

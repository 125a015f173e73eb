"""What an embedded-router decision costs, in process, with each router loaded once.

1. The lexical reading (router/lexical.py): ``EncoderRouter.description_words`` timed alone
   over the development set's conversations, with the views ``choose()`` builds, once with
   the stem cache cleared before each decision (every word unseen) and once warm (every
   conversation read before): median and p99 in ms.
2. CPU per decision (``time.process_time``: every thread of this process, the helper that
   runs a second batch beside the first included) with the sidecar's config
   (deploy/kubernetes/sidecar's ConfigMap: two broad routes) against bench/load_bench.py's
   (two specific ones), on the 1 KB (about 256-token) conversations load_bench sends for
   preference routing: its ``chat_body`` with the request number made distinct, as wrk does
   (``loadgen.VARY_MARKER``). One decision at a time, the two configs alternating over the
   same conversations after a warm-up; and how many decisions MiniLM made alone (e5 not
   run: the explain's ``decided_by``). ``choose()`` is called directly, so the decision
   cache (RouterService's) is never asked, and no two conversations are the same anyway.

    python bench/router/decision_cost.py [--conversations 100] [--seed 0] [--passes 5]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from load_bench import GATEWAY_CONFIG, chat_body  # noqa: E402
from loadgen import VARY_MARKER  # noqa: E402
from pod_resources import sidecar_config  # noqa: E402
from results import machine, table_head  # noqa: E402
from router_bench import SETS, bench_config, percentile  # noqa: E402

from plano_extproc.router import lexical, load_router  # noqa: E402
from plano_extproc.router.conversation import conversation  # noqa: E402
from plano_extproc.router.embedded import EncoderRouter, Views, views  # noqa: E402

# Ports the configs must name; nothing listens or is called.
UNUSED_PORT = 9


def load(config_path: Path) -> EncoderRouter:
    router = load_router(bench_config(config_path))
    assert isinstance(router, EncoderRouter) and len(router.members) > 1
    return router


def dev_views(router: EncoderRouter) -> list[Views]:
    """The views ``choose()`` reads of each development-set conversation."""
    name, _, data = SETS[0]
    assert name == "dev"
    rows = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
    found = [views(conversation(row["messages"], router.reading)) for row in rows]
    return [v for v in found if v is not None]


def lexical_ms(router: EncoderRouter, all_views: Sequence[Views], cold: bool) -> list[float]:
    """``description_words``' time for each view set, in ms; ``cold``: the stem cache cleared
    before each decision (not timed), else the views read once before any is timed."""
    if not cold:
        for v in all_views:
            router.description_words(v)
    times = []
    for v in all_views:
        if cold:
            lexical._stem.cache_clear()
        started = time.perf_counter()
        router.description_words(v)
        times.append((time.perf_counter() - started) * 1e3)
    return times


def load_bench_conversations(n: int, seed: int, tag: str = "") -> list[list[dict[str, Any]]]:
    """load_bench's preference-routed body (``chat_body(None, 1000, vary=True)``) ``n``
    times, its request number filled in as wrk does: a run's random id, then a count."""
    template = chat_body(None, 1000, vary=True).decode()
    run = f"{random.Random(seed).getrandbits(48):012x}{tag}"
    bodies = [json.loads(template.replace(VARY_MARKER, f"{run}-{i + 1}")) for i in range(n)]
    return [body["messages"] for body in bodies]


@dataclass
class Cost:
    label: str
    router: EncoderRouter
    cpu_ms: list[float]
    wall_ms: list[float]
    alone: int = 0

    def decide(self, messages: list[dict[str, Any]]) -> None:
        cpu, wall = time.process_time(), time.perf_counter()
        choice = self.router.choose(messages)
        self.cpu_ms.append((time.process_time() - cpu) * 1e3)
        self.wall_ms.append((time.perf_counter() - wall) * 1e3)
        self.alone += "decided_by" in choice.explain


def config_files(workdir: Path) -> dict[str, Path]:
    """The two configs, written where ``bench_config`` can read them."""
    texts = {
        "the sidecar's (deploy/kubernetes/sidecar: 2 broad routes)": sidecar_config(
            UNUSED_PORT, UNUSED_PORT
        ),
        "load_bench.py's (2 specific routes)": GATEWAY_CONFIG.format(
            port=UNUSED_PORT, provider=UNUSED_PORT, stream=UNUSED_PORT
        ),
    }
    paths = {}
    for i, (label, text) in enumerate(texts.items()):
        paths[label] = workdir / f"config-{i}.yaml"
        paths[label].write_text(text)
    return paths


def cpu_costs(n: int, seed: int, warm_up: int) -> list[Cost]:
    with tempfile.TemporaryDirectory() as tmp:
        costs = [Cost(label, load(path), [], []) for label, path in config_files(Path(tmp)).items()]
    for messages in load_bench_conversations(warm_up, seed, tag="w"):
        for cost in costs:
            cost.router.choose(messages)
    for messages in load_bench_conversations(n, seed):
        for cost in costs:  # alternating: a drift of the machine hits both alike
            cost.decide(messages)
    return costs


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--conversations", type=int, default=100, help="load_bench conversations (100)"
    )
    parser.add_argument("--seed", type=int, default=0, help="for the conversations' run id (0)")
    parser.add_argument(
        "--warm-up", type=int, default=10, help="decisions per config before timing (10)"
    )
    parser.add_argument(
        "--passes", type=int, default=5, help="passes over the development set, lexical (5)"
    )
    args = parser.parse_args()

    dev_router = load(SETS[0][1])
    all_views = dev_views(dev_router) * args.passes
    lexical_rows = [
        ("cold (stem cache cleared before each)", lexical_ms(dev_router, all_views, cold=True)),
        ("warm", lexical_ms(dev_router, all_views, cold=False)),
    ]
    del dev_router
    costs = cpu_costs(args.conversations, args.seed, args.warm_up)

    lines = [
        f"Machine: {machine()}",
        "",
        f"The lexical reading (`EncoderRouter.description_words`), the development set's "
        f"{len(all_views) // args.passes} conversations x {args.passes}:",
        "",
        *table_head("stem cache", ["decisions", "median ms", "p99 ms"]),
    ]
    for label, times in lexical_rows:
        lines.append(
            f"| {label} | {len(times)} | {statistics.median(times):.3f} "
            f"| {percentile(times, 99):.3f} |"
        )
    lines += [
        "",
        f"A whole decision (`choose()`), one at a time, on {args.conversations} of load_bench's "
        f"1 KB preference-routed conversations (seed {args.seed}, after {args.warm_up} "
        "warm-up decisions), the configs alternating:",
        "",
        *table_head(
            "config",
            ["CPU ms: median", "mean", "p99", "wall ms: median", "MiniLM alone (e5 not run)"],
        ),
    ]
    for cost in costs:
        lines.append(
            f"| {cost.label} | {statistics.median(cost.cpu_ms):.1f} "
            f"| {statistics.mean(cost.cpu_ms):.1f} | {percentile(cost.cpu_ms, 99):.1f} "
            f"| {statistics.median(cost.wall_ms):.1f} | {cost.alone} of {len(cost.cpu_ms)} |"
        )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

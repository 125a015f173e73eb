"""The cascade's confidence: how often MiniLM decides alone, and what that does to accuracy.

The embedded router asks its second encoder (multilingual-e5-small, about twice MiniLM's
cost per token) only when MiniLM is unsure or the turn is not English enough
(``EncoderRouter.decides_alone``). For every conversation of each set this computes both
encoders' log-probabilities once, then replays the decision for each confidence: MiniLM's
answer where it would decide alone, the pooled answer elsewhere. The dev column's candidate is
the lowest confidence that is right as often as never deciding alone; ``CASCADE_CONFIDENCE``
also weighs leave-routes-out (``leave_routes_out.py --cascade-confidence``), where trusting
MiniLM too early costs accuracy on routes its adapter never saw. The holdout and independent
columns are measured, not used.

    python bench/router/cascade.py [--write bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import overrides  # noqa: E402
from results import heading, publish, table_head  # noqa: E402
from router_bench import SETS, bench_config  # noqa: E402

from plano_extproc.router import load_router  # noqa: E402
from plano_extproc.router.base import OTHER  # noqa: E402
from plano_extproc.router.conversation import conversation  # noqa: E402
from plano_extproc.router.embedded import (  # noqa: E402
    CASCADE_CONFIDENCE,
    EncoderRouter,
    views,
)

CONFIDENCES = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.01)


@dataclass(frozen=True)
class Decision:
    expected: str
    names: list[str]
    weights: list[float]
    logps: list[Any]  # per encoder: routes then "other"; None for one not run


def decisions(router: EncoderRouter, rows: Sequence[dict[str, Any]]) -> list[Decision]:
    """Every encoder's log-probabilities for every conversation (None where the router
    would not run it: MiniLM on a turn it cannot read)."""
    found = []
    for row in rows:
        v = views(conversation(row["messages"], router.reading))
        if v is None:
            continue
        weights = router.skipping(router.weights(v.texts[v.latest[0]]))
        lexical, _ = router.description_words(v)
        logps = [
            m.logits(v, router.settings.max_tokens, lexical) if w > 0.0 else None
            for m, w in zip(router.members, weights, strict=True)
        ]
        found.append(Decision(str(row["expected_route"]), [*router.names, OTHER], weights, logps))
    return found


def replay(router: EncoderRouter, found: Sequence[Decision], confidence: float) -> tuple[int, int]:
    """(right, decided by MiniLM alone) at ``confidence``: each decision settled as the
    router settles it (``EncoderRouter.settled``), from the encoders' log-probabilities."""
    right = alone = 0
    for d in found:
        scores = router.settled(d.weights, d.logps[:1], confidence)
        alone += scores is not None
        if scores is None:
            scores = router.settled(d.weights, d.logps, confidence)
        assert scores is not None
        right += d.names[int(scores.argmax())] == d.expected
    return right, alone


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", type=Path, help="also write the table to this file")
    overrides.add(parser, "skip_share", "lexical_weight", "exemplar_weight")
    args = parser.parse_args()
    overrides.apply(args)
    columns: dict[str, list[tuple[int, int, int]]] = {}
    for name, config_path, data in SETS:
        router = load_router(bench_config(config_path))
        assert isinstance(router, EncoderRouter) and len(router.members) > 1
        rows = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
        found = decisions(router, rows)
        columns[name] = [(*replay(router, found, c), len(found)) for c in CONFIDENCES]
    dev = columns["dev"]
    pooled_right = dev[-1][0]  # 1.01: never alone
    chosen = next(
        c for c, (right, _, n) in zip(CONFIDENCES, dev, strict=True) if right >= pooled_right
    )

    lines = heading("Router: the cascade's confidence")
    lines += [
        "Written by `python bench/router/cascade.py --write bench/RESULTS.md`. MiniLM decides",
        "alone when the turn is English (90% of its words known) and its top choice has at",
        "least the confidence below; otherwise e5 is asked too and the two are pooled. Each",
        "cell: accuracy, and the share of decisions MiniLM made alone (e5 not run). 1.01 is",
        "never alone (both encoders every time). Dev's candidate (the lowest confidence that",
        f"is right as often as never alone): **{chosen}**; the router uses {CASCADE_CONFIDENCE}",
        "(see embedded.CASCADE_CONFIDENCE: leave-routes-out weighs in too).",
        "",
        *table_head("confidence", list(columns)),
    ]
    for i, confidence in enumerate(CONFIDENCES):
        cells = []
        for results in columns.values():
            right, alone, total = results[i]
            cells.append(f"{100 * right / total:.1f}% ({100 * alone / total:.0f}% alone)")
        lines.append(f"| {confidence} | " + " | ".join(cells) + " |")
    report = "\n".join(lines)
    publish(report, args.write, "router-cascade")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

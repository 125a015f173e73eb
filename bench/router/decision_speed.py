"""The embedded router's decision speed here against another checkout's, measured alternately.

Each round runs one child process per checkout, one after the other: it loads that
checkout's router on the development config and measures, one decision at a time, the
p50 of router_bench's synthetic conversations (three development-set requests repeated to
about 32, 128 and 256 tokens; 256 again with both encoders every time) and of the
development set as written, then decisions a second over the development set (twice)
with one and two callers at once. The table gives each figure's median over the rounds.
Alternating rounds is what makes two checkouts comparable on a machine whose speed drifts.

    python bench/router/decision_speed.py --against PATH [--rounds 3] [--write bench/RESULTS.md]

PATH is another checkout of this repository (``git worktree add PATH COMMIT``) whose
models are the ones ``make models`` builds here (``--models-dir``, default build/models).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIGURES = (
    ("32", "3 requests, ~32 tokens: p50 ms"),
    ("128", "3 requests, ~128 tokens: p50 ms"),
    ("256", "3 requests, ~256 tokens: p50 ms"),
    ("both256", "~256 tokens, both encoders every time: p50 ms"),
    ("dev", "development set as written: p50 ms"),
    ("rate1", "development set, one caller: decisions/s"),
    ("rate2", "development set, two callers: decisions/s"),
)


def measure(root: Path) -> dict[str, float]:
    """The figures for the checkout at ``root`` (run in a child whose imports are its)."""
    sys.path[:0] = [str(root), str(root / "bench")]
    from router_bench import SETS, accuracy, bench_config, synthetic_latency

    from plano_extproc.router import load_router

    router = load_router(bench_config(SETS[0][1]))
    assert router is not None
    rows = [json.loads(line) for line in SETS[0][2].read_text().splitlines() if line.strip()]
    out = {size: synthetic_latency(router, int(size))[0] for size in ("32", "128", "256")}
    out["dev"] = statistics.median(accuracy("dev", router, rows).latencies_ms)
    conversations = [row["messages"] for row in rows]
    for callers in (1, 2):
        with ThreadPoolExecutor(callers) as pool:
            started = time.perf_counter()
            list(pool.map(router.choose, conversations * 2))
            out[f"rate{callers}"] = 2 * len(conversations) / (time.perf_counter() - started)
    router.cascade_confidence = 1.01  # type: ignore[attr-defined]
    out["both256"] = synthetic_latency(router, 256)[0]
    return out


def child(root: Path, models: Path) -> dict[str, float]:
    env = {**os.environ, "PLANO_MODELS_DIR": str(models)}
    command = [sys.executable, __file__, "--measure", str(root)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def commit(root: Path) -> str:
    """The checkout's commit, marked when its tree has changes (other than to the results
    file the benchmarks write)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
        return done.stdout.strip()

    head = git("rev-parse", "--short", "HEAD")
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/RESULTS.md")
    return f"{head} with changes" if changed else head


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--against", type=Path, help="another checkout to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models-dir", type=Path, default=ROOT / "build" / "models")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--write", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return 0
    if args.against is None:
        parser.error("--against PATH is required")
    roots = {"other": args.against.resolve(), "this": ROOT}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in roots}
    for round_ in range(args.rounds):
        for name, root in roots.items():
            runs[name].append(child(root, args.models_dir))
            print(f"round {round_ + 1}/{args.rounds} {name}: {runs[name][-1]}", file=sys.stderr)
    sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
    from results import heading, publish

    commits = [commit(root) for root in roots.values()]
    lines = heading("Router: decision speed against another checkout")
    lines += [
        f"Written by `python bench/router/decision_speed.py --against PATH --rounds"
        f" {args.rounds}`, PATH a worktree of {commits[0]}: medians of {args.rounds}"
        f" alternating rounds, one decision at a time except for two callers.",
        "",
        f"| figure | {commits[0]} | this checkout ({commits[1]}) |",
        "|---|---|---|",
    ]
    for key, label in FIGURES:
        other, this = (statistics.median(r[key] for r in runs[n]) for n in roots)
        lines.append(f"| {label} | {other:.1f} | {this:.1f} |")
    publish("\n".join(lines), args.write, "router-decision-speed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What operating a gateway costs: the metrics (and the access log, when this checkout has it)
on against off, at 16 clients, in the same run, interleaved.

    python bench/ops_bench.py [--rounds 5] [--seconds 5] [--clients 16] [--write FILE]

Gateways (`plano-extproc up`, one server worker, Envoy with one worker thread) in front of
load_bench's fake provider (an Envoy answering a fixed chat.completion, with its usage): one
with nothing on (`--access-log off` where that flag exists), one with `--metrics-listen`, one
with the token counts too (`--token-stats`), and, where this checkout has the access log,
each of those two with the access log written to a file. While a gateway with metrics is measured,
its endpoint is scraped once a second (Prometheus' default is every 15 s or more: this is the
pessimistic side). wrk sends a model-routed request (the hot path: only Envoy's per-request
stats are added there) and a preference-routed one whose decision is cached (the server's
router counters and histogram too). Each round runs every configuration once, rotated; the
tables show medians.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import subprocess
import sys
import tempfile
import threading
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import load_bench  # noqa: E402
import loadgen  # noqa: E402
import procs  # noqa: E402
from results import machine, publish  # noqa: E402

OFF, METRICS, TOKENS = "off", "metrics", "metrics + tokens"
BOTH, ALL = "metrics + access log", "metrics + tokens + access log"
TARGETS = {"model-routed": ("openai/gpt-5.2", False), "preference, cached": (None, False)}


@dataclass(frozen=True)
class Gateway:
    url: str
    envoy: tuple[int, ...]
    servers: tuple[int, ...]
    metrics: str | None


def _has_access_log() -> bool:
    """This checkout's `up` takes --access-log (the access log is a separate change)."""
    out = subprocess.run(
        [sys.executable, "-m", "plano_extproc", "up", "--help"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return "--access-log" in out


@contextmanager
def gateways(workdir: Path, kinds: list[str], access_log: bool) -> Iterator[dict[str, Gateway]]:
    with ExitStack() as stop:
        provider = load_bench.start_provider(stop, workdir)
        running = {}
        for i, kind in enumerate(kinds):
            port = procs.free_port()
            config = workdir / f"plano-{i}.yaml"
            config.write_text(
                load_bench.GATEWAY_CONFIG.format(port=port, provider=provider, stream=provider)
            )
            argv = [sys.executable, "-m", "plano_extproc", "up", str(config),
                    "--concurrency", "1", "--extproc-port", str(procs.free_ports(1))]  # fmt: skip
            metrics = None
            if kind in (TOKENS, ALL):
                argv += ["--token-stats"]
            if kind != OFF:
                metrics_port = procs.free_port()
                argv += ["--metrics-listen", f"127.0.0.1:{metrics_port}"]
                metrics = f"http://127.0.0.1:{metrics_port}/metrics"
            if access_log:
                log = str(workdir / f"access-{i}.log") if kind in (BOTH, ALL) else "off"
                argv += ["--access-log", log]
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            body = load_bench.chat_body("openai/gpt-5.2", 1000)
            ready = functools.partial(procs.http_ok, url, body)
            pid = procs.start(stop, workdir, f"gateway-{i}", argv, ready)
            envoy, servers = load_bench.gateway_pids(pid)
            running[kind] = Gateway(url, envoy, servers, metrics)
        yield running


class Scraper:
    """GETs a metrics endpoint once a second while on; counts what it got."""

    def __init__(self, url: str) -> None:
        self.url, self.ok, self.failed = url, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                with urllib.request.urlopen(self.url, timeout=2) as answer:
                    answer.read()
                    self.ok += 1
            except OSError:
                self.failed += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--write", type=Path, help="write the report into this file's section")
    args = parser.parse_args()
    loadgen.require("wrk")
    access_log = _has_access_log()
    kinds = [OFF, METRICS, TOKENS, BOTH, ALL] if access_log else [OFF, METRICS, TOKENS]
    cases = [(target, kind) for target in TARGETS for kind in kinds]
    rps: dict[tuple[str, str], list[float]] = defaultdict(list)
    p99: dict[tuple[str, str], list[float]] = defaultdict(list)
    envoy_cpu: dict[tuple[str, str], list[float]] = defaultdict(list)
    server_cpu: dict[tuple[str, str], list[float]] = defaultdict(list)
    failed = 0
    scrapes = [0, 0]
    with tempfile.TemporaryDirectory(prefix="plano-ops-bench-") as tmp:
        workdir = Path(tmp)
        models = {target: model for target, (model, _) in TARGETS.items()}
        bodies = load_bench.body_files(workdir, models)
        with gateways(workdir, kinds, access_log) as running:
            for target, kind in load_bench.interleaved(cases, args.rounds):
                gateway = running[kind]
                before = (
                    procs.cpu_seconds(list(gateway.envoy)),
                    procs.cpu_seconds(list(gateway.servers)),
                )
                with ExitStack() as scraping:
                    scraper = None
                    if gateway.metrics is not None:
                        scraper = scraping.enter_context(Scraper(gateway.metrics))
                    load = loadgen.wrk(gateway.url, bodies[target], args.clients, args.seconds)
                if scraper is not None:
                    scrapes[0] += scraper.ok
                    scrapes[1] += scraper.failed
                envoy_us = load_bench.cpu_per_request(gateway.envoy, before[0], load.requests)
                envoy_cpu[(target, kind)].append(envoy_us)
                server_us = load_bench.cpu_per_request(gateway.servers, before[1], load.requests)
                server_cpu[(target, kind)].append(server_us)
                rps[(target, kind)].append(load.rps)
                p99[(target, kind)].append(load.p99_ms)
                failed += load.failed
                print(f"bench: {target:20} {kind:22} {load.rps:8.0f} req/s", flush=True)
    lines = [f"## Operating: metrics and access log on against off ({date.today()})", ""]
    lines += [
        f"Machine: {machine()}. Written by bench/ops_bench.py (`make bench`): gateways "
        f"(`up`, one server worker, Envoy one worker thread) at {args.clients} clients (wrk), "
        f"1 KB bodies, medians of {args.rounds} interleaved rounds of {args.seconds:g} s; "
        "the endpoint of a gateway with metrics scraped once a second meanwhile "
        f"({scrapes[0]} scrapes, {scrapes[1]} failed). Failed requests: {failed}. CPU: "
        "Envoy's and the server's process, per request (the scrapes' included).",
        "",
        "| request | gateway | req/s | vs off | vs off, per round | p99 ms | Envoy CPU µs/req "
        "| server CPU µs/req | CPU vs off |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for target in TARGETS:
        base = statistics.median(rps[(target, OFF)])
        base_cpu = statistics.median(envoy_cpu[(target, OFF)]) + statistics.median(
            server_cpu[(target, OFF)]
        )
        for kind in kinds:
            median = statistics.median(rps[(target, kind)])
            envoy_us = statistics.median(envoy_cpu[(target, kind)])
            server_us = statistics.median(server_cpu[(target, kind)])
            # Each round's ratio to that round's off run (minutes apart at most), then their
            # median: a busy machine's slow swings cancel better than in a ratio of medians.
            ratios = [a / b for a, b in zip(rps[(target, kind)], rps[(target, OFF)], strict=True)]
            lines.append(
                f"| {target} | {kind} | {median:,.0f} | {(median / base - 1) * 100:+.1f}% | "
                f"{(statistics.median(ratios) - 1) * 100:+.1f}% | "
                f"{statistics.median(p99[(target, kind)]):.2f} | {envoy_us:.0f} | "
                f"{server_us:.0f} | {((envoy_us + server_us) / base_cpu - 1) * 100:+.1f}% |"
            )
    if not access_log:
        lines += ["", "This checkout's `up` has no access log: metrics only."]
    report = "\n".join(lines)
    publish(report, args.write, "ops")
    return 0


if __name__ == "__main__":
    sys.exit(main())

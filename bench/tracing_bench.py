"""What tracing costs: gateways without it, and with every request or one in ten traced to a
collector on 127.0.0.1, at 16 clients, in the same run, interleaved.

    python bench/tracing_bench.py [--rounds 3] [--seconds 5] [--clients 16]

Gateways (`plano-extproc up`, one server worker, Envoy with one worker thread, access log
off) in front of load_bench's fake provider. The collector is the tests' fake OTLP/gRPC one
(tests/otlp_collector.py) in this process, on a core of the same machine: its CPU is not
counted. wrk sends a model-routed request (Envoy's span only) and a preference-routed one
whose decision is cached (the server's router span too). Each round runs every
configuration once, rotated; the table shows medians, and what the collector received.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import load_bench  # noqa: E402
import loadgen  # noqa: E402
import procs  # noqa: E402
from results import machine  # noqa: E402

from tests.otlp_collector import FakeCollector  # noqa: E402

OFF, TENTH, ALL = "off", "tracing 10%", "tracing 100%"
SAMPLING = {TENTH: 10, ALL: 100}
TARGETS = {"model-routed": "openai/gpt-5.2", "preference, cached": None}


@dataclass(frozen=True)
class Gateway:
    url: str
    envoy: tuple[int, ...]
    servers: tuple[int, ...]


@contextmanager
def gateways(workdir: Path, collector: FakeCollector) -> Iterator[dict[str, Gateway]]:
    with ExitStack() as stop:
        provider = load_bench.start_provider(stop, workdir)
        running = {}
        for i, kind in enumerate((OFF, TENTH, ALL)):
            port = procs.free_port()
            text = load_bench.GATEWAY_CONFIG.format(port=port, provider=provider, stream=provider)
            if kind in SAMPLING:
                text += (
                    f"tracing:\n  random_sampling: {SAMPLING[kind]}\n"
                    f"  opentracing_grpc_endpoint: {collector.endpoint}\n"
                )
            config = workdir / f"plano-{i}.yaml"
            config.write_text(text)
            argv = [sys.executable, "-m", "plano_extproc", "up", str(config),
                    "--concurrency", "1", "--extproc-port", str(procs.free_ports(1)),
                    "--access-log", "off"]  # fmt: skip
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            body = load_bench.chat_body("openai/gpt-5.2", 1000)
            ready = functools.partial(procs.http_ok, url, body)
            pid = procs.start(stop, workdir, f"gateway-{i}", argv, ready)
            envoy, servers = load_bench.gateway_pids(pid)
            running[kind] = Gateway(url, envoy, servers)
        yield running


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    loadgen.require("wrk")
    kinds = [OFF, TENTH, ALL]
    cases = [(target, kind) for target in TARGETS for kind in kinds]
    rps: dict[tuple[str, str], list[float]] = defaultdict(list)
    envoy_cpu: dict[tuple[str, str], list[float]] = defaultdict(list)
    server_cpu: dict[tuple[str, str], list[float]] = defaultdict(list)
    failed = 0
    collector = FakeCollector().start()
    try:
        with tempfile.TemporaryDirectory(prefix="plano-tracing-bench-") as tmp:
            workdir = Path(tmp)
            bodies = load_bench.body_files(workdir, TARGETS)
            with gateways(workdir, collector) as running:
                for target, kind in load_bench.interleaved(cases, args.rounds):
                    gateway = running[kind]
                    before = (
                        procs.cpu_seconds(list(gateway.envoy)),
                        procs.cpu_seconds(list(gateway.servers)),
                    )
                    load = loadgen.wrk(gateway.url, bodies[target], args.clients, args.seconds)
                    envoy_us = load_bench.cpu_per_request(gateway.envoy, before[0], load.requests)
                    envoy_cpu[(target, kind)].append(envoy_us)
                    server_us = load_bench.cpu_per_request(
                        gateway.servers, before[1], load.requests
                    )
                    server_cpu[(target, kind)].append(server_us)
                    rps[(target, kind)].append(load.rps)
                    failed += load.failed
                    print(f"bench: {target:20} {kind:14} {load.rps:8.0f} req/s", flush=True)
        spans = collector.snapshot()
    finally:
        collector.stop()
    by_service: dict[str, int] = defaultdict(int)
    for span in spans:
        by_service[span.service] += 1
    lines = [
        f"Machine: {machine()}. {args.clients} clients (wrk), 1 KB bodies, medians of "
        f"{args.rounds} interleaved rounds of {args.seconds:g} s. Failed requests: {failed}. "
        f"Spans received: {dict(by_service)}.",
        "",
        "| request | gateway | req/s | vs off, per round | Envoy CPU µs/req | server CPU µs/req |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for target in TARGETS:
        for kind in kinds:
            ratios = [a / b for a, b in zip(rps[(target, kind)], rps[(target, OFF)], strict=True)]
            lines.append(
                f"| {target} | {kind} | {statistics.median(rps[(target, kind)]):,.0f} | "
                f"{(statistics.median(ratios) - 1) * 100:+.1f}% | "
                f"{statistics.median(envoy_cpu[(target, kind)]):.0f} | "
                f"{statistics.median(server_cpu[(target, kind)]):.0f} |"
            )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

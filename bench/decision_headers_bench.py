"""What the decision-headers mode (serve --decision-headers, for a mesh ingress) costs against
the metadata mode (our own Envoy config), on this machine, in one run.

    python bench/decision_headers_bench.py [--rounds 3] [--seconds 5] [--write bench/RESULTS.md]

Two measurements:

1. The server alone, no network: the CPU time of one request's ext_proc messages through the
   server's own stream handlers (protobuf parse, decision, answer, serialization): one body
   message in the metadata mode; a request-headers message then the body message in the
   decision-headers mode. Median of rounds of 20,000 requests, per decision kind.
2. End to end, 1 KB chat requests with wrk (1 and 16 connections, rounds interleaved) to an
   Envoy fake provider (direct_response) through: Envoy alone (the floor); `plano-extproc up`
   (our Envoy config, the metadata mode); and the Envoy config the mesh manifests make
   (tests/mesh_ingress.py, as in tests/integration/test_mesh_ingress.py) in front of
   `serve --decision-headers` started with the manifests' config. Every Envoy runs one worker.
   req/s, p50, and the ext_proc server's CPU time per request.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import loadgen  # noqa: E402
import procs  # noqa: E402
import upstreams  # noqa: E402
import yaml  # noqa: E402
from load_bench import chat_body, start_envoy  # noqa: E402
from results import machine, write_section  # noqa: E402

from plano_extproc._proto import ext_proc_pb2 as pb  # noqa: E402
from plano_extproc.config import parse_config  # noqa: E402
from plano_extproc.extproc.decision_headers import (  # noqa: E402
    DecisionHeadersProcessor,
    DecisionHeaderStreams,
)
from plano_extproc.extproc.processor import Processor  # noqa: E402
from plano_extproc.extproc.server import ExtProcService  # noqa: E402
from tests.mesh_ingress import Local, bootstrap, load, one  # noqa: E402

MESH = ROOT / "deploy" / "kubernetes" / "mesh"
KEYS = {"OPENAI_API_KEY": "sk-bench-openai", "ANTHROPIC_API_KEY": "sk-bench-anthropic"}
BUFFER_LIMIT = 17 * 1024 * 1024
UP_CONFIG = """
listeners:
  egress_traffic:
    address: 127.0.0.1
    port: {port}
    timeout: 30s
llm_providers:
  - model: openai/gpt-5.2
    base_url: http://127.0.0.1:{provider}/v1
    access_key: sk-bench-openai
    default: true
model_aliases:
  fast-model:
    target: gpt-5.2
"""
# Per decision kind: the model the body names.
KINDS = {"named (gpt-5.2)": "gpt-5.2", "alias (model rewritten)": "fast-model",
         "wildcard (openai/gpt-5-mini)": "openai/gpt-5-mini"}  # fmt: skip


def _messages(model: str) -> tuple[bytes, bytes]:
    headers = pb.ProcessingRequest(
        request_headers=pb.HttpHeaders(
            headers=pb.HeaderMap(
                headers=[
                    pb.HeaderValue(key=k, raw_value=v.encode())
                    for k, v in (
                        (":method", "POST"),
                        (":path", "/v1/chat/completions"),
                        (":authority", "llm.example"),
                        ("content-type", "application/json"),
                        ("authorization", "Bearer client"),
                        ("user-agent", "OpenAI/Python 2.0"),
                    )
                ]
            )
        )
    ).SerializeToString()
    body = pb.ProcessingRequest(
        request_body=pb.HttpBody(body=chat_body(model, 1000), end_of_stream=True)
    ).SerializeToString()
    return headers, body


def server_alone(rounds: int, n: int = 20_000) -> list[str]:
    config_text = one(load(MESH), "ConfigMap", "plano-config")["data"]["plano.yaml"]
    config = parse_config(config_text, "plano.yaml", KEYS)
    plain = ExtProcService(Processor(config), None)
    headed_processor = DecisionHeadersProcessor(config)
    headed = DecisionHeaderStreams(ExtProcService(headed_processor, None), headed_processor)
    rows = [
        "| decision | metadata mode: 1 message, µs | decision headers: 2 messages, µs | added |",
        "|---|---|---|---|",
    ]
    for kind, model in KINDS.items():
        headers, body = _messages(model)

        def metadata_mode(body: bytes = body) -> None:
            plain.open_stream({})(body)

        def headers_mode(headers: bytes = headers, body: bytes = body) -> None:
            handler = headed.open_stream({})
            handler(headers)
            handler(body)

        times: dict[str, list[float]] = {"metadata": [], "headers": []}
        for _ in range(rounds):
            for name, run in (("metadata", metadata_mode), ("headers", headers_mode)):
                start = time.process_time_ns()
                for _ in range(n):
                    run()
                times[name].append((time.process_time_ns() - start) / n / 1000)
        a, b = statistics.median(times["metadata"]), statistics.median(times["headers"])
        rows.append(f"| {kind} | {a:.1f} | {b:.1f} | +{b - a:.1f} ({(b / a - 1) * 100:.0f}%) |")
    return rows


def end_to_end(rounds: int, seconds: float, workdir: Path) -> list[str]:
    loadgen.require("wrk")
    body = workdir / "body.json"
    body.write_bytes(chat_body("fast-model", 1000))
    with ExitStack() as stop:

        def start(name: str, argv: list[str], ready: Callable[[], bool]) -> int:
            return procs.start(stop, workdir, name, argv, ready)

        def envoy(name: str, config: str, port: int) -> int:
            ready = functools.partial(procs.port_open, port)
            return start_envoy(stop, workdir, name, config, ready)

        provider, admin = procs.free_port(), procs.free_port()
        envoy(
            "provider", upstreams.fake_provider_bootstrap(provider, admin, BUFFER_LIMIT), provider
        )
        floor, admin = procs.free_port(), procs.free_port()
        floor_config = upstreams.floor_bootstrap(admin, [(floor, provider)], BUFFER_LIMIT)
        envoy("floor", floor_config, floor)
        # Our Envoy config: `plano-extproc up`.
        up_port, up_extproc = procs.free_port(), procs.free_port()
        config = workdir / "up.yaml"
        config.write_text(UP_CONFIG.format(port=up_port, provider=provider))
        argv = [sys.executable, "-m", "plano_extproc", "up", str(config),
                "--concurrency", "1", "--extproc-port", str(up_extproc),
                "--admin-port", str(procs.free_port())]  # fmt: skip
        url = f"http://127.0.0.1:{up_port}/v1/chat/completions"
        up = start("up", argv, functools.partial(procs.http_ok, url, body.read_bytes()))
        up_server = next(p for p in procs.children(up) if b" serve " in _cmdline(p))
        # The mesh: the manifests' config and Envoy config, the server as the Deployment runs it.
        docs = load(MESH)
        mesh_config = workdir / "plano.yaml"
        mesh_config.write_text(one(docs, "ConfigMap", "plano-config")["data"]["plano.yaml"])
        extproc, health, listener = procs.free_port(), procs.free_port(), procs.free_port()
        os.environ.update(KEYS)  # the keys the Secret would give the server's pod
        argv = [sys.executable, "-m", "plano_extproc", "serve", str(mesh_config),
                "--listen", f"127.0.0.1:{extproc}", "--health-listen", f"127.0.0.1:{health}",
                "--decision-headers"]  # fmt: skip
        mesh_server = start("mesh-server", argv, functools.partial(procs.port_open, extproc))
        local = Local(listener, {"plano-extproc": extproc},
                      {"openai": provider, "anthropic": provider, "vllm": provider})  # fmt: skip
        envoy("mesh", yaml.safe_dump(bootstrap(docs, local)), listener)
        mesh_url = f"http://127.0.0.1:{listener}/v1/chat/completions"
        procs.wait_for(
            functools.partial(procs.http_ok, mesh_url, body.read_bytes()), "mesh", _Alive(), workdir
        )
        targets = {
            "Envoy alone (floor)": (f"http://127.0.0.1:{floor}/v1/chat/completions", None),
            "metadata mode (our Envoy config, `up`)": (url, up_server),
            "decision headers (the mesh manifests' Envoy config)": (mesh_url, mesh_server),
        }
        results: dict[tuple[str, int], list[tuple[float, float, float | None]]] = {}
        for r in range(rounds):
            names = list(targets)
            names = names[r % len(names) :] + names[: r % len(names)]
            for connections in (1, 16):
                for name in names:
                    target, server = targets[name]
                    cpu = procs.cpu_seconds([server]) if server else 0.0
                    load_ = loadgen.wrk(target, body, connections, seconds)
                    if load_.failed:
                        raise SystemExit(f"bench: {name}: {load_.failed} failed requests")
                    used = (procs.cpu_seconds([server]) - cpu) if server else None
                    per = used / load_.requests * 1e6 if used is not None else None
                    results.setdefault((name, connections), []).append(
                        (load_.rps, load_.p50_ms, per)
                    )
    rows = [
        "| Envoy config | clients | req/s | p50 ms | server CPU µs/req |",
        "|---|---|---|---|---|",
    ]
    for (name, connections), samples in results.items():
        rps = statistics.median(s[0] for s in samples)
        p50 = statistics.median(s[1] for s in samples)
        cpus = [s[2] for s in samples if s[2] is not None]
        cpu_text = f"{statistics.median(cpus):.0f}" if cpus else "-"
        rows.append(f"| {name} | {connections} | {rps:,.0f} | {p50:.2f} | {cpu_text} |")
    return rows


class _Alive:
    """wait_for's child for a check that has no process of its own."""

    returncode: int | None = None

    def poll(self) -> None:
        return None


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return b""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--write", type=Path, help="write the section into this file")
    args = parser.parse_args()
    alone = server_alone(args.rounds)
    print("\n".join(alone), flush=True)
    with tempfile.TemporaryDirectory(prefix="plano-bench-") as tmp:
        e2e = end_to_end(args.rounds, args.seconds, Path(tmp))
    print("\n".join(e2e))
    if args.write:
        text = "\n".join(
            [
                f"## Decision headers (a mesh ingress) against metadata, {date.today()}",
                "",
                f"`python bench/decision_headers_bench.py`: {machine()}. The server alone "
                "(CPU per request through its stream handlers, no network):",
                "",
                *alone,
                "",
                f"End to end, 1 KB bodies (alias: the model rewritten), medians of {args.rounds} "
                f"interleaved rounds of {args.seconds:g} s, one Envoy worker each:",
                "",
                *e2e,
            ]
        )
        write_section(args.write, "decision-headers", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The gateway's cost under load, against Envoy alone on the same machine in the same run.

    python bench/load_bench.py [--rounds 3] [--seconds 5] [--sweep] [--soak 60] [--log-cost]
                               [--quick] [--only TARGET,...] [--profile SECONDS [--native]]
                               [--write FILE]

Everything runs on 127.0.0.1 and is started and stopped here: a fake provider (an Envoy
answering a fixed chat.completion, or at .../messages a fixed Anthropic message, with
direct_response, so it is never the bottleneck), a streaming fake provider
(bench/upstreams.py: OpenAI's chunks, or Anthropic's events at .../messages; the first at
once, the rest 5 ms later), Envoy alone proxying to both (the floor), and gateways
(`plano-extproc up`: Envoy and the ext_proc server) in front of them: the default one, one on
the grpcio transport for comparison, and, for the sweep, one with two server workers. Every
Envoy runs one worker thread (`--concurrency 1`): the machine this was written on has two
cores.

Clients speak OpenAI's chat completions or Anthropic's Messages (/v1/messages), and so do
the providers: the same API end to end (one ext_proc message per request), or translated
both ways (a second ext_proc stream reads the response). Each gateway row is measured
against Envoy alone sending the same client's body to the upstream that the gateway uses
(TARGETS: the floor of each row); a translated row's floor is the upstream's own API.

Each round runs every configuration once, in turn (rotated each round), so slow drifts of a
shared machine hit all of them alike; the tables show medians over the rounds. wrk gives
req/s, p50 and p99; a small asyncio client (loadgen.first_byte) times the first body chunk
of streamed answers (the first token) to the nanosecond (hey's CSV rounds to 0.1 ms). CPU
time per request and peak RSS come from /proc.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import loadgen  # noqa: E402
import procs  # noqa: E402
import upstreams  # noqa: E402
from results import machine, publish  # noqa: E402

from plano_extproc.envoy_config import envoy_binary  # noqa: E402

ENVOY_CONCURRENCY = 1
BUFFER_LIMIT = 16 * 1024 * 1024  # the gateway's default max_body_size, for the floor too
STREAM_PAUSE_MS = 5.0
DEFAULT = "h2 x1"  # the gateway as `make run` starts it: h2 transport, one server worker
# The same with its access log off (--access-log off): what the log costs, in the same run.
NO_LOG = "h2 x1 no-log"

GATEWAY_CONFIG = """
listeners:
  egress_traffic:
    address: 127.0.0.1
    port: {port}
    message_format: openai
    timeout: 30s
llm_providers:
  - model: openai/gpt-5.2
    base_url: http://127.0.0.1:{provider}/v1
    access_key: sk-bench-openai
    default: true
  - model: openai/gpt-5
    base_url: http://127.0.0.1:{provider}/v1
    access_key: sk-bench-openai
    routing_preferences:
      - name: code_generation
        description: writing new code, functions, scripts or programs from a specification
  - model: anthropic/claude-sonnet-4-5
    base_url: http://127.0.0.1:{provider}/anthropic/v1
    access_key: sk-bench-anthropic
    routing_preferences:
      - name: creative_writing
        description: stories, poems, song lyrics and other creative writing
  - model: openai/gpt-stream
    base_url: http://127.0.0.1:{stream}/v1
    access_key: sk-bench-openai
  # Native Anthropic upstreams (the built-in anthropic provider speaks the Messages API):
  # POST {{base_url}}/messages, the path the floor's Anthropic-shaped requests take too.
  - model: anthropic/claude-bench
    base_url: http://127.0.0.1:{provider}/v1
    access_key: sk-bench-anthropic
  - model: anthropic/claude-stream
    base_url: http://127.0.0.1:{stream}/v1
    access_key: sk-bench-anthropic
  # The model-routed path with a fail-over chain configured that never has to be used: what
  # its aggregate cluster and per-attempt filters cost when the primary answers.
  - model: openai/gpt-5.1
    base_url: http://127.0.0.1:{provider}/v1
    access_key: sk-bench-openai
    fallbacks: [anthropic/claude-bench]
model_aliases:
  fast-model:
    target: gpt-5.2
"""


def chat_body(model: str | None, size: int, stream: bool = False, vary: bool = False) -> bytes:
    """A realistic chat request of about ``size`` bytes: a system prompt, a short exchange,
    and a last user turn that carries a pasted log when ``size`` asks for one; with ``vary``,
    the last turn names a request number that wrk fills in (loadgen.VARY_MARKER)."""
    paste_line = "2026-11-26T08:00:00Z INFO worker-7 handled request id=4821 in 12.4 ms\n"
    messages = [
        {"role": "system", "content": "You are a careful assistant for a software team."},
        {"role": "user", "content": "Our service logs show slow requests since this morning."},
        {
            "role": "assistant",
            "content": "Share the relevant log lines and I will look for the pattern.",
        },
        {"role": "user", "content": "Write a Python function that parses these log lines:\n"},
    ]
    if vary:
        messages[-1]["content"] = f"Request {loadgen.VARY_MARKER}. " + str(messages[-1]["content"])
    body: dict[str, object] = {"messages": messages, "temperature": 0.2, "max_tokens": 512}
    if model is not None:
        body = {"model": model, **body}
    if stream:
        body["stream"] = True
    lines = max(1, (size - len(json.dumps(body))) // (len(paste_line) + 1))
    messages[-1]["content"] += paste_line * lines
    return json.dumps(body).encode()


def anthropic_body(model: str | None, size: int, stream: bool = False) -> bytes:
    """``chat_body``'s conversation as an Anthropic Messages request: the system prompt
    apart, ``max_tokens`` (which the API requires) first."""
    chat = json.loads(chat_body(model, size))
    messages = chat.pop("messages")
    body: dict[str, object] = {"model": model} if model is not None else {}
    body["max_tokens"] = chat["max_tokens"]
    body["system"] = messages[0]["content"]
    body["messages"] = messages[1:]
    body["temperature"] = chat["temperature"]
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


# --- the processes ---

OPENAI, ANTHROPIC = "openai", "anthropic"  # the client APIs
PATHS = {OPENAI: "/v1/chat/completions", ANTHROPIC: "/v1/messages"}
HEADERS = {OPENAI: loadgen.OPENAI_HEADERS, ANTHROPIC: loadgen.ANTHROPIC_HEADERS}


@dataclass(frozen=True)
class Gateway:
    base: str  # http://127.0.0.1:PORT
    servers: tuple[int, ...]  # the ext_proc server processes
    envoy: int

    @property
    def url(self) -> str:  # chat completions
        return self.base + PATHS[OPENAI]


@dataclass(frozen=True)
class Stack:
    floor_base: str  # Envoy alone, to the fast provider
    floor_stream_base: str  # Envoy alone, to the streaming provider
    floor_envoy: int
    gateways: dict[str, Gateway]  # "h2 x1": engine, server workers

    @property
    def floor(self) -> str:  # chat completions
        return self.floor_base + PATHS[OPENAI]


@contextmanager
def stack(workdir: Path, gateways: tuple[str, ...], routing: str = "") -> Iterator[Stack]:
    with ExitStack() as stop:

        def start(name: str, argv: list[str], ready: Callable[[], bool]) -> int:
            return procs.start(stop, workdir, name, argv, ready)

        def envoy(name: str, bootstrap: str, admin: int) -> int:
            ready = functools.partial(procs.http_ok, _url(admin, "/ready"))
            return start_envoy(stop, workdir, name, bootstrap, ready, ENVOY_CONCURRENCY)

        provider, stream = start_provider(stop, workdir, ENVOY_CONCURRENCY), procs.free_port()
        streamer = [sys.executable, str(ROOT / "bench/upstreams.py"), "stream", "--port",
                    str(stream), "--pause-ms", str(STREAM_PAUSE_MS)]  # fmt: skip
        start("stream", streamer, functools.partial(procs.port_open, stream))

        floor, floor_stream, admin = procs.free_port(), procs.free_port(), procs.free_port()
        pairs = [(floor, provider), (floor_stream, stream)]
        floor_envoy = envoy("floor", upstreams.floor_bootstrap(admin, pairs, BUFFER_LIMIT), admin)

        running = {}
        for key in gateways:
            engine, workers, log_off = _gateway_kind(key)
            port = procs.free_port()
            config = workdir / f"plano-{key.replace(' ', '-')}.yaml"
            text = GATEWAY_CONFIG.format(port=port, provider=provider, stream=stream)
            config.write_text(text + routing)
            argv = [sys.executable, "-m", "plano_extproc", "up", str(config),
                    "--concurrency", str(ENVOY_CONCURRENCY), "--workers", workers,
                    "--engine", engine, "--extproc-port", str(procs.free_ports(int(workers))),
                    "--admin-port", str(procs.free_port())]  # fmt: skip
            # The access log is on by default (to Envoy's stdout: the log file here).
            argv += ["--access-log", "off"] if log_off else []
            url = _url(port, PATHS[OPENAI])
            ready = functools.partial(procs.http_ok, url, chat_body("openai/gpt-5.2", 1000))
            up = start(f"gateway-{key.replace(' ', '-')}", argv, ready)
            envoy_pids, servers = gateway_pids(up)
            running[key] = Gateway(_url(port), servers, envoy_pids[0])
        yield Stack(_url(floor), _url(floor_stream), floor_envoy, running)


T = TypeVar("T")


def body_files(workdir: Path, models: dict[str, str | None]) -> dict[str, Path]:
    """Per target, a file holding a 1000-byte chat body naming its model (None: no model, the
    router decides), for wrk to send."""
    bodies: dict[str, Path] = {}
    for target, model in models.items():
        bodies[target] = workdir / f"body-{len(bodies)}.json"
        bodies[target].write_bytes(chat_body(model, 1000))
    return bodies


def interleaved(cases: list[T], rounds: int) -> Iterator[T]:
    """Every case once per round, each round starting one case later, so no case always runs
    first (on a cold machine) or last."""
    for r in range(rounds):
        shift = r % len(cases)
        yield from cases[shift:] + cases[:shift]


def start_envoy(
    stop: ExitStack,
    workdir: Path,
    name: str,
    bootstrap: str,
    ready: Callable[[], bool],
    concurrency: int = 1,
) -> int:
    """Envoy on ``bootstrap`` (written to ``workdir/name.yaml``), stopped when ``stop``
    closes; its PID once ``ready()``."""
    path = workdir / f"{name}.yaml"
    path.write_text(bootstrap)
    argv = [envoy_binary(), "-c", str(path), "--concurrency", str(concurrency),
            "--disable-hot-restart", "-l", "warn"]  # fmt: skip
    return procs.start(stop, workdir, name, argv, ready)


def start_provider(stop: ExitStack, workdir: Path, concurrency: int = 1) -> int:
    """The fake provider (an Envoy answering chat completions itself) on a free port, stopped
    when ``stop`` closes; its port once its admin says ready."""
    provider, admin = procs.free_port(), procs.free_port()
    bootstrap = upstreams.fake_provider_bootstrap(provider, admin, BUFFER_LIMIT)
    ready = functools.partial(procs.http_ok, _url(admin, "/ready"))
    start_envoy(stop, workdir, "provider", bootstrap, ready, concurrency)
    return provider


def cpu_per_request(pids: tuple[int, ...], before: float, requests: int) -> float:
    """Microseconds of CPU ``pids`` used per request since they had used ``before`` seconds."""
    return (procs.cpu_seconds(list(pids)) - before) / max(requests, 1) * 1e6


def gateway_pids(pid: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A running ``plano_extproc up``'s children: its Envoy's PIDs, then its servers'."""
    kids = procs.children(pid)
    servers = tuple(p for p in kids if b" serve " in _cmdline(p))
    return tuple(p for p in kids if p not in servers), servers


def _gateway_kind(key: str) -> tuple[str, str, bool]:
    """A gateway key ("h2 x1", "h2 x1 no-log"): its engine, its workers, the log off."""
    engine, _, rest = key.partition(" x")
    workers, *flags = rest.split()
    return engine, workers, "no-log" in flags


def _url(port: int, path: str = "") -> str:
    return f"http://127.0.0.1:{port}{path}"


def _cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")


# --- one configuration under load ---


@dataclass(frozen=True)
class Target:
    """What one row sends, where, and what it is measured against."""

    label: str
    model: str | None  # the body's model (None: the router chooses)
    api: str = OPENAI  # the client's API (its path, headers and body)
    floor: str | None = "envoy"  # the Envoy-alone target for this one; None: a floor itself
    stream: bool = False  # streamed: timed to the first token (loadgen.first_byte)


TARGETS = {
    # The floors: Envoy alone, the same client body to the upstream the gateway uses.
    "envoy": Target("Envoy alone", "openai/gpt-5.2", floor=None),
    "messages-envoy": Target(
        "Envoy alone, Messages (Anthropic client and upstream)",
        "anthropic/claude-bench",
        ANTHROPIC,
        floor=None,
    ),
    "model": Target("gateway, model-routed", "openai/gpt-5.2"),
    "model-fallbacks": Target(
        "gateway, model-routed, a fallback configured but unused", "openai/gpt-5.1"
    ),
    "alias": Target("gateway, alias-routed", "fast-model"),
    "preference": Target("gateway, preference-routed (a new conversation each request)", None),
    "preference-repeat": Target("gateway, preference-routed, repeated (the decision cache)", None),
    "messages": Target(
        "gateway, Messages to an Anthropic upstream, model-routed",
        "anthropic/claude-bench",
        ANTHROPIC,
        floor="messages-envoy",
    ),
    # Translated both ways; the floor is Envoy alone to the same upstream in its own API.
    "translated-a2o": Target(
        "gateway, translated: Messages client, OpenAI upstream", "openai/gpt-5.2", ANTHROPIC
    ),
    "translated-o2a": Target(
        "gateway, translated: OpenAI client, Anthropic upstream",
        "anthropic/claude-bench",
        floor="messages-envoy",
    ),
    "stream-envoy": Target(
        "Envoy alone, streamed: time to first token", "openai/gpt-stream", floor=None, stream=True
    ),
    "stream-messages-envoy": Target(
        "Envoy alone, Messages streamed: time to first token",
        "anthropic/claude-stream",
        ANTHROPIC,
        floor=None,
        stream=True,
    ),
    "stream": Target(
        "gateway, streamed: time to first token",
        "openai/gpt-stream",
        floor="stream-envoy",
        stream=True,
    ),
    "stream-messages": Target(
        "gateway, Messages streamed to an Anthropic upstream: time to first token",
        "anthropic/claude-stream",
        ANTHROPIC,
        floor="stream-messages-envoy",
        stream=True,
    ),
    "stream-a2o": Target(
        "gateway, translated stream: Messages client, OpenAI upstream: time to first token",
        "openai/gpt-stream",
        ANTHROPIC,
        floor="stream-envoy",
        stream=True,
    ),
    "stream-o2a": Target(
        "gateway, translated stream: OpenAI client, Anthropic upstream: time to first token",
        "anthropic/claude-stream",
        floor="stream-messages-envoy",
        stream=True,
    ),
}
BODY_SIZES = {"1 KB": 1000, "100 KB": 100_000}


@dataclass(frozen=True)
class Case:
    target: str  # a key of LABELS
    body: str  # a key of BODY_SIZES
    clients: int
    gateway: str = DEFAULT

    @property
    def spec(self) -> Target:
        return TARGETS[self.target]

    @property
    def floor(self) -> Case:
        return Case(self.spec.floor or self.target, self.body, self.clients)

    @property
    def label(self) -> str:
        label = self.spec.label
        if self.gateway != DEFAULT and self.spec.floor is not None:
            engine, workers, log_off = _gateway_kind(self.gateway)
            extra = [f"{engine} transport"] if engine != "h2" else []
            extra += [f"{workers} server workers"] if workers != "1" else []
            extra += ["access log off"] if log_off else []
            label += f" ({', '.join(extra)})"
        return label


@dataclass(frozen=True)
class Sample:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    failed: int
    server_us: float | None  # ext_proc server CPU per request (all workers)
    envoy_us: float  # the front Envoy's CPU per request
    head_p50_ms: float | None = None  # streamed: the answer's first byte (its status line)


class Runner:
    def __init__(self, stack: Stack, workdir: Path, seconds: float) -> None:
        self.stack, self.workdir, self.seconds = stack, workdir, seconds
        self.samples: dict[Case, list[Sample]] = defaultdict(list)

    def body(self, case: Case) -> Path:
        path = self.workdir / f"body-{case.target}-{BODY_SIZES[case.body]}.json"
        if not path.exists():
            spec, size = case.spec, BODY_SIZES[case.body]
            if spec.api == ANTHROPIC:
                body = anthropic_body(spec.model, size, spec.stream)
            else:
                body = chat_body(spec.model, size, spec.stream, case.target == "preference")
            path.write_bytes(body)
        return path

    def run(self, case: Case) -> Sample:
        spec = case.spec
        if spec.floor is None:
            base = self.stack.floor_stream_base if spec.stream else self.stack.floor_base
            servers: tuple[int, ...] = ()
            envoy = self.stack.floor_envoy
        else:
            gateway = self.stack.gateways[case.gateway]
            base, servers, envoy = gateway.base, gateway.servers, gateway.envoy
        url, headers = base + PATHS[spec.api], HEADERS[spec.api]
        before = procs.cpu_seconds(list(servers)), procs.cpu_seconds([envoy])
        head: float | None = None
        if spec.stream:
            first = loadgen.first_byte(
                url, self.body(case), case.clients, self.seconds, headers=headers
            )
            n, failed = first.requests + first.failed, first.failed
            rps, p50, p99 = n / self.seconds, first.token_p50_ms, first.token_p99_ms
            head = first.p50_ms
        else:
            vary = case.target == "preference"
            load = loadgen.wrk(url, self.body(case), case.clients, self.seconds, vary, headers)
            n, failed, rps, p50, p99 = (
                load.requests,
                load.failed,
                load.rps,
                load.p50_ms,
                load.p99_ms,
            )
        server_s = procs.cpu_seconds(list(servers)) - before[0]
        envoy_s = procs.cpu_seconds([envoy]) - before[1]
        sample = Sample(
            rps, p50, p99, n, failed,
            server_s / n * 1e6 if servers and n else None,
            envoy_s / n * 1e6 if n else 0.0, head,
        )  # fmt: skip
        self.samples[case].append(sample)
        return sample

    def rounds(self, cases: list[Case], rounds: int) -> None:
        for r in range(rounds):
            shift = r % len(cases)  # no configuration always follows the same one
            for case in cases[shift:] + cases[:shift]:
                s = self.run(case)
                print(
                    f"  round {r + 1}/{rounds}  {case.label[:60]:60} {case.body:>6} "
                    f"c={case.clients:<3} {s.rps:7.0f} req/s  p50 {s.p50_ms:6.2f}  "
                    f"p99 {s.p99_ms:6.2f} ms  failed {s.failed}",
                    flush=True,
                )

    def median(self, case: Case, attr: str) -> float | None:
        values = [getattr(s, attr) for s in self.samples[case]]
        present = [v for v in values if v is not None]
        return statistics.median(present) if present else None

    def failed(self, case: Case) -> int:
        return sum(s.failed for s in self.samples[case])

    def vs_floor(self, case: Case) -> tuple[float | None, float | None, float | None]:
        """Throughput ratio and added p50 and p99 against the floor of the same run."""
        if case == case.floor:
            return None, None, None
        rps, floor_rps = self.median(case, "rps"), self.median(case.floor, "rps")
        p50, floor_p50 = self.median(case, "p50_ms"), self.median(case.floor, "p50_ms")
        p99, floor_p99 = self.median(case, "p99_ms"), self.median(case.floor, "p99_ms")
        ratio = rps / floor_rps if rps is not None and floor_rps else None
        added50 = p50 - floor_p50 if p50 is not None and floor_p50 is not None else None
        added99 = p99 - floor_p99 if p99 is not None and floor_p99 is not None else None
        return ratio, added50, added99


# --- the report ---


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "—" if value is None else format(value, spec)


def table(runner: Runner, cases: list[Case]) -> list[str]:
    lines = [
        "| configuration | body | clients | req/s | p50 ms | p99 ms | req/s vs Envoy alone "
        "| added p50 ms | added p99 ms | server CPU µs/req | Envoy CPU µs/req | failed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        ratio, added50, added99 = runner.vs_floor(case)
        lines.append(
            f"| {case.label} | {case.body} | {case.clients} | "
            f"{_fmt(runner.median(case, 'rps'), '.0f')} | {_fmt(runner.median(case, 'p50_ms'))} | "
            f"{_fmt(runner.median(case, 'p99_ms'))} | {_fmt(ratio, '.0%')} | {_fmt(added50)} | "
            f"{_fmt(added99)} | {_fmt(runner.median(case, 'server_us'), '.0f')} | "
            f"{_fmt(runner.median(case, 'envoy_us'), '.0f')} | {runner.failed(case)} |"
        )
    return lines


def targets(runner: Runner, soak_result: dict[str, float] | None) -> list[str]:
    """Each target of the performance issue against what this run measured."""
    rows: list[tuple[str, float | None, str, float, str]] = []  # name, value, op, limit, unit

    for target in ("model", "alias"):
        ratio, _, _ = runner.vs_floor(Case(target, "1 KB", 16))
        rows.append((f"{target}-routed req/s at 16 clients vs Envoy alone", ratio, ">=", 0.5, "%"))
    # A chain that is never used costs no more than the path without one (issue 11): its
    # throughput against model-routed's, in the same run.
    plain = runner.median(Case("model", "1 KB", 16), "rps")
    chained = runner.median(Case("model-fallbacks", "1 KB", 16), "rps")
    if plain is not None and chained is not None and plain > 0:
        rows.append(
            ("fallback configured, unused: req/s vs model-routed", chained / plain, ">=", 0.95, "%")
        )
    # The access log (on by default) against the same gateway with it off (issue 13: the log
    # and the metrics together may cost 10%).
    logged = runner.median(Case("model", "1 KB", 16, NO_LOG), "rps")
    if plain is not None and logged is not None and logged > 0:
        rows.append(("access log on: req/s vs off, model-routed", plain / logged, ">=", 0.9, "%"))
    _, added50, added99 = runner.vs_floor(Case("model", "1 KB", 1))
    rows.append(("added latency at 1 client, p50", added50, "<=", 0.4, "ms"))
    rows.append(("added latency at 1 client, p99", added99, "<=", 1.5, "ms"))
    for clients in (16, 1):
        cpu = runner.median(Case("model", "1 KB", clients), "server_us")
        rows.append((f"server CPU per request, {clients} client(s)", cpu, "<=", 150, "µs"))
    _, added100, _ = runner.vs_floor(Case("model", "100 KB", 1))
    rows.append(("100 KB body, added p50 at 1 client", added100, "<=", 1.0, "ms"))
    for clients in (1, 16):
        _, ttfb, _ = runner.vs_floor(Case("stream", "1 KB", clients))
        rows.append(
            (f"streamed, added time to first token, {clients} client(s)", ttfb, "<=", 0.5, "ms")
        )
    for target, name in (
        ("stream-a2o", "Messages client, OpenAI upstream"),
        ("stream-o2a", "OpenAI client, Anthropic upstream"),
    ):
        _, ttft, _ = runner.vs_floor(Case(target, "1 KB", 1))
        rows.append(
            (f"translated streaming ({name}), added time to first token, 1 client", ttft,
             "<=", 1.0, "ms")
        )  # fmt: skip
    if soak_result is not None:
        rows.append(("server RSS growth over the soak", soak_result["growth_mb"], "<=", 5, "MB"))
        rows.append(("failed requests in the soak", soak_result["failed"], "<=", 0, ""))
    rows.append(
        (
            "failed requests in the tables",
            sum(runner.failed(c) for c in runner.samples),
            "<=",
            0,
            "",
        )
    )
    lines = ["| target | limit | measured | met |", "|---|---|---|---|"]
    for name, value, op, limit, unit in rows:
        if unit == "%":
            shown, limit_shown = _fmt(value, ".0%"), f"{op} {limit:.0%}"
            value = None if value is None else round(value, 2)
        else:
            spec = ".2f" if unit in ("ms", "MB") else ".0f"
            shown = f"{_fmt(value, spec)} {unit}".strip()
            limit_shown = f"{op} {limit:g} {unit}".strip()
            value = None if value is None else round(value, 2)  # as shown: no 0.5000001 misses
        met = (
            "—"
            if value is None
            else ("yes" if (value >= limit if op == ">=" else value <= limit) else "**no**")
        )
        lines.append(f"| {name} | {limit_shown} | {shown} | {met} |")
    return lines


def streamed(runner: Runner, cases: list[Case]) -> list[str]:
    """The streamed rows' first byte (the status line) beside their first token (the first
    body chunk): a translated stream's headers leave before its first chunk is translated."""
    lines = [
        "| configuration | clients | first byte p50 ms | first token p50 ms |",
        "|---|---|---|---|",
    ]
    for case in cases:
        if case.spec.stream:
            lines.append(
                f"| {case.label} | {case.clients} | {_fmt(runner.median(case, 'head_p50_ms'))} "
                f"| {_fmt(runner.median(case, 'p50_ms'))} |"
            )
    return lines


def log_cost(runner: Runner) -> list[str]:
    """The access log on against off, model-routed at 16 clients: the two run one after the
    other in each round, so each round's ratio compares like with like on a busy machine."""
    on, off = (
        runner.samples[Case("model", "1 KB", 16)],
        runner.samples[Case("model", "1 KB", 16, NO_LOG)],
    )
    ratios = [a.rps / b.rps for a, b in zip(on, off, strict=False) if b.rps]
    envoy = [a.envoy_us - b.envoy_us for a, b in zip(on, off, strict=False)]
    server = [
        a.server_us - b.server_us
        for a, b in zip(on, off, strict=False)
        if a.server_us is not None and b.server_us is not None
    ]
    if not ratios:
        return []
    return [
        f"Model-routed, 1 KB, 16 clients, {len(ratios)} rounds, the log on and off back to back "
        f"in each: req/s on/off, median of the rounds {statistics.median(ratios):.1%} (each "
        f"round: {', '.join(f'{r:.0%}' for r in ratios)}); the log's added CPU per request, "
        f"median of the rounds: Envoy {statistics.median(envoy):+.1f} µs, server "
        f"{statistics.median(server) if server else 0:+.1f} µs.",
    ]


def idle_gaps(stack: Stack, workdir: Path, rounds: int) -> list[str]:
    """The added latency when requests come apart: each process on the path sleeps between
    them, and this machine takes a while to wake one (Envoy alone slows down too)."""
    body = workdir / "idle.json"
    body.write_bytes(chat_body("openai/gpt-5.2", 1000))
    gateway = stack.gateways[DEFAULT].url
    lines = [
        "| idle time between requests (1 client) | Envoy alone, first byte p50 ms | "
        "gateway, first byte p50 ms | added ms |",
        "|---|---|---|---|",
    ]
    for idle in (0.0, 0.005, 0.02):
        floor, through = [], []
        for _ in range(rounds):
            floor.append(loadgen.first_byte(stack.floor, body, 1, 3, idle).p50_ms)
            through.append(loadgen.first_byte(gateway, body, 1, 3, idle).p50_ms)
        f, g = statistics.median(floor), statistics.median(through)
        lines.append(f"| {idle * 1000:.0f} ms | {f:.2f} | {g:.2f} | {g - f:+.2f} |")
    return lines


def soak(stack: Stack, workdir: Path, seconds: float) -> tuple[dict[str, float], list[str]]:
    """Full load (model-routed, 16 clients) for ``seconds``; server RSS sampled each second."""
    gateway = stack.gateways[DEFAULT]
    body = workdir / "soak.json"
    body.write_bytes(chat_body("openai/gpt-5.2", 1000))
    rss: list[int] = []
    result: list[loadgen.Load] = []
    load = threading.Thread(
        target=lambda: result.append(loadgen.wrk(gateway.url, body, 16, seconds)), daemon=True
    )
    load.start()
    while load.is_alive():
        rss.append(procs.memory_kb(list(gateway.servers), "VmRSS"))
        load.join(1.0)
    done = result[0]
    # Growth: the last third against the middle third (the first is warm-up).
    third = max(1, len(rss) // 3)
    middle = statistics.median(rss[third : 2 * third] or rss)
    end = statistics.median(rss[-third:])
    growth = (end - middle) / 1024
    text = [
        f"Model-routed, 1 KB, 16 clients for {seconds:.0f} s: {done.requests} requests "
        f"({done.rps:.0f} req/s), {done.failed} failed. Server RSS sampled every second "
        f"({len(rss)} samples): first {rss[0] / 1024:.1f} MB, median of the middle third "
        f"{middle / 1024:.1f} MB, of the last third {end / 1024:.1f} MB ({growth:+.1f} MB), "
        f"highest {max(rss) / 1024:.1f} MB."
    ]
    return {"growth_mb": growth, "failed": done.failed}, text


def profile(stack: Stack, workdir: Path, seconds: float, native: bool) -> list[str]:
    """py-spy samples the server while wrk loads it (model-routed, 1 KB, 16 clients): each
    function's share of the on-CPU samples and its cost per request."""
    spy = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or shutil.which("py-spy")
    if spy is None:
        raise SystemExit("bench: py-spy is not installed: .venv/bin/pip install py-spy")
    gateway = stack.gateways[DEFAULT]
    body = workdir / "profile.json"
    body.write_bytes(chat_body("openai/gpt-5.2", 1000))
    out = workdir / "profile.txt"
    server = gateway.servers[0]
    argv = [spy, "record", "--format", "raw", "--rate", "1000", "--output", str(out),
            "--duration", f"{seconds:g}", "--nonblocking", "--pid", str(server)]  # fmt: skip
    if native:
        argv.append("--native")
    before = procs.cpu_seconds([gateway.servers[0]])
    with subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as spying:
        time.sleep(1)  # py-spy attaches
        load = loadgen.wrk(gateway.url, body, 16, max(1.0, seconds - 2))
        spying.wait()
    cpu_us = (procs.cpu_seconds([gateway.servers[0]]) - before) / max(1, load.requests) * 1e6
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        frames = [f for f in stack_text.split(";") if f]
        count = int(count_text)
        total += count
        if frames:
            own[_frame_name(frames[-1])] += count
        for name in {_frame_name(f) for f in frames}:
            inclusive[name] += count
    lines = [
        f"py-spy, {seconds:g} s of model-routed load (1 KB, 16 clients): {load.rps:.0f} req/s, "
        f"the server spent {cpu_us:.0f} µs of CPU per request. µs/req shares that CPU time out "
        "by each function's share of the samples (py-spy samples only threads on a CPU).",
        "",
        "| function | self % | self µs/req | with callees % |",
        "|---|---|---|---|",
    ]
    for name, count in own.most_common(30):
        lines.append(
            f"| `{name}` | {count / total:.1%} | {cpu_us * count / total:.1f} | "
            f"{inclusive[name] / total:.1%} |"
        )
    return lines


def _frame_name(frame: str) -> str:
    # py-spy raw frames read "function (path/to/file.py:123)".
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rpartition(":")[0]
    return f"{name} ({Path(path).name})" if path else name


def main_cases() -> list[Case]:
    cases = []
    for clients in (1, 16):
        for body in BODY_SIZES:
            cases += [Case(t, body, clients) for t in ("envoy", "model", "alias")]
        cases.append(Case("model-fallbacks", "1 KB", clients))
        cases.append(Case("model", "1 KB", clients, "grpcio x1"))
        if clients == 16:
            cases.append(Case("model", "1 KB", clients, NO_LOG))
        cases.append(Case("preference", "1 KB", clients))
        cases.append(Case("preference-repeat", "1 KB", clients))
        # Anthropic's Messages API, and each API translated to the other.
        cases += [
            Case(t, "1 KB", clients)
            for t in ("messages-envoy", "messages", "translated-a2o", "translated-o2a")
        ]
        streams = ("stream-envoy", "stream", "stream-messages-envoy", "stream-messages")
        cases += [Case(t, "1 KB", clients) for t in (*streams, "stream-a2o", "stream-o2a")]
    return cases


def sweep_cases() -> list[Case]:
    return [
        Case(target, "1 KB", clients, gateway)
        for clients in (1, 2, 4, 8, 16, 32, 64)
        for target, gateway in (
            ("envoy", DEFAULT),
            ("model", DEFAULT),
            ("model", "h2 x2"),
            # The slower transport saturates its one process: there a second worker pays.
            ("model", "grpcio x1"),
            ("model", "grpcio x2"),
        )
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each run")
    parser.add_argument("--sweep", action="store_true", help="also sweep 1..64 clients")
    parser.add_argument("--soak", type=float, default=60.0, help="seconds of full load (0: none)")
    parser.add_argument("--quick", action="store_true", help="only Envoy alone and model-routed")
    parser.add_argument(
        "--log-cost",
        action="store_true",
        help="only the access log's cost: model-routed at 16 clients, the log on and off",
    )
    parser.add_argument(
        "--only",
        help="only these targets (comma-separated; their floors run too): " + ", ".join(TARGETS),
    )
    parser.add_argument(
        "--router-threads",
        type=int,
        default=0,
        help="the gateways' routing.threads (onnxruntime threads per decision; 0: the default)",
    )
    parser.add_argument("--profile", type=float, default=0, help="only profile, this many s")
    parser.add_argument("--native", action="store_true", help="profile C frames too")
    parser.add_argument("--write", type=Path, help="write the report into this file's section")
    args = parser.parse_args()
    loadgen.require("wrk")

    cases = main_cases()
    if args.quick:
        cases = [c for c in cases if c.target in ("envoy", "model") and c.body == "1 KB"]
        cases = [c for c in cases if c.gateway in (DEFAULT, NO_LOG)]
    if args.log_cost:
        cases = [Case("model", "1 KB", 16), Case("model", "1 KB", 16, NO_LOG)]
    if args.only:
        wanted = set(args.only.split(","))
        if wanted - set(TARGETS):
            parser.error(f"--only: unknown target(s) {', '.join(sorted(wanted - set(TARGETS)))}")
        keep = {c for c in cases if c.target in wanted}
        cases = [c for c in cases if c in keep or c in {k.floor for k in keep}]
    sweep = sweep_cases() if args.sweep else []
    gateways = tuple(sorted({DEFAULT, *(c.gateway for c in cases + sweep)}))
    if args.profile:
        gateways = (DEFAULT,)
    lines = [f"## Load: the ext_proc hop against Envoy alone ({date.today()})", ""]
    lines += [f"Machine: {machine()}. Written by `make bench` (bench/load_bench.py).", ""]
    with tempfile.TemporaryDirectory(prefix="plano-bench-") as tmp:
        workdir = Path(tmp)
        routing = f"routing:\n  threads: {args.router_threads}\n" if args.router_threads else ""
        with stack(workdir, gateways, routing) as running:
            if args.profile:
                print("\n".join(profile(running, workdir, args.profile, args.native)))
                return 0
            runner = Runner(running, workdir, args.seconds)
            print(f"bench: {len(cases)} configurations x {args.rounds} rounds x {args.seconds:g} s")
            runner.rounds(cases, args.rounds)
            peak = procs.memory_kb(list(running.gateways[DEFAULT].servers), "VmHWM")
            gaps = [] if args.log_cost else idle_gaps(running, workdir, args.rounds)
            if sweep:
                print(f"bench: sweep, {len(sweep)} configurations x {args.rounds} rounds")
                runner.rounds(sweep, args.rounds)
            soak_result, soak_text = soak(running, workdir, args.soak) if args.soak else (None, [])
    lines += [
        f"Medians of {args.rounds} interleaved rounds of {args.seconds:g} s each. Every Envoy "
        "(floor, gateway, fake provider) has one worker thread; wrk (one thread) and the "
        "first-byte client run on the same two cores. Streamed rows give the time to the first "
        "token, the first chunk of the body (bench/loadgen.py's client), the others "
        "the whole answer (wrk). Each gateway row is against its own floor: Envoy alone "
        "sending the same client body to the upstream the gateway uses (for a translated "
        "row, in the upstream's API: bench/load_bench.py TARGETS).",
        "",
        "### Targets",
        "",
        *targets(runner, soak_result),
        "",
        "### All configurations",
        "",
        *table(runner, cases),
        "",
        f"Server peak RSS (VmHWM) of the default gateway, with the embedded router loaded: "
        f"{peak / 1024:.0f} MB.",
        "",
        "### Streamed: first byte and first token",
        "",
        *streamed(runner, cases),
        "",
        "### Idle time between requests",
        "",
        "The streamed rows above (and real LLM traffic) leave each process idle between "
        "requests; this machine is slow to wake an idle one, Envoy alone included:",
        "",
        *gaps,
        "",
    ]
    if sweep:
        lines += [
            "### Sweep: clients, and one or two server workers",
            "",
            *table(runner, sweep),
            "",
        ]
    if soak_text:
        lines += ["### Soak", "", *soak_text, ""]
    if any(c.gateway == NO_LOG for c in cases) and not args.log_cost:
        lines += ["### The access log's cost", "", *log_cost(runner), ""]
    if args.log_cost:  # a section of its own: the load section stays the full run's
        lines = [
            f"## The access log's cost ({date.today()})",
            "",
            f"Machine: {machine()}. Written by `python bench/load_bench.py --log-cost` "
            f"({args.rounds} rounds of {args.seconds:g} s).",
            "",
            *table(runner, cases),
            "",
            *log_cost(runner),
        ]
    report = "\n".join(lines)
    publish(report, args.write, "access-log" if args.log_cost else "load")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the sidecar pod's two gateway containers use: the memory and CPU of the ext_proc server
(with its helper for big bodies) and of Envoy, idle and under load, to size
deploy/kubernetes/sidecar's resources.

    python bench/pod_resources.py [--seconds 15] [--write bench/RESULTS.md]

The config is the sidecar's own (its ConfigMap), with the providers pointed at a fast fake
provider (bench/upstreams.py: an Envoy answering at once) and the listener on a free port.
The gateway runs as the pod runs it: `plano-extproc serve` and `plano-extproc envoy` (Envoy
with 2 worker threads, as the manifest says), each a process tree of its own. wrk sends each
phase's load; every 0.2 s the resident memory (VmRSS) of each container's processes is summed
and the highest sum kept; CPU is each tree's CPU seconds over the phase's wall time. The
machine has two cores shared by wrk, Envoy, the server and the fake provider: the CPU figures
are what the gateway used while saturated here, not what it could use.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import loadgen  # noqa: E402
import procs  # noqa: E402
import upstreams  # noqa: E402
from load_bench import chat_body  # noqa: E402
from results import machine, publish  # noqa: E402

from plano_extproc.envoy_config import envoy_binary  # noqa: E402

SIDECAR = ROOT / "deploy/kubernetes/sidecar"
ENVOY_WORKERS = 2  # the sidecar manifest's --concurrency
PLANO = str(Path(sys.executable).parent / "plano-extproc")


@dataclass(frozen=True)
class Phase:
    label: str
    model: str | None  # None: the router decides
    size: int  # body bytes
    clients: int


PHASES = (
    Phase("model-routed, 1 KB, 16 clients", "openai/gpt-5.2", 1_000, 16),
    Phase("preference-routed (the router decides each), 1 KB, 16 clients", None, 1_000, 16),
    Phase("model-routed, 1 KB, 256 clients", "openai/gpt-5.2", 1_000, 256),
    Phase("model-routed, 1 MB bodies, 4 clients", "openai/gpt-5.2", 1_000_000, 4),
    Phase("model-routed, 15 MB bodies, 2 clients", "openai/gpt-5.2", 15_000_000, 2),
)


def sidecar_config(provider_port: int, listen_port: int) -> str:
    """The sidecar ConfigMap's plano.yaml, every provider at the fake and the listener moved."""
    configmap = yaml.safe_load((SIDECAR / "configmap.yaml").read_text())
    config = yaml.safe_load(configmap["data"]["plano.yaml"])
    for listener in config["listeners"]:
        listener["port"] = listen_port
    for provider in config["model_providers"]:
        provider["base_url"] = f"http://127.0.0.1:{provider_port}/v1"
    return yaml.safe_dump(config, sort_keys=False)


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the server's body-reading helpers, Envoy under its
    wrapper)."""
    found = [pid]
    for child in procs.children(pid):
        found += tree(child)
    return found


@dataclass
class Peak:
    """The highest summed VmRSS of each process tree while sampling, in KiB."""

    roots: dict[str, int]
    highest: dict[str, int]
    stop: threading.Event

    def sample(self) -> None:
        while not self.stop.wait(0.2):
            for name, root in self.roots.items():
                try:
                    kb = procs.memory_kb(tree(root), "VmRSS")
                except OSError:  # a helper that ended between listing and reading
                    continue
                self.highest[name] = max(self.highest.get(name, 0), kb)


@contextmanager
def sampling(roots: dict[str, int]) -> Iterator[Peak]:
    peak = Peak(roots, {}, threading.Event())
    thread = threading.Thread(target=peak.sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        peak.stop.set()
        thread.join()


@contextmanager
def pod(workdir: Path) -> Iterator[tuple[str, dict[str, int]]]:
    """The fake provider, then the two containers' commands; yields the listener's base URL
    and each container's root PID."""
    with ExitStack() as stop:

        def start(name: str, argv: list[str], ready: Callable[[], bool]) -> int:
            return procs.start(stop, workdir, name, argv, ready)

        provider, admin = procs.free_port(), procs.free_port()
        bootstrap = workdir / "provider.yaml"
        bootstrap.write_text(upstreams.fake_provider_bootstrap(provider, admin, 1 << 25))
        start(
            "provider",
            [envoy_binary(), "-c", str(bootstrap), "--concurrency", "1", "-l", "warn"],
            lambda: procs.http_ok(f"http://127.0.0.1:{admin}/ready"),
        )
        listen, extproc, health, ready = (procs.free_port() for _ in range(4))
        config = workdir / "plano.yaml"
        config.write_text(sidecar_config(provider, listen))
        serve = [PLANO, "serve", str(config), "--listen", f"127.0.0.1:{extproc}",
                 "--health-listen", f"127.0.0.1:{health}"]  # fmt: skip
        # The Secret's part: stand-in keys (the fake provider takes any).
        os.environ.update(OPENAI_API_KEY="sk-bench-openai", ANTHROPIC_API_KEY="sk-bench-anthropic")
        server = start("ext_proc", serve, lambda: procs.port_open(health))
        envoy = [PLANO, "envoy", str(config), "--extproc-port", str(extproc),
                 "--admin-socket", str(workdir / "admin.sock"), "--ready-port", str(ready),
                 "--concurrency", str(ENVOY_WORKERS)]  # fmt: skip
        base = f"http://127.0.0.1:{listen}"
        body = chat_body("openai/gpt-5.2", 1000)
        gateway = start("envoy", envoy, lambda: procs.http_ok(f"{base}/v1/chat/completions", body))
        yield base, {"ext_proc container": server, "envoy container": gateway}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each phase")
    parser.add_argument("--write", type=Path, help="write the report into this file's section")
    args = parser.parse_args()
    loadgen.require("wrk")
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="plano-pod-") as tmp, pod(Path(tmp)) as (base, roots):
        time.sleep(2)
        with sampling(roots) as idle:
            time.sleep(3)
        names = list(roots)
        rows.append(
            "| idle, after start | — | "
            + " | ".join(f"{idle.highest[n] / 1024:.0f} | —" for n in names)
            + " |"
        )
        for phase in PHASES:
            path = Path(tmp) / f"body-{phase.size}-{phase.model is None}.json"
            path.write_bytes(chat_body(phase.model, phase.size, vary=phase.model is None))
            before = {n: procs.cpu_seconds(tree(p)) for n, p in roots.items()}
            started = time.monotonic()
            with sampling(roots) as peak:
                load = loadgen.wrk(
                    f"{base}/v1/chat/completions",
                    path,
                    phase.clients,
                    args.seconds,
                    vary=phase.model is None,
                )
            wall = time.monotonic() - started
            cores = {n: (procs.cpu_seconds(tree(p)) - before[n]) / wall for n, p in roots.items()}
            cells = " | ".join(f"{peak.highest[n] / 1024:.0f} | {cores[n]:.2f}" for n in names)
            rows.append(f"| {phase.label} | {load.rps:.0f} ({load.failed} failed) | {cells} |")
            print(rows[-1], flush=True)
        hwm = {n: procs.memory_kb(tree(p), "VmHWM") / 1024 for n, p in roots.items()}
    lines = [
        f"## The sidecar pod's containers under load ({date.today()})",
        "",
        f"Machine: {machine()}. Written by bench/pod_resources.py (--seconds {args.seconds:g}); "
        'deploy/kubernetes/sidecar\'s resources are sized from it (README, "Deploying"). '
        "Memory: the highest sum of VmRSS over each container's processes, sampled every "
        "0.2 s (MiB); CPU: cores used over the phase, while wrk, the fake provider and both "
        "containers shared the machine's two cores.",
        "",
        "| phase | req/s | ext_proc MiB | ext_proc cores | Envoy MiB | Envoy cores |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        "Peak RSS (VmHWM, summed over each tree at the end): "
        + ", ".join(f"{n} {mb:.0f} MiB" for n, mb in hwm.items())
        + ".",
    ]
    report = "\n".join(lines)
    publish(report, args.write, "pod")
    return 0


if __name__ == "__main__":
    sys.exit(main())

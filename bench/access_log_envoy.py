"""What the access log costs Envoy itself, without the rest of the gateway around it.

    python bench/access_log_envoy.py [--rounds 12] [--seconds 3]

Two Envoys (one worker thread each) answer the bench's chat body with a fixed completion
(bench/upstreams.py's fake provider, direct_response), one with the gateway's access log
(envoy_config/access_log.py: the same fields, to a file), one without; wrk loads each in turn
at 16 connections, the order swapped each round. Envoy's CPU per request comes from /proc;
each round's difference is one sample, the median is the figure. On a gateway the log's
metadata fields read a decision; here they are absent (null), which Envoy formats as cheaply.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import yaml
from betterproto2 import Casing

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import loadgen  # noqa: E402
import procs  # noqa: E402
import upstreams  # noqa: E402
from load_bench import chat_body  # noqa: E402

from plano_extproc.envoy_config import envoy_binary  # noqa: E402
from plano_extproc.envoy_config.access_log import json_log  # noqa: E402
from plano_extproc.envoy_runner import ACCESS_LOG_FLUSH_MS  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    loadgen.require("wrk")
    with tempfile.TemporaryDirectory(prefix="plano-bench-") as tmp, ExitStack() as stop:
        work = Path(tmp)
        pids, urls = {}, {}
        for name in ("on", "off"):
            port, admin = procs.free_port(), procs.free_port()
            boot: Any = yaml.safe_load(upstreams.fake_provider_bootstrap(port, admin, 1 << 20))
            if name == "on":
                listener = boot["static_resources"]["listeners"][0]
                manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
                logger = json_log(str(work / "access.log"))
                manager["access_log"] = [logger.to_dict(casing=Casing.SNAKE)]
            path = work / f"{name}.yaml"
            path.write_text(yaml.safe_dump(boot))
            argv = [envoy_binary(), "-c", str(path), "--concurrency", "1",
                    "--disable-hot-restart", "-l", "warn",
                    "--file-flush-interval-msec", str(ACCESS_LOG_FLUSH_MS)]  # fmt: skip
            log = work / f"{name}.log"
            child = stop.enter_context(procs.process(argv, log))
            ready = functools.partial(procs.http_ok, f"http://127.0.0.1:{admin}/ready")
            procs.wait_for(ready, f"envoy ({name})", child, log)
            pids[name], urls[name] = child.pid, f"http://127.0.0.1:{port}/v1/chat/completions"
        body = work / "body.json"
        body.write_bytes(chat_body("openai/gpt-5.2", 1000))
        cpu: dict[str, list[float]] = {"on": [], "off": []}
        rps: dict[str, list[float]] = {"on": [], "off": []}
        for r in range(args.rounds):
            for name in ("on", "off") if r % 2 == 0 else ("off", "on"):
                before = procs.cpu_seconds([pids[name]])
                load = loadgen.wrk(urls[name], body, 16, args.seconds)
                spent = procs.cpu_seconds([pids[name]]) - before
                cpu[name].append(spent / max(1, load.requests) * 1e6)
                rps[name].append(load.rps)
        lines = sum(1 for _ in (work / "access.log").open())
    added = [on - off for on, off in zip(cpu["on"], cpu["off"], strict=True)]
    print(
        f"Envoy alone, {args.rounds} rounds of {args.seconds:g} s at 16 connections: Envoy CPU "
        f"per request {statistics.median(cpu['on']):.1f} µs with the access log, "
        f"{statistics.median(cpu['off']):.1f} µs without; the log's share, median of the "
        f"rounds' differences, {statistics.median(added):+.1f} µs "
        f"(rounds: {', '.join(f'{a:+.1f}' for a in added)}); req/s "
        f"{statistics.median(rps['on']):.0f} with, {statistics.median(rps['off']):.0f} "
        f"without; {lines} lines written."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

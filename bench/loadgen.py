"""The load generators: ``wrk`` for throughput and latency, ``hey`` for time to first byte.

Both are Debian packages; ``require`` says how to install the one that is missing.
"""

from __future__ import annotations

import csv
import io
import shutil
import statistics
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = "install it with: apt-get update && apt-get install -y wrk hey"

# wrk prints this line from done(): every figure the bench reads, in microseconds.
_WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench-client-key"
local f = assert(io.open("{body}", "rb"))
wrk.body = f:read("*a")
f:close()
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %d %d %d %d %d %d %d %d %d\\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean, latency.max))
end
"""


@dataclass(frozen=True)
class Load:
    requests: int
    seconds: float
    failed: int  # non-2xx answers, socket errors and timeouts
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise SystemExit(f"bench: `{tool}` is not installed; {INSTALL_HINT}")
    return path


def wrk(url: str, body: Path, connections: int, seconds: float) -> Load:
    """POST ``body`` to ``url`` over ``connections`` keep-alive connections."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(_WRK_SCRIPT.replace("{body}", str(body)))
        script.flush()
        # One thread: on two cores a second wrk thread only takes CPU from what is measured.
        cmd = [require("wrk"), "-t1", f"-c{connections}", f"-d{seconds:g}s", "-s", script.name]
        out = subprocess.run(
            [*cmd, "--timeout", "10s", url], capture_output=True, text=True, check=True
        ).stdout
    line = next(x for x in out.splitlines() if x.startswith("BENCH "))
    n, duration, status, sock, timeout, p50, p99, _mean, _max = (
        int(float(v)) for v in line.split()[1:]
    )
    return Load(n, duration / 1e6, status + sock + timeout, p50 / 1000, p99 / 1000)


@dataclass(frozen=True)
class FirstByte:
    requests: int
    failed: int
    p50_ms: float
    p99_ms: float
    total_p50_ms: float  # the whole streamed answer, for contrast


def hey_first_byte(url: str, body: Path, connections: int, seconds: float) -> FirstByte:
    """Time to first byte of each answer, from hey's per-request CSV."""
    cmd = [
        require("hey"),
        "-z",
        f"{seconds:g}s",
        "-c",
        str(connections),
        "-m",
        "POST",
        "-T",
        "application/json",
        "-H",
        "Authorization: Bearer bench-client-key",
        "-D",
        str(body),
        "-o",
        "csv",
        url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    first, total, failed = [], [], 0
    for row in csv.DictReader(io.StringIO(out)):
        if not row["status-code"].startswith("2"):
            failed += 1
            continue
        whole = float(row["response-time"])
        # response-time less the time spent reading after the first byte arrived.
        first.append(whole - float(row["Response-read"]))
        total.append(whole)
    if not first:
        return FirstByte(0, failed, 0.0, 0.0, 0.0)
    return FirstByte(
        len(first), failed, _pct(first, 50) * 1000, _pct(first, 99) * 1000, _pct(total, 50) * 1000
    )


def _pct(values: list[float], p: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1]

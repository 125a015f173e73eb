"""The load generators: ``wrk`` for throughput and latency (a Debian package; ``require``
says how to install it), and a small client of our own for the time to first byte."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

INSTALL_HINT = "install it with: apt-get update && apt-get install -y wrk"

# wrk prints this line from done(): every figure the bench reads, in microseconds.
# Every occurrence of this in a body is replaced with a number that grows with each request
# (``wrk(vary=True)``): the router's decision cache must not answer a benchmark of the router.
VARY_MARKER = "@N@"
# What an OpenAI client sends with its body; an Anthropic client's are ANTHROPIC_HEADERS.
OPENAI_HEADERS = {"Authorization": "Bearer bench-client-key"}
ANTHROPIC_HEADERS = {"x-api-key": "bench-client-key", "anthropic-version": "2023-06-01"}
_WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
{headers}
local f = assert(io.open("{body}", "rb"))
wrk.body = f:read("*a")
f:close()
if {vary} then
  local template, counter = wrk.body, 0
  request = function()
    counter = counter + 1
    return wrk.format(nil, nil, nil, (string.gsub(template, "{marker}", "{run}-" .. counter)))
  end
end
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


def wrk(
    url: str,
    body: Path,
    connections: int,
    seconds: float,
    vary: bool = False,
    headers: Mapping[str, str] = OPENAI_HEADERS,
) -> Load:
    """POST ``body`` to ``url`` with ``headers`` (and a JSON content-type) over
    ``connections`` keep-alive connections; with ``vary``, each request's ``VARY_MARKER``
    becomes a new number."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        lua = _WRK_SCRIPT.replace("{body}", str(body)).replace("{marker}", VARY_MARKER)
        # Numbers unique to this run: wrk counts from 1 again in every run, and a later run
        # of the same server would otherwise repeat an earlier run's conversations (answered
        # from the router's decision cache, not decided).
        lua = lua.replace("{run}", secrets.token_hex(6))
        lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
        lua = lua.replace("{headers}", lines)
        script.write(lua.replace("{vary}", "true" if vary else "false"))
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
    p50_ms: float  # the first byte of the answer: its status line
    p99_ms: float
    total_p50_ms: float  # the whole streamed answer, for contrast
    # The first chunk of the body, read whole: in a stream, the first token (a translated
    # stream's headers leave before its first chunk is translated); else the whole body.
    token_p50_ms: float = 0.0
    token_p99_ms: float = 0.0


def first_byte(
    url: str,
    body: Path,
    connections: int,
    seconds: float,
    idle: float = 0.0,
    headers: Mapping[str, str] = OPENAI_HEADERS,
) -> FirstByte:
    """Time to the first byte, and to the first body chunk, of each answer over
    ``connections`` keep-alive connections, each waiting ``idle`` seconds after an answer
    before its next request.

    hey reports it too, but its CSV rounds to 0.1 ms, too coarse against a 0.5 ms target;
    this client times each request with the monotonic clock, in nanoseconds."""
    return asyncio.run(_first_byte(url, body.read_bytes(), connections, seconds, idle, headers))


async def _first_byte(
    url: str,
    body: bytes,
    connections: int,
    seconds: float,
    idle: float,
    headers: Mapping[str, str],
) -> FirstByte:
    parts = urlsplit(url)
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Type: application/json\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    first: list[float] = []
    token: list[float] = []
    total: list[float] = []
    failed = 0
    deadline = time.monotonic() + seconds

    async def client() -> None:
        nonlocal failed
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while time.monotonic() < deadline:
                start = time.perf_counter_ns()
                writer.write(request)
                await reader.readexactly(1)
                arrived = time.perf_counter_ns()
                ok, chunk = await _read_rest(reader)
                done = time.perf_counter_ns()
                if ok:
                    first.append((arrived - start) / 1e6)
                    token.append((chunk - start) / 1e6)
                    total.append((done - start) / 1e6)
                else:
                    failed += 1
                if idle:
                    await asyncio.sleep(idle)
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(connections)))
    if not first:
        return FirstByte(0, failed, 0.0, 0.0, 0.0)
    return FirstByte(
        len(first),
        failed,
        _pct(first, 50),
        _pct(first, 99),
        _pct(total, 50),
        _pct(token, 50),
        _pct(token, 99),
    )


async def _read_rest(reader: asyncio.StreamReader) -> tuple[bool, int]:
    """The rest of one HTTP/1.1 answer (its first byte is read): True for a 2xx, and when
    (perf_counter_ns) its first body chunk was read whole."""
    head = await reader.readuntil(b"\r\n\r\n")
    ok = head[7:9] == b" 2"  # "HTTP/1.1 200" less the "H" read already
    headers = head.lower()
    if b"transfer-encoding: chunked" in headers:
        first_chunk = 0
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if not first_chunk:
                first_chunk = time.perf_counter_ns()
            if size == 0:
                return ok, first_chunk
    length = (
        headers.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0]
        if b"content-length:" in headers
        else b"0"
    )
    await reader.readexactly(int(length))
    return ok, time.perf_counter_ns()


def _pct(values: list[float], p: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1]

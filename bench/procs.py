"""Processes the benchmarks start, and what /proc says about them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Protocol

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fakes import free_port, free_ports

__all__ = ["free_port", "free_ports"]  # the tests' own helpers, shared with the bench


@contextmanager
def process(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child in its own session, stopped by its PID on exit (SIGTERM, then SIGKILL)."""
    with log.open("wb") as out:
        child = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield child
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()


class Child(Protocol):
    """What wait_for watches: a process, or a stand-in for a check that has none."""

    returncode: int | None

    def poll(self) -> int | None: ...


def wait_for(check: Callable[[], bool], what: str, child: Child, log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise SystemExit(f"bench: {what} exited ({child.returncode}); see {log}")
        if check():
            return
        time.sleep(0.1)
    raise SystemExit(f"bench: {what} did not start in 90 s; see {log}")


def start(
    stop: ExitStack, workdir: Path, name: str, argv: list[str], ready: Callable[[], bool]
) -> int:
    """Starts ``argv`` (logging to ``workdir/name.log``), stopped when ``stop`` closes; its PID
    once ``ready()``."""
    log = workdir / f"{name}.log"
    child = stop.enter_context(process(argv, log))
    wait_for(ready, name, child, log)
    return child.pid


def http_ok(url: str, data: bytes | None = None) -> bool:
    request = urllib.request.Request(url, data, {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of ``pids`` so far (all their threads)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def memory_kb(pids: list[int], field: str) -> int:
    """The sum of a /proc/PID/status field (VmRSS, VmHWM) over ``pids``, in KiB."""
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                total += int(line.split()[1])
    return total

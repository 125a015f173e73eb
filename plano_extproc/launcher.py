"""``plano-extproc up``: the ext_proc server and Envoy as two child processes, run together.

Both start in the foreground and stop together: on SIGINT/SIGTERM both are stopped and we
exit 0; if either dies on its own, the other is stopped and we exit 1.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .config import Config
from .envoy_config import EnvoyOptions, envoy_binary, render_yaml

if TYPE_CHECKING:
    from .server import Engine

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Children must not outlive a launcher that was killed outright (SIGKILL, OOM).
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _spawn(argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, preexec_fn=_die_with_parent)


def _wait_until(
    check: Callable[[], bool], children: list[subprocess.Popen[bytes]], timeout: float
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(c.poll() is not None for c in children):
            return False
        if check():
            return True
        time.sleep(0.05)
    return False


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _envoy_ready(admin_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/ready", timeout=0.5) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _stop(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + 5
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def run_gateway(
    config: Config, options: EnvoyOptions, concurrency: int | None = None, engine: Engine = "h2"
) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="plano-extproc-"))
    bootstrap = workdir / "envoy.yaml"
    bootstrap.write_text(render_yaml(config, options))
    stop_requested = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    children: list[subprocess.Popen[bytes]] = []
    try:
        # One server process per ext_proc endpoint: Envoy spreads streams over them.
        for host, port in options.extproc:
            server = [sys.executable, "-m", "plano_extproc", "serve", config.source]
            server += ["--listen", f"{host}:{port}", "--engine", engine, "--quiet-warnings"]
            children.append(_spawn(server))
        servers = list(children)
        for host, port in options.extproc:
            if not _wait_until(functools.partial(_port_open, host, port), children, 30):
                print(
                    f"plano-extproc: the ext_proc server did not start on {host}:{port}",
                    file=sys.stderr,
                )
                return 1
        envoy = [
            envoy_binary(),
            "-c",
            str(bootstrap),
            "--log-level",
            "warn",
            "--disable-hot-restart",
        ]
        if concurrency:
            envoy += ["--concurrency", str(concurrency)]
        children.append(_spawn(envoy))
        if not _wait_until(lambda: _envoy_ready(options.admin_port), children, 30):
            print("plano-extproc: Envoy did not become ready", file=sys.stderr)
            return 1
        lis = config.listener
        print(
            f"plano gateway listening on http://{lis.address}:{lis.port}/v1 "
            f"(ext_proc {_endpoints(options)}, Envoy admin 127.0.0.1:{options.admin_port}, "
            f"bootstrap {bootstrap}); Ctrl-C stops it",
            flush=True,
        )
        while not stop_requested:
            for child in children:
                if child.poll() is not None:
                    name = "ext_proc server" if child in servers else "Envoy"
                    print(
                        f"plano-extproc: {name} exited with {child.returncode}; stopping",
                        file=sys.stderr,
                    )
                    return 1
            time.sleep(0.1)
        return 0
    finally:
        _stop(children)
        bootstrap.unlink(missing_ok=True)
        os.rmdir(workdir)


def _endpoints(options: EnvoyOptions) -> str:
    return ", ".join(f"{host}:{port}" for host, port in options.extproc)

"""``plano-extproc up``: the ext_proc server and Envoy as two child processes, run together.

Both start in the foreground and stop together: on SIGINT/SIGTERM both are stopped and we
exit 0; if either dies on its own, the other is stopped and we exit 1.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .config import Config
from .envoy_config import DEFAULT_ADMIN_SOCKET, EnvoyOptions, envoy_binary, render_yaml

if TYPE_CHECKING:
    from .extproc.server import Engine

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Children must not outlive a launcher that was killed outright (SIGKILL, OOM).
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _spawn(argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env=env, preexec_fn=_die_with_parent)


def envoy_environment(config: Config, environ: dict[str, str]) -> dict[str, str]:
    """Envoy's environment: ours without the variables that hold provider keys. Envoy never
    needs a key (the server hands it one per request); a key in its environment would be one
    more place to leak from (a crash dump, /proc/PID/environ)."""
    key_vars = {var for p in config.providers for var in p.access_key_vars}
    return {name: value for name, value in environ.items() if name not in key_vars}


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


def _serving(host: str, port: int) -> bool:
    """The server's gRPC health service says SERVING: its router is loaded (its port opens
    before, and answers ext_proc calls with UNAVAILABLE meanwhile)."""
    import grpc

    from .extproc.health import probe

    try:
        return probe(f"{host}:{port}", timeout=0.5) == "SERVING"
    except grpc.RpcError:
        return False


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket: how the launcher reaches an admin API no one else can."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def admin_get(options: EnvoyOptions, path: str, timeout: float = 0.5) -> tuple[int, bytes]:
    """GET ``path`` from Envoy's admin API (on its Unix socket, or on 127.0.0.1)."""
    connection: http.client.HTTPConnection
    if options.admin_port is not None:
        connection = http.client.HTTPConnection("127.0.0.1", options.admin_port, timeout=timeout)
    else:
        connection = _UnixHTTPConnection(options.admin_socket or DEFAULT_ADMIN_SOCKET, timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _envoy_ready(options: EnvoyOptions) -> bool:
    try:
        return admin_get(options, "/ready")[0] == 200
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
    workdir = Path(tempfile.mkdtemp(prefix="plano-extproc-"))  # owner-only (0700)
    if options.admin_port is None and options.admin_socket is None:
        # The default socket lives in this run's private folder: several gateways can run
        # side by side, and no other user can reach it even before Envoy sets its mode.
        options = dataclasses.replace(options, admin_socket=str(workdir / "envoy-admin.sock"))
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
            if not _wait_until(functools.partial(_serving, host, port), children, 30):
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
        children.append(_spawn(envoy, envoy_environment(config, dict(os.environ))))
        if not _wait_until(lambda: _envoy_ready(options), children, 30):
            print("plano-extproc: Envoy did not become ready", file=sys.stderr)
            return 1
        lis = config.listener
        print(
            f"plano gateway listening on http://{lis.address}:{lis.port}/v1 "
            f"(ext_proc {_endpoints(options)}, Envoy admin {_admin(options)}, "
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
        if options.admin_port is None:
            Path(options.admin_socket or DEFAULT_ADMIN_SOCKET).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            os.rmdir(workdir)


def _admin(options: EnvoyOptions) -> str:
    if options.admin_port is not None:
        return f"127.0.0.1:{options.admin_port}"
    return f"unix:{options.admin_socket or DEFAULT_ADMIN_SOCKET}"


def _endpoints(options: EnvoyOptions) -> str:
    return ", ".join(f"{host}:{port}" for host, port in options.extproc)

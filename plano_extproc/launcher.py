"""``plano-extproc up``: the ext_proc server(s) and Envoy as child processes, run together.

They start in the foreground and stop together. On SIGTERM/SIGINT Envoy drains first (the
servers keep serving meanwhile: translated responses and fallback attempts need them), then
Envoy stops, then the servers (which, Envoy gone, stop at once); we exit 0 if all exited 0.
A second signal cuts the drain short. If a child dies on its own, Envoy drains (when it is
the survivor), the others stop and we exit 1.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .config import Config
from .envoy_config import EnvoyOptions
from .envoy_runner import (
    DEFAULT_DRAIN,
    DrainPolicy,
    EnvoyProcess,
    admin_get,
    admin_location,
    admin_target,
    endpoints,
    envoy_environment,
    private_bootstrap,
    ready_location,
    say,
    stop_gracefully,
)
from .processes import Child, StopSignals, first_exited, spawn, terminate, wait_until

if TYPE_CHECKING:
    from .extproc.server import Engine
    from .ops.reload import EnvoyReloader

__all__ = ["admin_get", "envoy_environment", "run_gateway"]

# Envoy gone, a server has no client left to wait for: it finishes its calls and exits.
_SERVER_STOP_S = 10.0


def _serving(host: str, port: int) -> bool:
    """The server's gRPC health service says SERVING: its router is loaded (its port opens
    before, and answers ext_proc calls with UNAVAILABLE meanwhile)."""
    import grpc

    from .extproc.health import probe

    try:
        return probe(f"{host}:{port}", timeout=0.5) == "SERVING"
    except grpc.RpcError:
        return False


def run_gateway(
    config: Config,
    options: EnvoyOptions,
    concurrency: int | None = None,
    engine: Engine = "h2",
    drain: DrainPolicy = DEFAULT_DRAIN,
    metrics_listen: str | None = None,
) -> int:
    signals = StopSignals().install()
    # ``shared``: the servers' metric files (prometheus-client's multi-process mode).
    with (
        private_bootstrap(config, options) as (options, bootstrap),
        tempfile.TemporaryDirectory(prefix="plano-metrics-") as shared,
    ):
        servers: list[Child] = []
        envoy: EnvoyProcess | None = None
        try:
            # One server process per ext_proc endpoint: Envoy spreads streams over them.
            for host, port in options.extproc:
                server = [sys.executable, "-m", "plano_extproc", "serve", config.source]
                server += ["--listen", f"{host}:{port}", "--engine", engine, "--quiet-warnings"]
                # We tell them when to reload (SIGHUP), once Envoy has the change.
                server += ["--no-watch"]
                if metrics_listen is not None and not servers:
                    # The first serves the one endpoint: every server's values and Envoy's.
                    server += ["--metrics-listen", metrics_listen]
                    server += ["--envoy-admin", admin_target(options)]
                env = _metrics_env(shared, len(options.extproc), metrics_listen is not None)
                servers.append(spawn(server, env))
            for host, port in options.extproc:
                if not wait_until(functools.partial(_serving, host, port), servers, 30, signals):
                    if signals.requested:
                        return _stop_servers(servers)
                    say(f"the ext_proc server did not start on {host}:{port}")
                    return 1
            envoy = EnvoyProcess.start(config, options, bootstrap, concurrency, drain)
            if not wait_until(envoy.ready, [*servers, envoy.process], 30, signals):
                if signals.requested:
                    return max(stop_gracefully(envoy, drain, signals), _stop_servers(servers))
                say("Envoy did not become ready")
                return 1
            reloader = _reloader(config, envoy, bootstrap, servers)
            lis = config.listener
            print(
                f"plano gateway listening on http://{lis.address}:{lis.port}/v1 "
                f"(ext_proc {endpoints(options)}, Envoy admin {admin_location(options)}"
                f"{ready_location(options)}, bootstrap {bootstrap}); Ctrl-C stops it",
                flush=True,
            )
            while not signals.requested:
                died = first_exited([*servers, envoy.process])
                if died is not None:
                    name = "Envoy" if died is envoy.process else "ext_proc server"
                    say(f"{name} exited with {died.returncode}; stopping")
                    stop_gracefully(envoy, drain, signals)
                    _stop_servers(servers)
                    return 1
                reloader.tick()
                time.sleep(0.1)
            return max(stop_gracefully(envoy, drain, signals), _stop_servers(servers))
        finally:
            # Whatever went wrong above, nothing we started outlives us.
            if envoy is not None:
                envoy.stop()
            terminate(servers)


def _metrics_env(folder: str, servers: int, metrics: bool) -> dict[str, str] | None:
    """One server keeps its metrics in memory; several write them to ``folder``, where the
    one serving the endpoint sums them (without an endpoint, nobody reads them: in memory)."""
    if servers == 1 or not metrics:
        return None
    return {**os.environ, "PROMETHEUS_MULTIPROC_DIR": folder}


def _reloader(
    config: Config, envoy: EnvoyProcess, bootstrap: Path, servers: list[Child]
) -> EnvoyReloader:
    """Reloads on a change of the config or its key files, or SIGHUP: Envoy first, then the
    servers (SIGHUP), which reload on their own (ops/reload.py)."""
    from .ops.envoy_reload import envoy_reloader

    def switch_servers() -> None:
        for server in servers:
            if server.poll() is None:
                server.send_signal(signal.SIGHUP)

    return envoy_reloader(config, envoy, bootstrap, keyless=False, switched=switch_servers)


def _stop_servers(servers: list[Child]) -> int:
    """SIGTERM: the servers go NOT_SERVING and stop once no client is left; 0 if all exited
    0."""
    codes = terminate(servers, _SERVER_STOP_S)
    return 0 if all(code == 0 for code in codes) else 1

"""Envoy as our child: its bootstrap rendered into a private folder, started without the provider
keys, stopped gracefully. ``plano-extproc envoy`` (Envoy alone, beside a ``plano-extproc serve``
elsewhere: a Kubernetes sidecar container) is ``run_envoy``; ``up`` uses the same pieces.

The graceful stop, as Envoy 1.40 behaves (checked on the binary):

1. ``POST /healthcheck/fail``: from now on ``/ready`` answers 503 ``DRAINING`` (a
   ``drain_listeners`` alone leaves it at 200 ``LIVE``).
2. ``POST /drain_listeners?graceful``: Envoy, started with ``--drain-strategy immediate``
   and ``--drain-time-s`` = ``accept_seconds``, keeps accepting new connections that long
   (0 by default) and closes its listeners then: a new connection is refused. From the
   drain on, every response Envoy starts carries ``connection: close`` (HTTP/1.1) or
   comes with a GOAWAY (HTTP/2). Requests in flight, long streams included, go on. Envoy
   closes no idle keep-alive connection while draining: a request sent on one is still
   served (with ``connection: close``) while Envoy runs.
3. Wait until no request is in flight (``http.egress_traffic.downstream_rq_active`` 0 twice
   in a row), at most ``seconds`` after the stop began.
4. SIGTERM Envoy, which then exits at once (0), cutting whatever is left.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from . import unix_http
from .config import Config
from .envoy_config import (
    DEFAULT_ADMIN_SOCKET,
    LISTENER_STAT_PREFIX,
    EnvoyOptions,
    envoy_binary,
)
from .envoy_config.dynamic import XDS_DIR, render_dynamic, write_xds
from .processes import Child, StopSignals, reap_orphans, spawn, terminate

# Long enough for a long streamed answer to finish, short enough to fit Kubernetes' default
# terminationGracePeriodSeconds (30) with the rest of a pod's stop.
DEFAULT_DRAIN_S = 25.0
# Envoy exits at once on SIGTERM; SIGKILL if it has not after this.
_STOP_S = 5.0
_POLL_S = 0.1
ACTIVE_REQUESTS = f"http.{LISTENER_STAT_PREFIX}.downstream_rq_active"


@dataclass(frozen=True)
class DrainPolicy:
    seconds: float = DEFAULT_DRAIN_S  # the most the drain may take; what is left then is cut
    # How long Envoy still accepts new connections after the stop (each answered with
    # connection: close): a Service's endpoints take a moment to forget a stopping pod.
    accept_seconds: int = 0


DEFAULT_DRAIN = DrainPolicy()


def envoy_environment(config: Config, environ: dict[str, str]) -> dict[str, str]:
    """Envoy's environment: ours without the variables that hold provider keys. Envoy never
    needs a key (the server hands it one per request); a key in its environment would be one
    more place to leak from (a crash dump, /proc/PID/environ)."""
    key_vars = {var for p in config.providers for var in p.access_key_vars}
    return {name: value for name, value in environ.items() if name not in key_vars}


ACCESS_LOG_FLUSH_MS = 1000


def envoy_command(
    binary: str, bootstrap: Path, concurrency: int | None, drain: DrainPolicy
) -> list[str]:
    argv = [binary, "-c", str(bootstrap), "--log-level", "warn", "--disable-hot-restart"]
    # Every connection told to close as soon as the drain starts, not spread over the drain
    # time as the default (gradual) would.
    argv += ["--drain-strategy", "immediate", "--drain-time-s", str(drain.accept_seconds)]
    # The access log's lines are written out each second (Envoy's default: every 10 s, or
    # each 64 KiB), so a quiet gateway's lines show in the container's log at once.
    argv += ["--file-flush-interval-msec", str(ACCESS_LOG_FLUSH_MS)]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    return argv


@contextlib.contextmanager
def private_bootstrap(config: Config, options: EnvoyOptions) -> Iterator[tuple[EnvoyOptions, Path]]:
    """The bootstrap, written into a folder only we may open (under $TMPDIR: in a container
    whose root filesystem is read-only, a writable emptyDir); removed afterwards. The admin
    socket lives there too unless one is named. The gateway's listener, routes and clusters
    are in xDS files in its XDS_DIR, which a reload rewrites (ops/envoy_reload.py)."""
    workdir = Path(tempfile.mkdtemp(prefix="plano-extproc-"))  # owner-only (0700)
    if options.admin_port is None and options.admin_socket is None:
        # Several gateways can run side by side, and no other user can reach the socket even
        # before Envoy sets its mode.
        options = dataclasses.replace(options, admin_socket=str(workdir / "envoy-admin.sock"))
    bootstrap = workdir / "envoy.yaml"
    xds_dir = workdir / XDS_DIR
    try:
        dynamic = render_dynamic(config, xds_dir, options)
        xds_dir.mkdir()
        write_xds(xds_dir, dynamic.xds)
        bootstrap.write_text(dynamic.bootstrap)
        yield options, bootstrap
    finally:
        shutil.rmtree(xds_dir, ignore_errors=True)
        bootstrap.unlink(missing_ok=True)
        if options.admin_port is None:
            Path(options.admin_socket or DEFAULT_ADMIN_SOCKET).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            os.rmdir(workdir)


def admin_request(
    options: EnvoyOptions, method: str, path: str, timeout: float = 0.5
) -> tuple[int, bytes]:
    """``method path`` on Envoy's admin API (on its Unix socket, or on 127.0.0.1)."""
    return unix_http.request(admin_target(options), method, path, timeout)


def admin_get(options: EnvoyOptions, path: str, timeout: float = 0.5) -> tuple[int, bytes]:
    """GET ``path`` from Envoy's admin API."""
    return admin_request(options, "GET", path, timeout)


def stat_value(stats: str, name: str) -> int | None:
    """One counter's or gauge's value in the admin API's text ``/stats``; None if absent."""
    found = re.search(rf"^{re.escape(name)}: (\d+)$", stats, re.MULTILINE)
    return int(found.group(1)) if found else None


@dataclass(frozen=True)
class DrainReport:
    seconds: float
    # Requests still in flight when the drain ended (0: all finished); None: not known (the
    # admin API did not answer, or Envoy had exited).
    left: int | None

    def describe(self) -> str:
        if self.left == 0:
            return f"Envoy drained in {self.seconds:.1f} s"
        if self.left is None:
            return f"Envoy stopped after {self.seconds:.1f} s (its admin API did not answer)"
        return (
            f"Envoy stopped after {self.seconds:.1f} s with {self.left} request(s) in flight: "
            "cut (--drain-seconds)"
        )


class EnvoyProcess:
    """A running Envoy and the admin API it answers on."""

    def __init__(self, process: Child, options: EnvoyOptions) -> None:
        self.process = process
        self.options = options

    @classmethod
    def start(
        cls,
        config: Config,
        options: EnvoyOptions,
        bootstrap: Path,
        concurrency: int | None,
        drain: DrainPolicy,
    ) -> EnvoyProcess:
        argv = envoy_command(envoy_binary(), bootstrap, concurrency, drain)
        return cls(spawn(argv, envoy_environment(config, dict(os.environ))), options)

    def ready(self) -> bool:
        try:
            return admin_get(self.options, "/ready")[0] == 200
        except OSError:
            return False

    def active_requests(self) -> int | None:
        try:
            status, body = admin_get(self.options, f"/stats?filter=^{ACTIVE_REQUESTS}$")
        except OSError:
            return None
        return stat_value(body.decode(), ACTIVE_REQUESTS) if status == 200 else None

    def drain(
        self,
        policy: DrainPolicy,
        hurry: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.monotonic,
    ) -> DrainReport:
        """Steps 1-3 of the module's docstring: returns once nothing is in flight, or
        ``policy.seconds`` passed, or ``hurry()`` says so."""
        start = clock()
        try:
            admin_request(self.options, "POST", "/healthcheck/fail")
            admin_request(self.options, "POST", "/drain_listeners?graceful")
        except OSError:
            return DrainReport(clock() - start, None)
        listening_until, deadline = start + policy.accept_seconds, start + policy.seconds
        idle_readings = 0
        while True:
            if self.process.poll() is not None:
                return DrainReport(clock() - start, None)
            now = clock()
            if now >= deadline or hurry():
                return DrainReport(now - start, self.active_requests())
            if now >= listening_until:
                # Twice: a connection accepted just before the listener closed may not have
                # sent its request yet.
                active = self.active_requests()
                idle_readings = idle_readings + 1 if active == 0 else 0
                if idle_readings >= 2:
                    return DrainReport(clock() - start, 0)
            time.sleep(_POLL_S)

    def stop(self) -> int:
        """SIGTERM (SIGKILL past a few seconds); Envoy's exit code."""
        return terminate([self.process], _STOP_S)[0]


def say(message: str) -> None:
    print(f"plano-extproc: {message}", file=sys.stderr, flush=True)


def admin_target(options: EnvoyOptions) -> str:
    """Where Envoy's admin API answers: 127.0.0.1:PORT, or its Unix socket's path (what the
    metrics endpoint's --envoy-admin takes)."""
    if options.admin_port is not None:
        return f"127.0.0.1:{options.admin_port}"
    return options.admin_socket or DEFAULT_ADMIN_SOCKET


def admin_location(options: EnvoyOptions) -> str:
    """``admin_target`` as a person reads it: a socket's path marked unix:."""
    target = admin_target(options)
    return target if options.admin_port is not None else f"unix:{target}"


def run_envoy(
    config: Config,
    options: EnvoyOptions,
    concurrency: int | None = None,
    drain: DrainPolicy = DEFAULT_DRAIN,
) -> int:
    """``plano-extproc envoy``: Envoy in the foreground until SIGTERM/SIGINT, then a graceful
    stop and exit 0; 1 if Envoy exits on its own."""
    from .ops.envoy_reload import envoy_reloader

    signals = StopSignals().install()
    with private_bootstrap(config, options) as (options, bootstrap):
        envoy = EnvoyProcess.start(config, options, bootstrap, concurrency, drain)
        reloader = envoy_reloader(config, envoy, bootstrap, keyless=True)
        try:
            announced = False
            while not signals.requested:
                reap_orphans([envoy.process])
                if announced:
                    reloader.tick()
                if envoy.process.poll() is not None:
                    say(f"Envoy exited with {envoy.process.returncode}")
                    return 1
                if not announced and envoy.ready():
                    announced = True
                    lis = config.listener
                    print(
                        f"plano Envoy listening on http://{lis.address}:{lis.port}/v1 "
                        f"(ext_proc {endpoints(options)}, Envoy admin {admin_location(options)}"
                        f"{ready_location(options)}, bootstrap {bootstrap})",
                        flush=True,
                    )
                time.sleep(_POLL_S)
            return stop_gracefully(envoy, drain, signals)
        finally:
            envoy.stop()


def stop_gracefully(envoy: EnvoyProcess, drain: DrainPolicy, signals: StopSignals) -> int:
    """Drain Envoy (if it still runs), then stop it; 0 when it exited cleanly."""
    if envoy.process.poll() is None:
        say(f"stopping: Envoy drains for up to {drain.seconds:g} s")
        say(envoy.drain(drain, lambda: signals.hurry).describe())
    return 0 if envoy.stop() == 0 else 1


def endpoints(options: EnvoyOptions) -> str:
    return ", ".join(f"{host}:{port}" for host, port in options.extproc)


def ready_location(options: EnvoyOptions) -> str:
    if options.ready_port is None:
        return ""
    return f", GET /ready on {options.ready_address}:{options.ready_port}"

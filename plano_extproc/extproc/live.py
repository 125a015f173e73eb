"""The server's side of a live reload: a new config's processor and router made off the event
loop, then swapped in for new streams. A stream already open keeps the handler it was given
(ExtProcService.open_stream returns one bound to its service), so a request decided or being
decided finishes on the config it started with.

The router is the slow part (its route vectors are computed when it loads): it is reused when
the new config's routes and router settings are those of the old, and otherwise built whole
before the switch, the old one closed once no decision can still be waiting on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable

from ..config import Config, load_config
from ..ops.reload import (
    POLL_S,
    SETTLE_S,
    FileWatch,
    Refused,
    check,
    log_refused,
    watched_paths,
)
from ..router.service import RouterService, load_service
from .h2grpc import OpenStream

log = logging.getLogger("plano_extproc.reload")

# Seconds a replaced router service lives on: longer than any decision's deadline.
RETIRE_S = 30.0


def router_key(config: Config) -> tuple[object, ...]:
    """What the router is made of: two configs with the same key can share one."""
    return (config.router, tuple((r.name, r.description) for r in config.routes))


class LiveConfig:
    """The config the server serves, replaced on a reload. ``streams(config, service)``
    makes what opens streams for a config; ``install`` puts it in the server."""

    def __init__(
        self,
        config: Config,
        service: RouterService | None,
        streams: Callable[[Config, RouterService | None], OpenStream],
        install: Callable[[OpenStream], None],
        load: Callable[[str], Config] = load_config,
        build: Callable[[Config], RouterService | None] = load_service,
    ) -> None:
        self.config = config
        self.service = service
        self._streams = streams
        self._install = install
        self._load = load
        self._build = build
        self._made: list[RouterService] = []
        self._lock = asyncio.Lock()
        self.reloads = 0

    def serve(self) -> None:
        self._install(self._streams(self.config, self.service))

    async def reload(self) -> bool:
        """Check the file and switch to it; False when refused (logged) or unchanged."""
        async with self._lock:
            loop = asyncio.get_running_loop()
            started = time.monotonic()
            result = await loop.run_in_executor(
                None, check, self.config.source, self.config, self._load
            )
            if isinstance(result, Refused):
                log_refused(self.config.source, result)
                return False
            if result == self.config:
                return False
            service = self.service
            if router_key(result) != router_key(self.config):
                service = await loop.run_in_executor(None, self._build, result)
                if service is not None:
                    self._made.append(service)
            # Made before the switch, so the switch itself is one assignment.
            streams = self._streams(result, service)
            self._install(streams)
            old = self.service
            self.config, self.service = result, service
            self.reloads += 1
            if old is not None and old is not service:
                loop.call_later(RETIRE_S, self._retire, old)
            log.info(
                "config reloaded from %s in %.2f s: %d provider(s), %d alias(es), %d route(s)%s",
                result.source,
                time.monotonic() - started,
                len(result.providers),
                len(result.aliases),
                len(result.routes),
                "" if service is old else " (router rebuilt)",
            )
            return True

    async def watch(self, settle_s: float = SETTLE_S, poll_s: float = POLL_S) -> None:
        """Reload whenever the config or a key file changes, ``settle_s`` after noticing it
        (Envoy's own watcher has applied the change by then)."""
        files = FileWatch(watched_paths(self.config))
        while True:
            await asyncio.sleep(poll_s)
            if files.changed():
                await asyncio.sleep(settle_s)
                files.changed()  # what the reload reads is what is watched next
                await self._reload_quietly()
                if files.paths != tuple(watched_paths(self.config)):
                    files.watch(watched_paths(self.config))

    def start(self, watch: bool) -> list[asyncio.Task[None]]:
        """SIGHUP reloads; with ``watch`` the files are polled too. The tasks to cancel."""
        loop = asyncio.get_running_loop()
        tasks: list[asyncio.Task[None]] = []

        def on_hangup() -> None:
            tasks.append(loop.create_task(self._reload_quietly()))

        loop.add_signal_handler(signal.SIGHUP, on_hangup)
        if watch:
            tasks.append(loop.create_task(self.watch()))
        return tasks

    async def _reload_quietly(self) -> None:
        try:
            await self.reload()
        except Exception:
            log.exception("config reload failed; the previous config keeps serving")

    def _retire(self, service: RouterService) -> None:
        # Its model's memory goes with it: a reload per route change must not add up.
        service.close()
        if service in self._made:
            self._made.remove(service)

    def close(self) -> None:
        for service in self._made:
            with contextlib.suppress(Exception):
                service.close()

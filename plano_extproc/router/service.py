"""Runs a router off the event loop, one decision at a time, each within a deadline.

The event loop serving model- and alias-routed requests never waits on a model: decisions
run in one worker thread (onnxruntime spreads each over its own intra-op threads and releases
the GIL). A decision not done by its deadline answers None and the caller falls back to the
default provider; a decision still queued when its deadline passes is skipped, not run, so
a burst cannot build a backlog of stale work.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from .base import RouteChoice, Router

log = logging.getLogger("plano_extproc.router")


class RouterService:
    def __init__(self, router: Router, timeout_s: float) -> None:
        self.router = router
        self.timeout_s = timeout_s
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="plano-router")

    async def choose(self, messages: Sequence[object]) -> RouteChoice | None:
        """The router's choice, or None on a timeout or a router failure (both logged)."""
        deadline = time.monotonic() + self.timeout_s
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._pool, self._run, messages, deadline)
        try:
            choice = await asyncio.wait_for(future, self.timeout_s)
        except TimeoutError:
            choice = None
        except Exception:
            log.exception("the router failed: using the default")
            return None
        if choice is None:  # timed out, or skipped because it waited past its deadline
            log.warning("route decision exceeded %.0f ms: using the default", self.timeout_s * 1e3)
        return choice

    def _run(self, messages: Sequence[object], deadline: float) -> RouteChoice | None:
        if time.monotonic() >= deadline:
            return None  # waited out its deadline in the queue; nobody reads the answer
        return self.router.choose(messages)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

"""Runs a router off the event loop, each decision within a deadline, and remembers its
recent decisions.

The event loop serving model- and alias-routed requests never waits on a model: decisions
run in worker threads (onnxruntime releases the GIL). A router that says it can
(``concurrency``, the embedded router: 2) runs that many decisions at once: on 2 cores, each
on one core, while a decision alone spreads its model runs over both (embedded.SharedCores).
A decision not done by its deadline answers None and the caller falls back to the default
provider; a decision still queued when its deadline passes is skipped, not run, so a burst
cannot build a backlog of stale work.

The decision cache: an agent's tool steps re-send the same conversation with tool calls and
results appended, which the router never reads, so the same decision is asked for again and
again. Decisions are remembered by a hash of exactly what the router reads (the turns
``conversation`` picks with the router's own ``Reading``: the latest user turn and the turns
before it that its budget allows, each cut as the router cuts it) and of the config's routes;
a repeat is answered on the event loop from the cache, without the router thread. The cache
belongs to the service, and a config reload makes a new service, so it never outlives the
routes and settings it was filled under.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from ..config import Config
from ..ops import metrics
from . import load_router
from .base import RouteChoice, Router
from .conversation import Reading, conversation

log = logging.getLogger("plano_extproc.router")

# The decision cache's size, in decisions. An entry is a 16-byte key and a RouteChoice (the
# scores of every route and a short explanation: about 4 KB with ten routes, measured), so a
# full cache holds about 17 MB. What it must hold is the latest turn of every conversation that
# is still going: an agent's steps come seconds apart, and 4,096 is far more conversations
# than one gateway serves at once (the embedded router makes at most ~120 new decisions a
# second on 2 cores, so an entry lives for at least 30 s of non-stop new requests).
CACHE_ENTRIES = 4096


class RouterService:
    def __init__(
        self, router: Router, timeout_s: float, *, cache_entries: int = CACHE_ENTRIES
    ) -> None:
        self.router = router
        self.timeout_s = timeout_s
        concurrency = getattr(router, "concurrency", 1)
        self.concurrency = concurrency if isinstance(concurrency, int) and concurrency > 0 else 1
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="plano-router")
        # What the router reads; a router without a Reading (a test's stub) is keyed on
        # every turn, which can only make the key stricter.
        reading = getattr(router, "reading", None)
        self._reading: Reading | None = reading if isinstance(reading, Reading) else None
        routes = hashlib.blake2b(digest_size=16)
        for route in router.routes:
            routes.update(_field(route.name) + _field(route.description))
        self._routes_digest = routes.digest()
        self.cache_entries = cache_entries
        self._cache: OrderedDict[bytes, RouteChoice] = OrderedDict()
        # Looked up and filled on the event loop only; the lock keeps the cache whole if a
        # service is ever shared between threads (the router thread never touches it).
        self._lock = threading.Lock()
        self.cache_hits = 0
        self.cache_misses = 0

    async def choose(self, messages: Sequence[object]) -> RouteChoice | None:
        """The router's choice, or None on a timeout or a router failure (both logged).
        A decision made before for the same reading is answered from the cache."""
        started = time.perf_counter()
        key = self.cache_key(messages)
        if key is not None:
            with self._lock:
                cached = self._cache.get(key)
                if cached is not None:
                    self._cache.move_to_end(key)
                    self.cache_hits += 1
                    metrics.router_time(time.perf_counter() - started, cached=True)
                    return cached
                self.cache_misses += 1
        deadline = time.monotonic() + self.timeout_s
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._pool, self._run, messages, deadline)
        try:
            choice, finished = await asyncio.wait_for(future, self.timeout_s)
            # wait_for hands back a result that is ready when it wakes, even when the event
            # loop was too busy to wake it by the deadline: the deadline is the decision's.
            if finished > deadline:
                choice = None
        except TimeoutError:
            choice = None
        except Exception:
            log.exception("the router failed: using the default")
            metrics.router_fallback(metrics.FAILURE)
            return None
        finally:
            metrics.router_time(time.perf_counter() - started, cached=False)
        if choice is None:  # timed out, or skipped because it waited past its deadline
            metrics.router_fallback(metrics.TIMEOUT)
            log.warning("route decision exceeded %.0f ms: using the default", self.timeout_s * 1e3)
            return None  # never cached: the next request tries the router again
        if key is not None:
            self._remember(key, choice)
        return _marked(choice, cached=False)

    def cache_key(self, messages: Sequence[object]) -> bytes | None:
        """A digest of what the router reads of ``messages`` and of the routes; None when
        there is nothing to read (the router answers that at once, uncached)."""
        turns = conversation(messages, self._reading)
        if not turns:
            return None
        digest = hashlib.blake2b(self._routes_digest, digest_size=16)
        for turn in turns:
            digest.update(_field(turn.role) + _field(turn.text))
        return digest.digest()

    def _remember(self, key: bytes, choice: RouteChoice) -> None:
        entry = _marked(choice, cached=True)
        with self._lock:
            self._cache[key] = entry
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_entries:
                self._cache.popitem(last=False)

    def cache_size(self) -> int:
        return len(self._cache)

    def _run(self, messages: Sequence[object], deadline: float) -> tuple[RouteChoice | None, float]:
        """The decision and when it was done (time.monotonic())."""
        if time.monotonic() >= deadline:
            return None, deadline  # waited out its deadline in the queue; nobody reads it
        choice = self.router.choose(messages)
        return choice, time.monotonic()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _field(text: str) -> bytes:
    # Length-prefixed, so that no two different sequences of texts hash the same bytes.
    data = text.encode("utf-8", "surrogatepass")
    return len(data).to_bytes(8, "little") + data


def _marked(choice: RouteChoice, *, cached: bool) -> RouteChoice:
    """``choice`` whose explanation says whether it came from the cache (``--explain``)."""
    return dataclasses.replace(choice, explain={**choice.explain, "cached": cached})


def load_service(config: Config) -> RouterService | None:
    """The router ``config`` asks for, run by a service; None when it asks for none.
    Blocking (the model loads, the routes are embedded): run it off the event loop."""
    router = load_router(config)
    return RouterService(router, config.router.timeout_s) if router is not None else None

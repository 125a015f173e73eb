"""Live config reload: noticing a change, checking the new config, and Envoy's side of the switch.

A change is noticed by polling (every ``POLL_S``) each watched file's identity: the path it
resolves to, its inode, mtime and size. That sees an edit in place, a file renamed over the
old one, and a Kubernetes ConfigMap or Secret update (kubelet swaps a ``..data`` symlink: the
resolved path changes though the mounted path does not), with no inotify. The watched files
are the config and the key files it reads (``$VAR`` with ``VAR_FILE`` set). SIGHUP reloads too.

The order of a change across the two processes: Envoy first, then the server. A new provider
must have its Envoy route and cluster before the server sends a request to it; a removed one
must keep them until the server no longer does. So Envoy is given the union of what it had and
the new config (``retained``) at once; the server switches at once when Envoy's routes already
cover everything the new config can send (``needs_envoy_first``: a key, an alias, a removal),
else once Envoy shows the new version (in ``up`` on our SIGHUP; beside ``plano-extproc envoy``,
which cannot tell it, ``SETTLE_S`` after it noticed the change); Envoy drops what was removed
``HOLD_S`` later. What would change Envoy's listener is refused (``restart_needed``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..config import Config, ConfigError, load_config

log = logging.getLogger("plano_extproc.reload")

# Four stat calls a second per watched file: nothing, next to a reload that waits for it.
POLL_S = 0.25
# How long Envoy keeps a removed provider's route and cluster after a change: the server must
# have switched by then (its router built), and requests sent before will have been routed.
HOLD_S = 30.0
# A server that watches the file itself (beside `plano-extproc envoy`) waits this long after
# seeing a change, so Envoy, polling the same file, has the new routes first.
SETTLE_S = 1.0

FileId = tuple[str, int, int, int] | None


def file_id(path: str) -> FileId:
    """What identifies the content at ``path`` without reading it; None when it is absent."""
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError:
        return None
    return (real, st.st_ino, st.st_mtime_ns, st.st_size)


class FileWatch:
    """Tells whether any of the files changed since the last look."""

    def __init__(self, paths: Iterable[str], identify: Callable[[str], FileId] = file_id) -> None:
        self._identify = identify
        self.paths: tuple[str, ...] = ()
        self._seen: tuple[FileId, ...] = ()
        self.watch(paths)

    def watch(self, paths: Iterable[str]) -> None:
        """Watch ``paths`` from now on, as they are now."""
        self.paths = tuple(dict.fromkeys(paths))
        self._seen = self._look()

    def _look(self) -> tuple[FileId, ...]:
        return tuple(self._identify(p) for p in self.paths)

    def changed(self) -> bool:
        now = self._look()
        if now == self._seen:
            return False
        self._seen = now
        return True


def watched_paths(config: Config) -> list[str]:
    return [config.source, *config.key_files]


def restart_needed(old: Config, new: Config) -> list[str]:
    """What of a change only a restart can apply: whatever changes Envoy's listener. Envoy
    cannot move a listener, and replacing one closes its connections at once, requests in
    flight included (Envoy runs with --drain-time-s 0 for the graceful stop's sake; measured:
    streams cut). So the listener's settings, and the filters some configs add to it (for
    fail-over chains, for Azure OpenAI's api-version, for tracing), are fixed at start-up."""
    a, b = old.listener, new.listener
    if (a.address, a.port) != (b.address, b.port):
        return [
            f"{new.source}: the listener moved from {a.address}:{a.port} to "
            f"{b.address}:{b.port}: that needs a restart"
        ]
    problems = []
    if a != b:
        changed = [
            f.name for f in dataclasses.fields(a) if getattr(a, f.name) != getattr(b, f.name)
        ]
        problems.append(
            f"{new.source}: the listener's settings changed ({', '.join(changed)}): Envoy "
            "would close its connections, requests in flight included; that needs a restart"
        )
    for what, before, after in (
        ("fail-over chains", bool(old.chains), bool(new.chains)),
        ("Azure OpenAI providers", _azure(old), _azure(new)),
        ("tracing", old.tracing, new.tracing),
    ):
        if before != after:
            problems.append(
                f"{new.source}: {what} added or removed (or changed): their filters are on "
                "Envoy's listener; that needs a restart"
            )
    return problems


def _azure(config: Config) -> bool:
    return any(p.api_version is not None for p in config.providers)


@dataclass(frozen=True)
class Refused:
    errors: Sequence[str]


def check(
    source: str, current: Config, load: Callable[[str], Config] = load_config
) -> Config | Refused:
    """The config now at ``source``, or why it cannot replace ``current``."""
    try:
        new = load(source)
    except ConfigError as exc:
        return Refused(exc.errors)
    problems = restart_needed(current, new)
    return Refused(problems) if problems else new


def log_refused(source: str, refused: Refused) -> None:
    log.error(
        "config reload refused, the previous config keeps serving: %s: %d problem(s):\n  %s",
        source,
        len(refused.errors),
        "\n  ".join(refused.errors),
    )


def retained(old: Config, new: Config) -> Config:
    """``new`` plus the providers of ``old`` it no longer has (what Envoy serves while the
    server switches): their routes and clusters stay. One whose cluster name ``new`` gives
    another endpoint is not kept."""
    names = {p.name for p in new.providers}
    clusters = new.clusters
    kept = tuple(
        p
        for p in old.providers
        if p.name not in names and clusters.get(p.cluster, p.endpoint) == p.endpoint
    )
    if not kept:
        return new
    return dataclasses.replace(new, providers=new.providers + kept)


def needs_envoy_first(rendered: Config, new: Config) -> bool:
    """Whether the server must wait for Envoy before switching to ``new``: it names a
    provider or a fail-over chain Envoy's routes (``rendered``) do not have."""
    known = {p.name for p in rendered.providers}
    return any(p.name not in known for p in new.providers) or new.chains != rendered.chains


class HangupFlag:
    """SIGHUP, remembered until taken."""

    def __init__(self) -> None:
        self._raised = False

    def install(self) -> HangupFlag:
        signal.signal(signal.SIGHUP, self._on_signal)
        return self

    def _on_signal(self, signum: int, frame: object) -> None:
        self._raised = True

    def take(self) -> bool:
        raised, self._raised = self._raised, False
        return raised


class EnvoyReloader:
    """Envoy's side, driven by ``tick`` from the runner's loop (which it never holds up: the
    render, the slow part, runs on a thread of its own). On a change of the watched files or
    SIGHUP the new config is read and checked at once; Envoy is given it with what it removed
    still in (``retained``), and ``switched`` is called (``up``: SIGHUP the servers) at once
    when Envoy's routes already cover it, or once Envoy shows the new version when they do
    not. ``HOLD_S`` later the removed parts go."""

    def __init__(
        self,
        config: Config,
        apply: Callable[[Config], bool],
        reload: Callable[[str], Config] = load_config,
        switched: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        hold_s: float = HOLD_S,
        background: bool = True,
    ) -> None:
        self.config = config  # what the server is (being) switched to
        self.wanted = config  # what Envoy is to have: config and what it removed, held
        self.applied = config  # what Envoy has
        self._apply = apply
        self._reload = reload
        self._switched = switched
        self._clock = clock
        self._hold_s = hold_s
        self._watch = FileWatch(watched_paths(config))
        self._next_poll = clock() + POLL_S
        self._trim_at: float | None = None
        self._switch_owed = False
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(1, "plano-envoy-reload") if background else None
        self.hangup = HangupFlag()

    def tick(self) -> None:
        now = self._clock()
        hangup = self.hangup.take()
        if hangup or now >= self._next_poll:
            self._next_poll = now + POLL_S
            if self._watch.changed() or hangup:
                self.reload()
        if self._trim_at is not None and now >= self._trim_at:
            self._trim_at = None
            with self._lock:
                self.wanted = self.config
            self._submit()

    def reload(self) -> None:
        result = check(self.config.source, self.config, self._reload)
        self._watch.watch(watched_paths(self.config if isinstance(result, Refused) else result))
        if isinstance(result, Refused):
            log_refused(self.config.source, result)
            return
        with self._lock:
            self.config = result
            self.wanted = retained(self.wanted, result)
            envoy_first = needs_envoy_first(self.applied, result) or self._switch_owed
            self._switch_owed = envoy_first
        if not envoy_first:
            # Nothing the new config can send lacks a route already: the server need not
            # wait for Envoy's render (most of a reload's time).
            self._switched()
        if self.wanted is not result:
            self._trim_at = self._clock() + self._hold_s
        self._submit()

    def _submit(self) -> None:
        if self._pool is None:
            self._sync()
        else:
            self._pool.submit(self._sync)

    def _sync(self) -> None:
        """Give Envoy what it is to have now (the latest: changes made meanwhile included)."""
        try:
            with self._lock:
                wanted, started = self.wanted, self._clock()
            if wanted is self.applied:
                return
            if not self._apply(wanted):
                log.error("Envoy did not take the new config; the previous one keeps serving")
                return
            with self._lock:
                self.applied = wanted
                owed = self._switch_owed and not needs_envoy_first(wanted, self.config)
                if owed:
                    self._switch_owed = False
            if owed:
                self._switched()
            log.info(
                "config reloaded into Envoy from %s in %.2f s",
                wanted.source,
                self._clock() - started,
            )
        except Exception:
            log.exception("config reload into Envoy failed; the previous config keeps serving")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def keyless_loader(env: dict[str, str] | None = None) -> Callable[[str], Config]:
    """For Envoy alone: a config parsed with a stand-in for every unset key (it holds none)."""
    from ..explain import with_stand_in_keys

    def load(source: str) -> Config:
        return with_stand_in_keys(load_config(Path(source), env))

    return load

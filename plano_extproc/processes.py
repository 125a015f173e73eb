"""Child processes for ``up`` and ``envoy``: started so that only we signal them, stopped by
PID, and the stop signals we take (a container's main process is PID 1, which the kernel gives
no default action for SIGTERM: without a handler it would be ignored).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from types import FrameType

Child = subprocess.Popen[bytes]

# The child becomes a short Python step that asks the kernel to send it SIGTERM when its
# parent dies (so children never outlive a parent killed outright: SIGKILL, the OOM killer)
# and then execs the real program, which keeps the request across exec. It is a step of its
# own, not a ``preexec_fn``: no code of ours then runs between fork and exec, so subprocess
# may vfork and no library's fork handlers run in the child. (grpcio's, left on, restart its
# poller there, and the close of inherited descriptors before exec pulled its epoll
# descriptor away: a few children in a hundred died before exec while a channel was busy.)
# ``-I -S``: no user site, no site packages, no PYTHON* variables: a ~15 ms start.
# The parent's PID is checked after the request: a parent that died before it was made
# leaves the step to init, and the kernel would never send the signal.
_DIE_WITH_PARENT_THEN_EXEC = """
import ctypes, os, sys
ctypes.CDLL(None, use_errno=True).prctl(1, 15)  # PR_SET_PDEATHSIG, SIGTERM
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)
try:
    os.execvp(sys.argv[2], sys.argv[2:])
except OSError as error:
    sys.exit(f"cannot start {sys.argv[2]}: {error}")
"""


def spawn(argv: Sequence[str], env: dict[str, str] | None = None) -> Child:
    """``argv`` as a child that dies with us, in its own process group: a terminal's Ctrl-C
    (sent to the whole foreground group) reaches us alone, so we decide how each child stops
    (Envoy drains first; a SIGINT of its own would stop it at once)."""
    if not argv:
        raise ValueError("spawn needs a program to run")
    step = [sys.executable, "-I", "-S", "-c", _DIE_WITH_PARENT_THEN_EXEC, str(os.getpid())]
    return subprocess.Popen([*step, *argv], env=env, process_group=0)


class StopSignals:
    """SIGTERM and SIGINT, counted: the first asks for a graceful stop, a second (an impatient
    Ctrl-C) for a quick one."""

    def __init__(self) -> None:
        self.count = 0

    def install(self) -> StopSignals:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        return self

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1

    @property
    def requested(self) -> bool:
        return self.count >= 1

    @property
    def hurry(self) -> bool:
        return self.count >= 2


def wait_until(
    check: Callable[[], bool],
    children: Iterable[Child],
    timeout: float,
    stop: StopSignals | None = None,
) -> bool:
    """Poll ``check`` until it holds (True), or a child exits, a stop is asked or ``timeout``
    passes (False)."""
    deadline = time.monotonic() + timeout
    children = list(children)
    while time.monotonic() < deadline:
        if any(c.poll() is not None for c in children) or (stop is not None and stop.requested):
            return False
        if check():
            return True
        time.sleep(0.05)
    return False


def first_exited(children: Iterable[Child]) -> Child | None:
    return next((c for c in children if c.poll() is not None), None)


def terminate(children: Sequence[Child], timeout: float = 5.0) -> list[int]:
    """SIGTERM each child still running, wait for all (SIGKILL past ``timeout``); their exit
    codes (negative: the signal that ended it)."""
    for child in children:
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return [child.returncode for child in children]


def reap_orphans(ours: Iterable[Child]) -> None:
    """As PID 1 of a container, orphans (a `kubectl exec`'s leftovers) are ours to reap.
    Looked at without reaping first (WNOWAIT): our own children's exit codes are theirs."""
    if os.getpid() != 1:
        return
    pids = {c.pid for c in ours}
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if info is None or info.si_pid in pids:
            return  # nothing exited, or one of ours did: its Popen reaps it
        with contextlib.suppress(ChildProcessError):
            os.waitpid(info.si_pid, 0)

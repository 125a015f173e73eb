"""Children started by processes.spawn (Envoy, the servers) while the process talks gRPC:
grpcio's fork support, left on, kills a few of them before they exec (their poller's epoll
descriptor is closed under it). The CLI turns it off; this runs a busy channel beside many
spawns in a fresh interpreter that loaded the CLI module first. ``failed_spawns("bare")``
shows the failure it guards against: 2 of 300 children died in each of three runs with
grpcio 1.85 (it is not a test: it asserts nothing about grpcio)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.unit

SPAWNS = 300
# Loads the CLI module first (as the console script does), unless told not to; then serves
# gRPC health, keeps one thread asking it, and spawns short-lived children; prints how many
# exited with anything but 0.
SCRIPT = textwrap.dedent(
    """
    import sys, threading
    if sys.argv[2] == "cli":
        import plano_extproc.cli  # noqa: F401
    from concurrent import futures
    import grpc
    from grpc_health.v1 import health, health_pb2_grpc
    from plano_extproc.extproc.health import probe
    from plano_extproc.processes import spawn

    server = grpc.server(futures.ThreadPoolExecutor(2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    done = threading.Event()

    def ask() -> None:
        while not done.is_set():
            probe(f"127.0.0.1:{port}", timeout=1.0)

    threading.Thread(target=ask, daemon=True).start()
    failed = sum(spawn(["/bin/sh", "-c", "exit 0"]).wait() != 0 for _ in range(int(sys.argv[1])))
    done.set()
    server.stop(None)
    print(failed)
    """
)


def failed_spawns(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(SPAWNS), mode],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return int(result.stdout.strip().splitlines()[-1])


def test_no_child_dies_before_exec_under_the_cli() -> None:
    assert failed_spawns("cli") == 0


def test_the_cli_turns_grpc_fork_support_off() -> None:
    code = "import os, plano_extproc.cli; print(os.environ['GRPC_ENABLE_FORK_SUPPORT'])"
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "false"

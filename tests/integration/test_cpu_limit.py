"""The cores the server counts under a real CPU limit: a process in a cgroup with a quota of
one CPU, the cgroup's directory bind-mounted over /sys/fs/cgroup/cpu in its own mount
namespace (what a container runtime shows a container on cgroup v1). Needs root and a
writable cgroup v1 cpu hierarchy; skipped where there is none."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HIERARCHY = Path("/sys/fs/cgroup/cpu")
REQUEST = {"messages": [{"role": "user", "content": "write a python function that parses dates"}]}


@pytest.fixture
def one_cpu() -> Iterator[Path]:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare")
    if not (HIERARCHY / "cpu.cfs_quota_us").is_file():
        pytest.skip("no cgroup v1 cpu hierarchy")
    group = HIERARCHY / f"plano-extproc-test-{os.getpid()}"
    try:
        group.mkdir()
    except OSError as e:
        pytest.skip(f"cannot make a cgroup: {e}")
    try:
        (group / "cpu.cfs_period_us").write_text("100000")
        (group / "cpu.cfs_quota_us").write_text("100000")
        # Whether this machine lets a mount namespace bind the group over the hierarchy,
        # asked apart so that a skip here can never hide a failure of the code under test.
        probe = subprocess.run(
            ["unshare", "--mount", "mount", "--bind", str(group), str(HIERARCHY)],
            capture_output=True,
            text=True,
        )
        if probe.returncode != 0:
            pytest.skip(f"cannot bind-mount the cgroup here: {probe.stderr.strip()}")
        yield group
    finally:
        group.rmdir()  # its processes have exited: run() waits for them


def run(group: Path, args: list[str], stdin: str = "") -> str:
    """``args`` run inside ``group``, seeing it as its own /sys/fs/cgroup/cpu."""
    script = (
        f"echo $$ > {group}/cgroup.procs && exec unshare --mount sh -c "
        f'\'mount --bind {group} {HIERARCHY} && exec "$@"\' sh "$@"'
    )
    done = subprocess.run(
        ["sh", "-c", script, "sh", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_one_cpu_limit_gives_one_core_one_helper_and_batches_in_turn(one_cpu: Path) -> None:
    counted = run(
        one_cpu,
        [
            sys.executable,
            "-c",
            "from plano_extproc.cores import available_cores, cpu_limit; "
            "from plano_extproc.extproc.offload import helper_count; "
            "print(cpu_limit(), available_cores(), helper_count(available_cores()))",
        ],
    )
    assert counted.split() == ["1.0", "1", "1"]
    line = run(
        one_cpu,
        [sys.executable, "-m", "plano_extproc", "route", "--explain", "config/plano.yaml"],
        json.dumps(REQUEST) + "\n",
    )
    decision = json.loads(line)
    assert decision["explain"]["batches"] == "in turn"

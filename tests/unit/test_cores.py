"""The cores this process may keep busy: its CPU affinity capped by its cgroup's CPU limit,
shared by the router's threads and the server's big-body helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

from plano_extproc.cores import available_cores, cpu_limit
from plano_extproc.extproc.offload import helper_count

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("files", "limit"),
    [
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 2.0),
        ({"cpu.max": "garbage"}, None),
        ({}, None),
    ],
)
def test_cpu_limit_reads_cgroup_v2_and_v1(
    tmp_path: Path, files: dict[str, str], limit: float | None
) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cpu_limit(tmp_path) == limit


def test_a_cpu_limit_caps_the_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(32)), raising=False)
    monkeypatch.setattr("plano_extproc.cores.cpu_limit", lambda: None)
    assert available_cores() == 32
    monkeypatch.setattr("plano_extproc.cores.cpu_limit", lambda: 1.0)
    assert available_cores() == 1
    monkeypatch.setattr("plano_extproc.cores.cpu_limit", lambda: 0.25)
    assert available_cores() == 1  # never none


@pytest.mark.parametrize(("cores", "helpers"), [(1, 1), (2, 1), (3, 2), (32, 2)])
def test_big_body_helpers_leave_a_core_to_the_server(cores: int, helpers: int) -> None:
    assert helper_count(cores) == helpers

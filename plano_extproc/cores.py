"""The cores this process may keep busy: shared by the router (its onnxruntime threads) and
the ext_proc server (its big-body helpers). ``os.cpu_count``, ``sched_getaffinity`` and psutil
all ignore a container's CPU limit, so the cgroup's quota is read here."""

from __future__ import annotations

import os
from pathlib import Path


def cpu_limit(cgroup: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU limit of this process's cgroup (a container's ``resources.limits.cpu``), in
    cores; None when there is none or it cannot be read. cgroup v2's ``cpu.max`` ("QUOTA
    PERIOD", or "max PERIOD" for none), else v1's ``cpu.cfs_quota_us`` over
    ``cpu.cfs_period_us`` (-1 for none)."""
    try:
        v2 = cgroup / "cpu.max"
        if v2.is_file():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        quota_us = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def available_cores() -> int:
    """The whole cores this process may keep busy: its CPU affinity, capped by its cgroup's
    CPU limit (a pod on a 32-core node with a limit of one CPU has one), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count() or 1
    limit = cpu_limit()
    if limit is not None:
        cores = min(cores, int(limit))
    return max(1, cores)

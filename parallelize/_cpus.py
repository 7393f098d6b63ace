"""How many CPUs this process may use: its affinity mask, further limited by a
cgroup CPU quota (a container given 2 CPUs on a 64-core host may use 2).

The quota is read from the cgroup files of this process and of every cgroup above
it, cgroup v2 (`cpu.max`) or v1 (`cpu.cfs_quota_us` / `cpu.cfs_period_us`), and
the smallest applies, rounded up. `root` lets tests point at a fake file tree.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["cgroup_cpu_quota", "usable_cpus"]


def usable_cpus(root: str = "/") -> int:
    """CPUs in this process's affinity mask, limited by a cgroup quota; at least 1."""
    affinity = getattr(os, "sched_getaffinity", None)
    cpus = len(affinity(0)) if affinity is not None else os.cpu_count() or 1
    quota = cgroup_cpu_quota(root)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def cgroup_cpu_quota(root: str = "/") -> float | None:
    """The CPUs' worth of time the cgroup quota allows (1.5 for 150 ms per 100 ms),
    or None without a quota (or off Linux)."""
    base = Path(root)
    try:
        lines = (base / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    quotas: list[float] = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2: "0::/path"
            quotas += _walk(base / "sys/fs/cgroup", path, _v2_quota)
        elif "cpu" in controllers.split(","):
            for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
                quotas += _walk(base / "sys/fs/cgroup" / mount, path, _v1_quota)
    return min(quotas) if quotas else None


def _walk(mount: Path, path: str, read: Callable[[Path], float | None]) -> list[float]:
    """The quotas found in the cgroup at `path` under `mount` and in each above it.

    Inside a container the cgroup's path is often not visible under the mount,
    whose top is then the container's own cgroup: that top is read as well.
    """
    found: list[float] = []
    parts = [part for part in path.split("/") if part]
    for depth in range(len(parts), -1, -1):
        quota = read(mount.joinpath(*parts[:depth]))
        if quota is not None:
            found.append(quota)
    return found


def _v2_quota(directory: Path) -> float | None:
    """`cpu.max` holds "<quota> <period>" in microseconds, quota "max" for none."""
    try:
        quota, period = (directory / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else _ratio(quota, period)


def _v1_quota(directory: Path) -> float | None:
    """`cpu.cfs_quota_us` is -1 for no quota; `cpu.cfs_period_us` its period."""
    try:
        quota = (directory / "cpu.cfs_quota_us").read_text().strip()
        period = (directory / "cpu.cfs_period_us").read_text().strip()
    except OSError:
        return None
    return _ratio(quota, period)


def _ratio(quota: str, period: str) -> float | None:
    try:
        value, every = int(quota), int(period)
    except ValueError:
        return None
    return value / every if value > 0 and every > 0 else None

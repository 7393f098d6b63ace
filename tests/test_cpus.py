"""Usable CPUs (API.md section 7): the affinity mask, limited by a cgroup CPU quota.

Each case builds a fake `/proc/self/cgroup` and `/sys/fs/cgroup` tree, as a
container under cgroup v2 or v1 shows them, and points `usable_cpus` at it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from parallelize._cpus import cgroup_cpu_quota, usable_cpus

HOST_CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def fake_tree(root: Path, cgroup: str, files: dict[str, str]) -> str:
    """Write `/proc/self/cgroup` with `cgroup` and each of `files` under `root`."""
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text(cgroup)
    for name, text in files.items():
        path = root / "sys/fs/cgroup" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(root)


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({"cpu.max": "200000 100000\n"}, 2.0),
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu.max": "max 100000\n"}, None),
        ({}, None),
        # The process's own cgroup and the one above it: the smaller quota holds.
        ({"cpu.max": "400000 100000", "app/cpu.max": "100000 100000"}, 1.0),
        ({"cpu.max": "100000 100000", "app/cpu.max": "max 100000"}, 1.0),
    ],
)
def test_cgroup_v2_quota(tmp_path: Path, files: dict[str, str], quota: float | None) -> None:
    root = fake_tree(tmp_path, "0::/app\n", files)
    assert cgroup_cpu_quota(root) == quota


@pytest.mark.parametrize("mount", ["cpu", "cpu,cpuacct"])
@pytest.mark.parametrize(
    ("quota_us", "period_us", "quota"),
    [("300000", "100000", 3.0), ("50000", "100000", 0.5), ("-1", "100000", None)],
)
def test_cgroup_v1_quota(
    tmp_path: Path, mount: str, quota_us: str, period_us: str, quota: float | None
) -> None:
    files = {f"{mount}/cpu.cfs_quota_us": quota_us, f"{mount}/cpu.cfs_period_us": period_us}
    root = fake_tree(tmp_path, f"5:memory:/x\n3:{mount}:/\n2:cpuset:/\n", files)
    assert cgroup_cpu_quota(root) == quota


def test_a_quota_rounds_up_and_never_exceeds_the_affinity(tmp_path: Path) -> None:
    half = fake_tree(tmp_path / "half", "0::/\n", {"cpu.max": "50000 100000"})
    assert usable_cpus(half) == 1
    many = fake_tree(tmp_path / "many", "0::/\n", {"cpu.max": "6400000 100000"})
    assert usable_cpus(many) == HOST_CPUS
    if HOST_CPUS and HOST_CPUS > 1:
        one_and_a_bit = fake_tree(tmp_path / "odd", "0::/\n", {"cpu.max": "110000 100000"})
        assert usable_cpus(one_and_a_bit) == 2


def test_no_cgroup_files_means_the_affinity(tmp_path: Path) -> None:
    assert usable_cpus(str(tmp_path)) == HOST_CPUS
    assert cgroup_cpu_quota(str(tmp_path)) is None


def test_the_default_workers_follow_a_quota(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process backend's default `workers` is the usable CPUs, quota included."""
    from parallelize import _cpus
    from parallelize._settings import Settings
    from parallelize.backends import process

    root = fake_tree(tmp_path, "0::/\n", {"cpu.max": "100000 100000"})
    monkeypatch.setattr(process, "usable_cpus", lambda: _cpus.usable_cpus(root))
    assert process.ProcessExecutor(Settings()).workers == 1

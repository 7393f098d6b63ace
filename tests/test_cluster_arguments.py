"""Extra arguments reach a cluster once per call (API.md section 7), on Dask and Ray.

A large extra argument goes to the cluster once (`Client.scatter`, `ray.put`) and
every task of the call refers to that one object; a small one rides along with each
task. Checked by watching what the backend hands the cluster.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest

from parallelize import parallel
from parallelize.backends import _remote

pytestmark = pytest.mark.timeout(120)

BIG = 2 * _remote.SHARED_JOB_BYTES


def pick(x: int, table: bytes) -> int:
    return table[x * 97 % len(table)] + len(table)


def watch_cluster(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """Record each `_share` and the job each task was submitted with."""
    seen: dict[str, list[Any]] = {"shared": [], "jobs": []}
    for name, class_name in (("dask", "DaskExecutor"), ("ray", "RayExecutor")):
        cls = getattr(pytest.importorskip(f"parallelize.backends.{name}"), class_name)
        share, submit = cls._share, cls._submit_task

        def spy_share(self: Any, job: Any, share: Any = share) -> Any:
            seen["shared"].append(share(self, job))
            return seen["shared"][-1]

        def spy_submit(self: Any, job: Any, items: list[Any], submit: Any = submit) -> Any:
            seen["jobs"].append(job)
            return submit(self, job, items)

        monkeypatch.setattr(cls, "_share", spy_share)
        monkeypatch.setattr(cls, "_submit_task", spy_submit)
    return seen


def test_a_large_argument_goes_to_dask_or_ray_once_per_call(
    cluster_settings: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = watch_cluster(monkeypatch)
    table = bytes(range(256)) * (BIG // 256)
    function = parallel(**cluster_settings, chunksize=2)(pick)
    assert function(range(20), table) == [pick(x, table) for x in range(20)]
    assert len(seen["shared"]) == 1
    assert len(seen["jobs"]) == 10
    assert all(job is seen["shared"][0] for job in seen["jobs"])


def test_a_kept_cluster_call_gets_its_own_arguments_on_dask_or_ray(
    cluster_settings: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = watch_cluster(monkeypatch)
    function = parallel(**cluster_settings, keep_alive=True)(pick)
    try:
        for fill in (b"a", b"b"):
            table = fill * BIG
            assert function(range(6), table) == [pick(x, table) for x in range(6)]
    finally:
        function.close()
    assert len(seen["shared"]) == 2


def test_a_small_argument_rides_with_each_task_on_dask_or_ray(
    cluster_settings: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = watch_cluster(monkeypatch)
    assert parallel(**cluster_settings)(pick)(range(4), b"xyz") == [
        pick(x, b"xyz") for x in range(4)
    ]
    assert seen["shared"] == []
    assert all(isinstance(job, bytes) for job in seen["jobs"])


def where_it_is(x: int, table: Any) -> tuple[int, int]:
    """This worker's pid and the address of the task's array, which is kept alive in
    the worker: a copy made for each task could then not reuse the last one's memory."""
    kept = sys.__dict__.setdefault("parallelize_test_tables", [])
    kept.append(table)
    return os.getpid(), table.ctypes.data


def test_tasks_rebuild_a_large_array_on_the_clusters_own_copy(
    cluster_settings: dict[str, Any],
) -> None:
    """A numpy argument travels out of band: each task's array is built on the buffer
    the cluster stores, not unpickled into a copy of its own, task after task."""
    np = pytest.importorskip("numpy")
    table = np.arange(BIG, dtype=np.float64)
    seen = parallel(**cluster_settings, chunksize=1)(where_it_is)(range(12), table)
    by_worker: dict[int, set[int]] = {}
    for pid, address in seen:
        by_worker.setdefault(pid, set()).add(address)
    assert max(sum(pid == p for p, _ in seen) for pid in by_worker) >= 2
    assert all(len(addresses) == 1 for addresses in by_worker.values()), by_worker

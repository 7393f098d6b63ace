"""The Ray backend: each chunk is a Ray task.

It uses the connected Ray cluster as the user configured it, or starts a local Ray
for the call, private to the caller's user (`_local_ray`), which it shuts down when
the call ends (or at `close()` with `keep_alive=True`).
"""

from __future__ import annotations

from typing import Any

import ray

from .._settings import Settings
from . import _local_ray
from ._remote import ClusterExecutor, SharedJob, run_chunk

__all__ = ["RayExecutor", "create"]


class RayExecutor(ClusterExecutor):
    """Chunks as Ray object refs, collected with `ray.wait`."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._local_ray: _local_ray.LocalRay | None = None  # the Ray we started, if any
        # Our runner counts `retries` itself: no retry by Ray.
        self._task: Any = ray.remote(max_retries=0)(run_chunk)

    def _connect(self) -> int:
        if not ray.is_initialized():
            self._local_ray = _local_ray.start(num_cpus=self._settings.workers)
        return max(1, int(ray.cluster_resources().get("CPU", 1)))

    def _share(self, job: SharedJob) -> Any:
        return ray.put(job)

    def _unshare(self, shared: Any) -> None:
        """Nothing to do: Ray frees the object once no reference to it is left."""

    def _submit_task(self, job: Any, items: list[Any]) -> Any:
        return self._task.remote(job, items)

    def _wait_any(self, futures: list[Any]) -> list[Any]:
        ray.wait(futures, num_returns=1)
        done, _ = ray.wait(futures, num_returns=len(futures), timeout=0)
        return list(done)

    def _result(self, future: Any) -> Any:
        return ray.get(future)

    def _is_worker_lost(self, error: BaseException) -> bool:
        lost = (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError)
        return isinstance(error, lost)

    def _cancel(self, futures: list[Any]) -> None:
        """Leave the call's last tasks to finish on the cluster; the call does not wait.

        `ray.cancel` races a task completing: the driver then aborts in Ray's task
        manager ("Tried to complete task that was not pending"), taking the caller's
        process with it, and `force=True` also kills the worker some time later, maybe
        while it runs a task of the next call. At most `tasks_per_worker` chunks per
        worker are in flight, so little work is left behind.
        """

    def shutdown(self) -> None:
        if self._local_ray is not None:  # only the Ray this executor started
            local_ray, self._local_ray = self._local_ray, None
            self._connected = False
            local_ray.shutdown()


def create(settings: Settings) -> RayExecutor:
    return RayExecutor(settings)

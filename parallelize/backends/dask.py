"""The Dask backend: each chunk is a task on a `dask.distributed` cluster.

It uses the `Client` given as `backend`, else the active client
(`distributed.get_client()`), as the user configured it; else a `LocalCluster` of
`workers` processes started for the call (kept between calls with `keep_alive=True`).

A cluster it starts is private (API.md section 6): scheduler, nannies and workers
listen on 127.0.0.1 only, no dashboard runs, and every connection is TLS with
credentials made for this cluster (`Security.temporary()`), held in memory, so a
client without them is refused.
"""

from __future__ import annotations

from typing import Any

import dask
import distributed

from .._settings import Settings
from ._remote import ClusterExecutor, SharedJob, run_chunk

__all__ = ["DaskExecutor", "create"]

# The one interface a cluster we start listens on.
LOOPBACK = "127.0.0.1"


def _cluster_credentials() -> Any:
    """A self-signed key and certificate for every role of one cluster, in memory."""
    try:
        return distributed.Security.temporary()
    except ImportError as exc:  # Security.temporary needs `cryptography`
        raise ImportError(
            'backend="dask" needs `cryptography` for the TLS of the cluster it starts: '
            'pip install "parallelize[dask]"'
        ) from exc


def _active_client() -> Any:
    try:
        return distributed.get_client()
    except ValueError:  # no client is running
        return None


class DaskExecutor(ClusterExecutor):
    """Chunks as Dask futures, collected with `distributed.wait(FIRST_COMPLETED)`."""

    # Dask places queued tasks on the workers themselves, and a dying worker fails
    # every task it holds: one task per worker keeps a death to the item it ran.
    tasks_per_worker = 1

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._client: Any = settings.backend if not isinstance(settings.backend, str) else None
        self._cluster: Any = None

    def _connect(self) -> int:
        self._client = self._client or _active_client()
        if self._client is None:
            from .._cpus import usable_cpus

            # Our runner counts `retries` itself, so a task whose worker died is
            # reported at once (allowed-failures 0), and each worker holds only the
            # task it runs (saturation 1.0), so a death can only be that task's.
            config = {
                "distributed.scheduler.allowed-failures": 0,
                "distributed.scheduler.worker-saturation": 1.0,
            }
            with dask.config.set(config):
                self._cluster = distributed.LocalCluster(
                    n_workers=self._settings.workers or usable_cpus(),
                    threads_per_worker=1,
                    processes=True,
                    host=LOOPBACK,
                    scheduler_port=0,
                    dashboard_address=None,  # none; workers start none unless asked
                    security=_cluster_credentials(),  # and with it, tls://
                )
                self._client = distributed.Client(self._cluster)
        threads: dict[str, int] = self._client.nthreads()
        return max(1, sum(threads.values()))

    def _share(self, job: SharedJob) -> Any:
        return self._client.scatter(job, hash=False)

    def _unshare(self, shared: Any) -> None:
        shared.release()

    def _submit_task(self, job: Any, items: list[Any]) -> Any:
        return self._client.submit(run_chunk, job, items, pure=False)

    def _wait_any(self, futures: list[Any]) -> list[Any]:
        return list(distributed.wait(futures, return_when="FIRST_COMPLETED").done)

    def _result(self, future: Any) -> Any:
        return future.result()

    def _is_worker_lost(self, error: BaseException) -> bool:
        return isinstance(error, distributed.KilledWorker)

    def _cancel(self, futures: list[Any]) -> None:
        self._client.cancel(futures)

    def shutdown(self) -> None:
        if self._cluster is not None:  # only what this executor started
            self._client.close()
            self._cluster.close()
            self._cluster = self._client = None
            self._connected = False


def create(settings: Settings) -> DaskExecutor:
    return DaskExecutor(settings)

"""W9's peers: each library passing the extra argument `table` in its documented way.

W9's item is `f(i, table)`. Each class here is the W9 form of a peer of peers.py (the
registry builds it when a session has a `shared` argument), reusing that peer's
imports and pool life-cycle; only the way the table reaches the workers differs. The
per-item forms (`apply_async`, the executor's chunksize=1, `process_map`, pebble)
have no W9 form: they would send the 200 MB table with every one of the 200 items.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Sequence
from typing import Any

from . import tasks
from .peers import Dask, FuturesMapChunked, Joblib, Mpire, PoolMap, Serial, _Peer, _StdlibPool
from .session import Setup, mp_context, pool_map_chunksize

__all__ = ["SHARED_PEERS", "start_local_ray"]


class SharedSerial(Serial):
    """`[f(i, table) for i in items]`: the reference, not a peer."""

    def __init__(self, setup: Setup) -> None:
        super().__init__(setup)
        self.table = setup.shared

    def map(self, items: Sequence[Any]) -> list[Any]:
        f, table = self.func, self.table
        return [f(i, table) for i in items]


class SharedPoolMap(PoolMap):
    """`Pool(w).map(functools.partial(f, table=table), items)`: the table in every chunk."""

    def __init__(self, setup: Setup) -> None:
        super().__init__(setup)
        self.table = setup.shared

    def map(self, items: Sequence[Any]) -> list[Any]:
        return list(self.pool.map(functools.partial(self.func, table=self.table), items))


class PoolInitializer(_StdlibPool):
    """`Pool(w, initializer=store, initargs=(table,))`, then `pool.map(f_global, items)`.

    The by-hand idiom: each worker keeps the table in a module global once, at its
    start (a forked worker inherits it for free; a spawned one gets it pickled).
    """

    def __init__(self, setup: Setup) -> None:
        super().__init__(setup)
        self.table = setup.shared

    def open(self, items: Sequence[Any]) -> None:
        context = mp_context(self.start_method)
        self.pool = context.Pool(
            self.workers, initializer=tasks.store_table, initargs=(self.table,)
        )

    def map(self, items: Sequence[Any]) -> list[Any]:
        return list(self.pool.map(tasks.stored_table_sum, items))


class SharedFuturesMapChunked(FuturesMapChunked):
    """`ProcessPoolExecutor(w).map(partial(f, table=table), items, chunksize=<Pool.map's>)`."""

    def __init__(self, setup: Setup) -> None:
        super().__init__(setup)
        self.table = setup.shared

    def map(self, items: Sequence[Any]) -> list[Any]:
        chunksize = pool_map_chunksize(len(items), self.workers)
        f = functools.partial(self.func, table=self.table)
        return list(self.executor.map(f, items, chunksize=chunksize))


class SharedJoblib(Joblib):
    """`Parallel(n_jobs=w)(delayed(f)(i, table) for i in items)`.

    joblib writes an array argument of over 1 MB to a file once per call and workers
    map it (its automatic memory-mapping), instead of pickling it with every task.
    """

    def __init__(self, setup: Setup) -> None:
        super().__init__(setup)
        self.table = setup.shared

    def map(self, items: Sequence[Any]) -> list[Any]:
        f, table = self.delayed(self.func), self.table
        return list(self.parallel(f(i, table) for i in items))


class SharedMpire(Mpire):
    """`WorkerPool(n_jobs=w, shared_objects=table).map(f, items)`; f gets the table first."""

    def __init__(self, setup: Setup) -> None:
        super().__init__(setup)
        self.table = setup.shared

    def open(self, items: Sequence[Any]) -> None:
        start_method = self.start_method or "fork"
        self.pool = self.pool_class(
            n_jobs=self.workers, start_method=start_method, shared_objects=self.table
        )

    def map(self, items: Sequence[Any]) -> list[Any]:
        return list(self.pool.map(tasks.table_first_sum, items))


class SharedDask(Dask):
    """`fut = client.scatter(table, broadcast=True)`, then `client.map(f, items, table=fut)`.

    Both on the clock (once per call); the cluster was started in `open`.
    """

    def __init__(self, setup: Setup) -> None:
        super().__init__(setup)
        self.table = setup.shared

    def map(self, items: Sequence[Any]) -> list[Any]:
        table = self.client.scatter(self.table, broadcast=True)
        futures = self.client.map(self.func, items, table=table, pure=False)
        results: list[Any] = self.client.gather(futures)
        return results


def start_local_ray(workers: int) -> Any:
    """A local Ray of `workers` CPUs, the one parallelize's Ray backend starts for itself.

    Its `ray.init` listens on loopback only, with a token and a session directory of
    its own, and a reaper ends it if the pair is killed. Started here, before a call,
    it is the connected Ray that the backend then uses as it is; `.shutdown()` ends it.
    """
    local_ray = importlib.import_module("parallelize.backends._local_ray")
    return local_ray.start(num_cpus=workers)


class RayPut(_Peer):
    """`ref = ray.put(table)`, then `ray.get([remote_f.remote(i, ref) for i in items])`.

    Ray starts in `open` and ends in `close`, off the clock; `ray.put` is on it.
    """

    def __init__(self, setup: Setup) -> None:
        super().__init__(setup)
        self.table = setup.shared
        self.ray: Any = importlib.import_module("ray")

    def open(self, items: Sequence[Any]) -> None:
        self.local_ray = start_local_ray(self.workers)
        self.remote = self.ray.remote(self.func)

    def map(self, items: Sequence[Any]) -> list[Any]:
        table = self.ray.put(self.table)
        results: list[Any] = self.ray.get([self.remote.remote(i, table) for i in items])
        return results

    def close(self) -> None:
        self.local_ray.shutdown()


SHARED_PEERS: dict[str, Callable[[Setup], _Peer]] = {
    "serial": SharedSerial,
    "pool_map": SharedPoolMap,
    "pool_initializer": PoolInitializer,
    "futures_map_auto": SharedFuturesMapChunked,
    "joblib": SharedJoblib,
    "mpire": SharedMpire,
    "dask": SharedDask,
    "ray": RayPut,
}

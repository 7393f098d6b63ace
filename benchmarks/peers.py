"""The peers of BENCHMARKS.md, each in its idiomatic, documented form.

Every library is imported when its session is built, before any clock (W4 times
`open` too, and imports are never timed), so a pair imports only the one it runs.
`close` ends the pool the way the library's own `with` block would.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from .config import STREAM_CHUNKSIZE
from .session import Setup, mp_context, pool_map_chunksize

__all__ = ["PEERS"]


class _Peer:
    """Holds the setup; subclasses fill in what their library does."""

    ordered = True

    def __init__(self, setup: Setup) -> None:
        self.func = setup.func
        self.workers = setup.workers
        self.start_method = setup.start_method

    def open(self, items: Sequence[Any]) -> None:
        return None

    def map(self, items: Sequence[Any]) -> list[Any]:
        raise NotImplementedError

    def stream(self, items: Iterable[Any]) -> Iterator[Any]:
        raise NotImplementedError(f"{type(self).__name__} has no streaming form")

    def close(self) -> None:
        return None


class Serial(_Peer):
    """`[f(x) for x in items]`."""

    def map(self, items: Sequence[Any]) -> list[Any]:
        f = self.func
        return [f(x) for x in items]

    def stream(self, items: Iterable[Any]) -> Iterator[Any]:
        f = self.func
        return (f(x) for x in items)


class SerialOneBlasThread(Serial):
    """`with threadpool_limits(limits=1): [f(x) for x in items]`: W8's reference.

    The `with` block is entered in `open` and left in `close`, around the timed loop,
    so listing the loaded libraries (what threadpoolctl does on entry) is off the
    clock. threadpoolctl limits only libraries already loaded: numpy, and with it its
    BLAS, is imported first.
    """

    def __init__(self, setup: Setup) -> None:
        super().__init__(setup)
        importlib.import_module("numpy")
        from threadpoolctl import threadpool_limits

        self.threadpool_limits = threadpool_limits

    def open(self, items: Sequence[Any]) -> None:
        self.limits = contextlib.ExitStack()
        self.limits.enter_context(self.threadpool_limits(limits=1))

    def close(self) -> None:
        self.limits.close()


class _StdlibPool(_Peer):
    """`multiprocessing.Pool(w)`: workers start in the constructor, off the clock."""

    def open(self, items: Sequence[Any]) -> None:
        self.pool = mp_context(self.start_method).Pool(self.workers)

    def close(self) -> None:
        self.pool.terminate()  # what `with Pool() as pool:` does on exit


class PoolMap(_StdlibPool):
    """`Pool(w).map(f, items)`; streaming: `Pool.imap`."""

    def map(self, items: Sequence[Any]) -> list[Any]:
        return list(self.pool.map(self.func, items))

    def stream(self, items: Iterable[Any]) -> Iterator[Any]:
        results: Iterator[Any] = self.pool.imap(self.func, items, chunksize=STREAM_CHUNKSIZE)
        return results


class PoolApplyAsyncCallback(_StdlibPool):
    """`pool.apply_async(f, (x,), callback=results.append)` per item, then wait for all."""

    ordered = False

    def map(self, items: Sequence[Any]) -> list[Any]:
        results: list[Any] = []
        handles = [self.pool.apply_async(self.func, (x,), callback=results.append) for x in items]
        for handle in handles:  # a callback runs before its result is marked ready
            handle.wait()
            if not handle.successful():
                handle.get()  # raises the item's exception
        return results


class PoolImapUnordered(_StdlibPool):
    """`Pool(w).imap_unordered(f, items, chunksize=<Pool.map's formula>)`."""

    ordered = False

    def map(self, items: Sequence[Any]) -> list[Any]:
        chunksize = pool_map_chunksize(len(items), self.workers)
        return list(self.pool.imap_unordered(self.func, items, chunksize=chunksize))

    def stream(self, items: Iterable[Any]) -> Iterator[Any]:
        results: Iterator[Any] = self.pool.imap_unordered(
            self.func, items, chunksize=STREAM_CHUNKSIZE
        )
        return results


class FuturesMap(_Peer):
    """`ProcessPoolExecutor(w).map(f, items)`, default chunksize (1)."""

    def __init__(self, setup: Setup) -> None:
        super().__init__(setup)
        from concurrent.futures import ProcessPoolExecutor

        self.executor_class = ProcessPoolExecutor

    def open(self, items: Sequence[Any]) -> None:
        context = mp_context(self.start_method)
        self.executor = self.executor_class(max_workers=self.workers, mp_context=context)

    def map(self, items: Sequence[Any]) -> list[Any]:
        return list(self.executor.map(self.func, items))

    def close(self) -> None:
        self.executor.shutdown()  # what `with ProcessPoolExecutor() as ex:` does


class FuturesMapChunked(FuturesMap):
    """`ProcessPoolExecutor(w).map(f, items, chunksize=<Pool.map's formula>)`."""

    def map(self, items: Sequence[Any]) -> list[Any]:
        chunksize = pool_map_chunksize(len(items), self.workers)
        return list(self.executor.map(self.func, items, chunksize=chunksize))

    def stream(self, items: Iterable[Any]) -> Iterator[Any]:
        return self.executor.map(self.func, items, chunksize=STREAM_CHUNKSIZE)


class Joblib(_Peer):
    """`Parallel(n_jobs=w)(delayed(f)(x) for x in items)` (loky: workers start lazily).

    loky keeps its workers for the next call in the same process; `close` ends them,
    so each repeat pays the start-up the timing rules give to lazily started pools.
    loky starts workers its own way, whatever the multiprocessing start method.
    """

    return_as = "list"
    stream_as = "generator"

    def __init__(self, setup: Setup) -> None:
        super().__init__(setup)
        from joblib import Parallel, delayed
        from joblib.externals.loky import get_reusable_executor

        self.parallel_class = Parallel
        self.delayed = delayed
        self.get_reusable_executor = get_reusable_executor

    def open(self, items: Sequence[Any]) -> None:
        self.parallel = self.parallel_class(n_jobs=self.workers, return_as=self.return_as)
        self.streaming = self.parallel_class(n_jobs=self.workers, return_as=self.stream_as)

    def map(self, items: Sequence[Any]) -> list[Any]:
        f = self.delayed(self.func)
        return list(self.parallel(f(x) for x in items))

    def stream(self, items: Iterable[Any]) -> Iterator[Any]:
        f = self.delayed(self.func)
        results: Iterator[Any] = self.streaming(f(x) for x in items)
        return results

    def close(self) -> None:
        # Asking loky for an executor with settings other than joblib's shuts joblib's
        # down (waiting for its workers) and returns a new one with no worker yet.
        self.get_reusable_executor().shutdown(wait=True)


class JoblibUnordered(Joblib):
    """`Parallel(n_jobs=w, return_as="generator_unordered")(...)`."""

    ordered = False
    return_as = "generator_unordered"
    stream_as = "generator_unordered"


class Mpire(_Peer):
    """`WorkerPool(n_jobs=w).map(f, items)`; streaming: `.imap` (workers start in the call)."""

    def __init__(self, setup: Setup) -> None:
        super().__init__(setup)
        from mpire.pool import WorkerPool

        self.pool_class = WorkerPool

    def open(self, items: Sequence[Any]) -> None:
        start_method = self.start_method or "fork"
        self.pool = self.pool_class(n_jobs=self.workers, start_method=start_method)

    def map(self, items: Sequence[Any]) -> list[Any]:
        return list(self.pool.map(self.func, items))

    def stream(self, items: Iterable[Any]) -> Iterator[Any]:
        return self.pool.imap(self.func, items, chunk_size=STREAM_CHUNKSIZE)

    def close(self) -> None:
        self.pool.terminate()  # what `with WorkerPool() as pool:` does on exit


class MpireUnordered(Mpire):
    """`WorkerPool(n_jobs=w).map_unordered(f, items)`; streaming: `.imap_unordered`."""

    ordered = False

    def map(self, items: Sequence[Any]) -> list[Any]:
        return list(self.pool.map_unordered(self.func, items))

    def stream(self, items: Iterable[Any]) -> Iterator[Any]:
        return self.pool.imap_unordered(self.func, items, chunk_size=STREAM_CHUNKSIZE)


class TqdmProcessMap(_Peer):
    """`process_map(f, items, max_workers=w)`: makes its own executor inside the call.

    The bar goes to a null stream, like parallelize's `progress=True` rows; tqdm's
    warning that the default chunksize=1 is slow is silenced (that cost is measured).
    """

    def __init__(self, setup: Setup) -> None:
        super().__init__(setup)
        from tqdm import TqdmWarning
        from tqdm.contrib.concurrent import process_map

        warnings.filterwarnings("ignore", category=TqdmWarning)
        self.process_map = process_map

    def open(self, items: Sequence[Any]) -> None:
        self.null = open(os.devnull, "w")  # noqa: SIM115 -- closed in close()

    def map(self, items: Sequence[Any]) -> list[Any]:
        options: dict[str, Any] = {"max_workers": self.workers, "file": self.null}
        if self.start_method is not None:
            options["mp_context"] = mp_context(self.start_method)
        return list(self.process_map(self.func, items, **options))

    def close(self) -> None:
        self.null.close()


class Pebble(_Peer):
    """`ProcessPool(max_workers=w).map(f, items)`, its default chunksize (1)."""

    def __init__(self, setup: Setup) -> None:
        super().__init__(setup)
        from pebble import ProcessPool

        self.pool_class = ProcessPool

    def open(self, items: Sequence[Any]) -> None:
        context = mp_context(self.start_method)
        self.pool: Any = self.pool_class(max_workers=self.workers, context=context)

    def map(self, items: Sequence[Any]) -> list[Any]:
        return list(self.pool.map(self.func, items).result())

    def stream(self, items: Iterable[Any]) -> Iterator[Any]:
        results: Iterator[Any] = self.pool.map(
            self.func, items, chunksize=STREAM_CHUNKSIZE
        ).result()
        return results

    def close(self) -> None:
        self.pool.close()  # what `with ProcessPool() as pool:` does on exit
        self.pool.join()


def start_local_cluster(workers: int) -> tuple[Any, Any]:
    """A dask `LocalCluster` of `workers` single-threaded processes on loopback, and its client."""
    import logging

    from dask import distributed

    cluster_class: Any = distributed.LocalCluster
    client_class: Any = distributed.Client
    cluster = cluster_class(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    return cluster, client_class(cluster)


class Dask(_Peer):
    """`client.gather(client.map(f, items))` on a `LocalCluster` started off the clock.

    `pure=False`: every repeat computes again instead of finding last repeat's keys.
    """

    def __init__(self, setup: Setup) -> None:
        super().__init__(setup)
        importlib.import_module("dask.distributed")

    def open(self, items: Sequence[Any]) -> None:
        self.cluster, self.client = start_local_cluster(self.workers)

    def map(self, items: Sequence[Any]) -> list[Any]:
        results: list[Any] = self.client.gather(self.client.map(self.func, items, pure=False))
        return results

    def close(self) -> None:
        self.client.close()
        self.cluster.close()


PEERS: dict[str, Callable[[Setup], _Peer]] = {
    "serial": Serial,
    "serial_one_blas_thread": SerialOneBlasThread,
    "pool_map": PoolMap,
    "pool_apply_async_cb": PoolApplyAsyncCallback,
    "pool_imap_unordered": PoolImapUnordered,
    "futures_map": FuturesMap,
    "futures_map_auto": FuturesMapChunked,
    "joblib": Joblib,
    "joblib_unordered": JoblibUnordered,
    "mpire": Mpire,
    "mpire_unordered": MpireUnordered,
    "tqdm_process_map": TqdmProcessMap,
    "pebble": Pebble,
    "dask": Dask,
}

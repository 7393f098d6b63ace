"""parallelize as BENCHMARKS.md measures it: `parallel(workers=w, ordered=...)(f)(items)`.

cold: a fresh decorated function inside the timed call, so its workers start (and
end) on the clock. warm: `keep_alive=True`, one untimed call first (over the first
few items of the input: enough to start every worker), `.close()` after the clock.
`.iter()` rows stream, cold. W9 passes its table as an extra argument to both calls,
`function(items, table)`; its cluster rows run on a dask cluster or a Ray started
in `open`.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal, TextIO

from .peers import start_local_cluster
from .session import Setup
from .shared_peers import start_local_ray

__all__ = ["Cluster", "ParallelizeSession"]

Cluster = Literal["dask", "ray"]

# The untimed first call of a warm row: two items a worker start every worker
# without making a slow workload (W2, W3) pay its whole input twice.
WARM_UP_ITEMS_PER_WORKER = 2


class ParallelizeSession:
    """One parallelize variant: ordered or not, cold or warm, process, dask or Ray backend."""

    def __init__(
        self, setup: Setup, *, ordered: bool, warm: bool, cluster: Cluster | None = None
    ) -> None:
        from parallelize import parallel  # before any clock, like every peer's library

        if cluster == "dask":
            importlib.import_module("dask.distributed")
        if cluster == "ray":
            importlib.import_module("ray")

        self.parallel: Any = parallel
        self.setup = setup
        self.ordered = ordered
        self.warm = warm
        self.backend = cluster
        # W9: `function(items, table)`; every other workload `function(items)`.
        self.extra: tuple[Any, ...] = () if setup.shared is None else (setup.shared,)
        self.kept: Any = None
        self.null: TextIO | None = None
        self.cluster: Any = None
        self.client: Any = None
        self.local_ray: Any = None

    def _decorate(self) -> Any:
        settings: dict[str, Any] = {
            "workers": self.setup.workers,
            "ordered": self.ordered,
            "keep_alive": self.warm,
        }
        if self.setup.start_method is not None:
            settings["start_method"] = self.setup.start_method
        if self.null is not None:
            settings["progress"] = {"file": self.null}
        if self.client is not None:
            settings["backend"] = self.client
        if self.local_ray is not None:
            settings["backend"] = "ray"  # the Ray `open` started: the connected one
        return self.parallel(**settings)(self.setup.func)

    def open(self, items: Sequence[Any]) -> None:
        if self.setup.progress:
            self.null = open(os.devnull, "w")  # noqa: SIM115 -- closed in close()
        if self.backend == "dask":
            self.cluster, self.client = start_local_cluster(self.setup.workers)
        if self.backend == "ray":
            self.local_ray = start_local_ray(self.setup.workers)
        if self.warm:
            self.kept = self._decorate()
            self.kept(items[: WARM_UP_ITEMS_PER_WORKER * self.setup.workers], *self.extra)

    def map(self, items: Sequence[Any]) -> list[Any]:
        function = self.kept if self.warm else self._decorate()
        results: list[Any] = function(items, *self.extra)
        return results

    def stream(self, items: Iterable[Any]) -> Iterator[Any]:
        function = self.kept if self.warm else self._decorate()
        results: Iterator[Any] = function.iter(items)
        return results

    def close(self) -> None:
        if self.kept is not None:
            self.kept.close()
            self.kept = None
        if self.null is not None:
            self.null.close()
            self.null = None
        if self.client is not None:
            self.client.close()
            self.cluster.close()
            self.client = self.cluster = None
        if self.local_ray is not None:
            self.local_ray.shutdown()
            self.local_ray = None

"""Every row of the table: its name, how to build it, and which workloads it runs.

A row runs the workloads BENCHMARKS.md gives it: W4 under spawn has no joblib row
(loky starts workers its own way), W6 only rows that stream lazily, dask only W2 and
W9-cluster, W7 only parallelize, the serial loop with one BLAS thread only W8. W9
runs the peers BENCHMARKS.md names for it, in their W9 forms (shared_peers.py), and
a row of its own, the by-hand `Pool(initializer=...)`; joblib runs both W9 columns,
since a program under either start method could use it instead (loky starts its
workers the same way in both). `--impl` selects rows by name or by name prefix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from .ours import Cluster, ParallelizeSession
from .peers import PEERS
from .session import Session, Setup
from .shared_peers import SHARED_PEERS

__all__ = ["IMPLEMENTATIONS", "Implementation", "find", "select_implementations"]

MAPS = frozenset({"W1", "W2", "W3", "W5", "W8"})
STARTUP = frozenset({"W4-fork", "W4-spawn"})
STREAM = frozenset({"W6", "W6-small", "W6s"})
SHARED = frozenset({"W9-fork", "W9-spawn"})
CLUSTER = frozenset({"W9-cluster"})


@dataclasses.dataclass(frozen=True)
class Implementation:
    """One row: a peer or a parallelize variant."""

    name: str
    make: Callable[[Setup], Session]
    workloads: frozenset[str]
    ours: bool = False  # a parallelize row: highlighted, never "the best peer"
    warm: bool = False  # W4 then times only the call (the pool already runs)
    # The workloads --quick runs this row on, unless --impl names it (None: all of its
    # workloads), so that --quick stays within its 60 s budget: rows whose library
    # costs a second or more a pair in imports and start-up (joblib, mpire, dask, Ray) get
    # a smoke test only, or none for an unordered twin; per-item forms of a library
    # measured in another row (apply_async, the executor's chunksize=1) run W1 only.
    quick: frozenset[str] | None = None
    # A row the bar holds parallelize to, whatever its speed (dask's own client.map and
    # Ray's by-hand ray.put for the cluster backends, the serial loop with one BLAS
    # thread for W8): it runs in every round, like the rows compared with it.
    reference: bool = False

    def runs(self, workload: str, *, quick: bool) -> bool:
        if workload not in self.workloads:
            return False
        return not quick or self.quick is None or workload in self.quick


SMOKE = frozenset({"W1", "W6"})  # a map call and a streaming call
# joblib also runs W8 in --quick: it limits BLAS threads in its workers, and W8's bar
# names it as the peer to beat there.
JOBLIB_QUICK = SMOKE | {"W8"}
ONLY_W1 = frozenset({"W1"})  # a slower form of a library measured in another row
NONE: frozenset[str] = frozenset()


def _peer(
    name: str,
    workloads: frozenset[str],
    quick: frozenset[str] | None = None,
    *,
    reference: bool = False,
) -> Implementation:
    plain, shared = PEERS.get(name), SHARED_PEERS.get(name)

    def make(setup: Setup) -> Session:
        """The peer's W9 form when the setup has a shared argument, else its plain one."""
        form = plain if setup.shared is None else shared
        if form is None:
            what = "plain" if setup.shared is None else "W9 (shared argument)"
            raise ValueError(f"{name} has no {what} form")
        return form(setup)

    return Implementation(name, make, workloads, quick=quick, reference=reference)


def _ours(
    name: str,
    workloads: frozenset[str],
    *,
    ordered: bool,
    warm: bool,
    cluster: Cluster | None = None,
    quick: frozenset[str] | None = None,
) -> Implementation:
    def make(setup: Setup) -> Session:
        return ParallelizeSession(setup, ordered=ordered, warm=warm, cluster=cluster)

    return Implementation(name, make, workloads, ours=True, warm=warm, quick=quick)


IMPLEMENTATIONS: tuple[Implementation, ...] = (
    _peer("serial", MAPS | STREAM | SHARED),
    _peer("serial_one_blas_thread", frozenset({"W8"}), reference=True),
    _peer("pool_map", MAPS | STARTUP | STREAM | SHARED),
    _peer("pool_initializer", SHARED),
    _peer("pool_apply_async_cb", MAPS | STARTUP, quick=ONLY_W1),
    _peer("pool_imap_unordered", MAPS | STARTUP | STREAM),
    _peer("futures_map", MAPS | STARTUP, quick=ONLY_W1),
    _peer("futures_map_auto", MAPS | STARTUP | STREAM | SHARED),
    _peer("joblib", MAPS | {"W4-fork"} | STREAM | SHARED, quick=JOBLIB_QUICK),
    _peer("joblib_unordered", MAPS | {"W4-fork"}, quick=NONE),
    _peer("mpire", MAPS | STARTUP | STREAM | SHARED, quick=SMOKE),
    _peer("mpire_unordered", MAPS | STARTUP, quick=NONE),
    _peer("tqdm_process_map", MAPS | STARTUP),
    _peer("pebble", MAPS | STARTUP | STREAM),
    _peer("dask", frozenset({"W2"}) | CLUSTER, quick=NONE, reference=True),
    _peer("ray", CLUSTER, quick=NONE, reference=True),
    _ours("parallelize ordered cold", MAPS | STARTUP | {"W7"} | SHARED, ordered=True, warm=False),
    _ours(
        "parallelize unordered cold", MAPS | STARTUP | {"W7"} | SHARED, ordered=False, warm=False
    ),
    _ours("parallelize ordered warm", MAPS | STARTUP | {"W7"} | SHARED, ordered=True, warm=True),
    _ours("parallelize unordered warm", MAPS | STARTUP | {"W7"} | SHARED, ordered=False, warm=True),
    _ours("parallelize.iter ordered", STREAM, ordered=True, warm=False),
    _ours("parallelize.iter unordered", STREAM, ordered=False, warm=False),
    _ours(
        "parallelize dask backend",
        frozenset({"W2"}) | CLUSTER,
        ordered=True,
        warm=False,
        cluster="dask",
        quick=NONE,
    ),
    _ours(
        "parallelize ray backend",
        CLUSTER,
        ordered=True,
        warm=False,
        cluster="ray",
        quick=NONE,
    ),
)


def _key(name: str) -> str:
    return name.lower().replace(" ", "_").replace("-", "_").replace(".", "_")


def find(name: str) -> Implementation:
    for implementation in IMPLEMENTATIONS:
        if implementation.name == name:
            return implementation
    raise KeyError(name)


def select_implementations(tokens: Sequence[str] | None) -> list[Implementation]:
    """Rows named by `--impl`: a full name or a prefix (`parallelize`, `pool`, `joblib`)."""
    if not tokens:
        return list(IMPLEMENTATIONS)
    wanted = [_key(t) for t in tokens if t.strip()]

    def matches(implementation: Implementation, token: str) -> bool:
        key = _key(implementation.name)
        return key == token or key.startswith(token + "_")

    unknown = [t for t in wanted if not any(matches(i, t) for i in IMPLEMENTATIONS)]
    if unknown:
        known = ", ".join(i.name for i in IMPLEMENTATIONS)
        raise SystemExit(f"--impl: unknown implementation {', '.join(unknown)}; known: {known}")
    return [i for i in IMPLEMENTATIONS if any(matches(i, t) for t in wanted)]

"""W1-W9 as BENCHMARKS.md defines them: inputs, item function and the expected answer.

A `Case` is built in the pair's process before any clock starts (input construction
is never timed). Expected answers are the serial answers, computed here without the
slow part where a closed form exists (W2's loop, W3's sleep); the serial row is
checked against them like every other row. W8 has no closed form: its answer is the
serial loop's, computed in the pair with one BLAS thread. W9's table is built here
too, once per pair: every repeat (and a warm row's untimed first call) gets the same
array object.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

from . import tasks
from .config import W3_WORKERS, W9_TINY_TABLE_BYTES, WORKERS, Mode

__all__ = ["WORKLOADS", "Case", "Workload", "build_case", "check_list", "select_workloads"]

Kind = Literal["map", "startup", "stream", "slow_stream", "progress"]


@dataclasses.dataclass(frozen=True)
class Workload:
    """One column of the table: what is run, on how many workers, timed how."""

    id: str
    title: str
    kind: Kind
    workers: int = WORKERS
    start_method: str | None = None  # None: the platform default (fork on Linux)
    slow: bool = False  # seconds per call: fewer repeats
    # --quick runs this workload on parallelize rows only (W6 1/10 exists for the check
    # that parallelize's memory does not grow with the input; the 60 s budget is tight).
    quick_ours_only: bool = False


WORKLOADS: tuple[Workload, ...] = (
    Workload("W1", "W1 tiny", "map"),
    Workload("W2", "W2 cpu", "map", slow=True),
    Workload("W3", "W3 imbalanced", "map", workers=W3_WORKERS, slow=True),
    Workload("W4-fork", "W4 cold fork", "startup", start_method="fork"),
    Workload("W4-spawn", "W4 cold spawn", "startup", start_method="spawn"),
    Workload("W5", "W5 payload", "map"),
    Workload("W6", "W6 streaming", "stream", slow=True),
    Workload("W6-small", "W6 1/10 input", "stream", slow=True, quick_ours_only=True),
    Workload("W6s", "W6s read-ahead", "slow_stream", slow=True),
    Workload("W7", "W7 progress cost", "progress"),
    Workload("W8", "W8 numeric", "map", slow=True),
    # W9 is timed like W4 (create + call + shutdown; warm rows: the call), both start
    # methods. Its peers copy the table into every chunk or worker (seconds a call at
    # --quick's 20 MB as well), so --quick runs it on parallelize rows only.
    Workload("W9-fork", "W9 shared fork", "startup", start_method="fork", quick_ours_only=True),
    Workload("W9-spawn", "W9 shared spawn", "startup", start_method="spawn", quick_ours_only=True),
    # W9 on a dask LocalCluster or a local Ray, started off the clock: the call is timed.
    Workload("W9-cluster", "W9 shared cluster", "map"),
)


def select_workloads(tokens: Sequence[str] | None) -> list[Workload]:
    """Workloads named by `--only`: `W4` selects W4-fork and W4-spawn, `W6` W6 and W6-small,
    `W9` W9-fork, W9-spawn and W9-cluster."""
    if not tokens:
        return list(WORKLOADS)
    wanted = [t.strip().lower() for t in tokens if t.strip()]
    chosen = [
        w
        for w in WORKLOADS
        if any(w.id.lower() == t or w.id.lower().startswith(t + "-") for t in wanted)
    ]
    unknown = [
        t
        for t in wanted
        if not any(w.id.lower() == t or w.id.lower().startswith(t + "-") for w in WORKLOADS)
    ]
    if unknown:
        known = ", ".join(w.id for w in WORKLOADS)
        raise SystemExit(f"--only: unknown workload {', '.join(unknown)}; known: {known}")
    return chosen


@dataclasses.dataclass
class Case:
    """What one pair runs: the item function, the input and the answer to check."""

    func: Callable[..., Any]
    # Lists are built once per pair; streams get a fresh generator per repeat.
    items: Sequence[Any] | None = None
    stream_length: int = 0
    expected: list[Any] | None = None
    shared: Any = None  # W9: the table, the extra argument of every item
    # W9-fork, W9-spawn: the same call with an 8 KiB table, whose memory growth is the
    # workers' own start-up (the baseline of the memory the table adds).
    tiny: Case | None = None


def build_case(workload: Workload, mode: Mode, w2_loops: int) -> Case:
    """The inputs and expected answer of `workload` in `mode` (before any clock)."""
    wid = workload.id
    if wid in ("W1", "W7"):
        items = list(range(mode.w1_items))
        return Case(tasks.square, items, expected=[x * x for x in items])
    if wid == "W2":
        loops = [w2_loops + k for k in range(mode.w2_items)]
        return Case(tasks.spin, loops, expected=[n * (n - 1) // 2 for n in loops])
    if wid == "W3":
        func = tasks.sleep_item_short if mode.w3_quick_sleeps else tasks.sleep_item
        return Case(func, list(range(10)), expected=list(range(10)))
    if wid.startswith("W4"):
        items = list(range(mode.w4_items))
        return Case(tasks.square, items, expected=[x * x for x in items])
    if wid == "W5":
        arrays = _arrays(mode.w5_arrays, mode.w5_array_bytes)
        return Case(tasks.array_sum, arrays, expected=[tasks.array_sum(a) for a in arrays])
    if wid == "W6":
        return Case(tasks.identity, stream_length=mode.w6_items)
    if wid == "W6-small":
        return Case(tasks.identity, stream_length=mode.w6_small_items)
    if wid == "W6s":
        return Case(tasks.identity, stream_length=mode.w6s_items)
    if wid == "W8":
        seeds = list(range(mode.w8_items))
        return Case(
            tasks.matrix_rounds, seeds, expected=_one_blas_thread(tasks.matrix_rounds, seeds)
        )
    if wid.startswith("W9"):
        items = list(range(mode.w9_items))
        tiny = None if wid == "W9-cluster" else _table_case(_table(W9_TINY_TABLE_BYTES), items)
        return _table_case(_table(mode.w9_table_bytes), items, tiny)
    raise ValueError(f"no such workload: {wid}")


def w3_ideal_seconds(mode: Mode) -> float:
    """W3's greedy-schedule ideal: the longest item plus the one that follows on its worker."""
    scale = tasks.QUICK_SLEEP_SCALE if mode.w3_quick_sleeps else 1.0
    return (tasks.SLEEP_BASE + tasks.SLEEP_STEP) * scale


def _arrays(count: int, nbytes: int) -> list[Any]:
    import numpy as np

    rng = np.random.default_rng(0)
    return [rng.random(nbytes // 8) for _ in range(count)]


def _table(nbytes: int) -> Any:
    import numpy as np

    return np.random.default_rng(0).random(nbytes // 8)


def _table_case(table: Any, items: list[int], tiny: Case | None = None) -> Case:
    """W9's case over `table`: `tasks.table_sum(i, table)` for every item."""
    expected = [tasks.table_sum(i, table) for i in items]
    return Case(tasks.table_sum, items, expected=expected, shared=table, tiny=tiny)


def _one_blas_thread(func: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    """`[func(x) for x in items]` with this process's BLAS limited to one thread.

    OpenBLAS threads spin for a while after a product before they sleep; computed
    with one thread, the answer leaves none of the caller's spinning into the timed
    call, where it would take CPU from the workers.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return [func(x) for x in items]


def check_list(results: Iterable[Any], expected: list[Any], *, ordered: bool) -> str | None:
    """None if `results` is the expected answer (as a multiset when unordered), else why not."""
    got = list(results)
    if len(got) != len(expected):
        return f"wrong answer: {len(got)} results for {len(expected)} items"
    if not ordered:
        got, expected = sorted(got), sorted(expected)
    for index, (a, b) in enumerate(zip(got, expected, strict=True)):
        same = math.isclose(a, b, rel_tol=1e-9) if isinstance(b, float) else a == b
        if not same:
            where = "at index" if ordered else "at sorted position"
            return f"wrong answer {where} {index}: got {a!r:.40}, expected {b!r:.40}"
    return None

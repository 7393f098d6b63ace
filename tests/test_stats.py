"""`f.stats` and `parallelize.CallStats` (API.md section 2), on every backend.

After each call that finished (returned, raised, or an `.iter()` exhausted or
closed): the items that got a result or a final error, the final errors, the
retries, the wall time, the workers replaced, one entry per worker that ran items,
and the 5 slowest items over 1 ms.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import exit_at, fail_first_attempt, square

import parallelize
from parallelize import CallStats, parallel

pytestmark = pytest.mark.timeout(120)

SLOW = {7: 0.3, 3: 0.15}  # item -> seconds it sleeps; the others take microseconds


def maybe_slow(x: int) -> int:
    time.sleep(SLOW.get(x, 0))
    return x


async def maybe_slow_async(x: int) -> int:
    import asyncio

    await asyncio.sleep(SLOW.get(x, 0))
    return x


def fail_on_odd(x: int) -> int:
    if x % 2:
        raise ValueError(x)
    return x


def check_worker_entries(stats: CallStats, items: int) -> None:
    assert stats.per_worker
    assert sum(w.items for w in stats.per_worker) >= items
    assert all(w.items > 0 and w.busy_seconds >= 0 for w in stats.per_worker)


def test_stats_is_none_before_the_first_call() -> None:
    assert parallel(backend="serial")(square).stats is None


def test_a_plain_call(any_settings: dict[str, Any]) -> None:
    f = parallel(**any_settings)(square)
    began = time.perf_counter()
    assert f(range(40)) == [x * x for x in range(40)]
    took = time.perf_counter() - began
    stats = f.stats
    assert isinstance(stats, parallelize.CallStats)
    assert (stats.items, stats.failed, stats.retried, stats.workers_replaced) == (40, 0, 0, 0)
    assert 0 < stats.wall_seconds <= took
    check_worker_entries(stats, 40)
    assert stats.slowest == ()


def test_the_slowest_items_are_named_slowest_first(any_settings: dict[str, Any]) -> None:
    f = parallel(**any_settings)(maybe_slow)
    f(range(20))
    stats = f.stats
    assert stats is not None
    # Other items may pass 1 ms too on a busy machine (a worker's first item), but
    # never the sleeping ones.
    assert [index for index, _ in stats.slowest[:2]] == [7, 3]
    for (index, seconds), expected in zip(stats.slowest, (0.3, 0.15), strict=False):
        assert expected * 0.95 <= seconds < expected + 1.0, (index, seconds)


def test_at_most_five_slowest_items_all_over_a_millisecond(settings: dict[str, Any]) -> None:
    f = parallel(**settings)(time.sleep)
    f([0.02 * k for k in range(10)])  # items 1 to 9 sleep 20 to 180 ms
    stats = f.stats
    assert stats is not None
    assert [index for index, _ in stats.slowest] == [9, 8, 7, 6, 5]
    assert all(seconds > 0.001 for _, seconds in stats.slowest)


def test_an_async_function(settings: dict[str, Any]) -> None:
    f = parallel(**settings)(maybe_slow_async)
    f(range(10))
    stats = f.stats
    assert stats is not None
    assert stats.items == 10
    assert len(stats.per_worker) == 1  # the event loop
    assert [index for index, _ in stats.slowest[:2]] == [7, 3]


def test_failures_and_retries_are_counted(any_settings: dict[str, Any], tmp_path: Path) -> None:
    f = parallel(**any_settings, errors="return")(fail_on_odd)
    f(range(10))
    stats = f.stats
    assert stats is not None
    assert (stats.items, stats.failed, stats.retried) == (10, 5, 0)

    retried = parallel(**any_settings, retries=2)(fail_first_attempt)
    assert retried(range(6), str(tmp_path)) == list(range(6))
    stats = retried.stats
    assert stats is not None
    assert (stats.items, stats.failed, stats.retried) == (6, 0, 6)


def test_a_call_that_raises_has_stats(any_settings: dict[str, Any]) -> None:
    f = parallel(**any_settings)(fail_on_odd)
    with pytest.raises(ValueError):
        f(range(10))
    stats = f.stats
    assert stats is not None
    assert stats.failed == 1


def test_an_iter_closed_early_has_stats(any_settings: dict[str, Any]) -> None:
    f = parallel(**any_settings)(square)
    results = f.iter(range(10_000))
    assert next(results) == 0
    assert f.stats is None  # not finished yet
    results.close()
    stats = f.stats
    assert stats is not None
    assert 1 <= stats.items < 10_000


@pytest.mark.parametrize("how", ["death", "timeout", "max_tasks_per_worker"])
def test_replaced_workers_are_counted(process_settings: dict[str, Any], how: str) -> None:
    if how == "death":  # item 2 ends its worker
        f = parallel(**process_settings, errors="return")(exit_at)
        f(range(8), 2)
    elif how == "timeout":  # items 3 and 7 sleep past it
        f = parallel(**process_settings, errors="return", timeout=0.1)(maybe_slow)
        f(range(8))
    else:
        f = parallel(**process_settings, max_tasks_per_worker=2, chunksize=1)(square)
        f(range(8))
    stats = f.stats
    assert stats is not None
    assert stats.items == 8
    assert stats.workers_replaced >= 1


def test_an_abandoned_thread_is_a_replaced_worker() -> None:
    f = parallel(backend="thread", workers=2, errors="return", timeout=0.1)(maybe_slow)
    f(range(8))
    stats = f.stats
    assert stats is not None
    assert stats.workers_replaced == 2  # items 3 and 7


def test_each_process_is_a_worker(process_settings: dict[str, Any]) -> None:
    f = parallel(**process_settings, chunksize=1)(maybe_slow)
    f(range(12))
    stats = f.stats
    assert stats is not None
    assert len(stats.per_worker) == process_settings["workers"]
    assert sum(w.busy_seconds for w in stats.per_worker) >= 0.45 * 0.95


def test_stats_can_be_read_from_another_thread() -> None:
    f = parallel(backend="thread", workers=2)(square)
    seen: list[CallStats | None] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.append(f.stats)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for _ in range(20):
            f(range(50))
    finally:
        done.set()
        watcher.join()
    assert all(s is None or s.items == 50 for s in seen)

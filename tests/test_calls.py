"""API.md section 2: calling a decorated function, on every backend and start method."""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing.process
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helpers
import numpy as np
import pytest
from bars import GateBar
from leftovers import (
    extra_threads,
    live_children,
    wait_for_no_children,
    wait_for_no_extra_threads,
)

from parallelize import parallel


class Counted:
    """An endless source of 0, 1, 2, ... that counts how many items were drawn."""

    def __init__(self) -> None:
        self.drawn = 0

    def __iter__(self) -> Iterator[int]:
        for item in itertools.count():
            self.drawn += 1
            yield item


def input_kinds() -> dict[str, Any]:
    """The same three items, 1, 2 and 3, as each kind of iterable section 2 names."""
    return {
        "list": [1, 2, 3],
        "tuple": (1, 2, 3),
        "range": range(1, 4),
        "generator": (x for x in [1, 2, 3]),
        "numpy array": np.array([1, 2, 3]),
        "dict keys": {1: "a", 2: "b", 3: "c"}.keys(),
    }


def test_extra_args_and_kwargs_reach_every_call(any_settings: dict[str, Any]) -> None:
    add = parallel(**any_settings)(helpers.add)
    assert add(range(4), 10) == [10, 11, 12, 13]
    assert add(range(4), 10, scale=2) == [20, 22, 24, 26]
    assert add(range(4), y=1) == [1, 2, 3, 4]


def test_star_unpacks_each_item(any_settings: dict[str, Any]) -> None:
    add = parallel(star=True, **any_settings)(helpers.add)
    assert add([(1, 2), (3, 4)]) == [3, 7]
    assert add([(1, 2), (3, 4)], scale=10) == [30, 70]
    assert add([(1,), (3,)], 5) == [6, 8]  # func(*item, *args)


def test_any_iterable_is_accepted(any_settings: dict[str, Any]) -> None:
    double = parallel(**any_settings)(helpers.double)
    for kind, items in input_kinds().items():
        assert double(items) == [2, 4, 6], kind


def test_ordered_results_are_in_input_order(any_settings: dict[str, Any]) -> None:
    """Later items finish first (they sleep less); results still follow the input."""
    items = list(range(8))
    countdown = parallel(**any_settings)(helpers.countdown)
    expected = [helpers.countdown(x, len(items)) for x in items]
    assert countdown(items, len(items)) == expected
    assert list(countdown.iter(items, len(items))) == expected


def test_results_match_the_serial_backend(any_settings: dict[str, Any]) -> None:
    items = [3, 1, 4, 1, 5, 9, 2, 6]
    reference = parallel(backend="serial")(helpers.add)(items, 2, scale=3)
    assert parallel(**any_settings)(helpers.add)(items, 2, scale=3) == reference


def test_unordered_results_are_the_same_multiset(any_settings: dict[str, Any]) -> None:
    items = list(range(8))
    countdown = parallel(ordered=False, **any_settings)(helpers.countdown)
    results = countdown(items, len(items))
    assert sorted(results) == [x * x for x in items]
    assert sorted(countdown.iter(items, len(items))) == [x * x for x in items]


def test_unordered_is_completion_order(
    any_concurrent_settings: dict[str, Any], tmp_path: Path
) -> None:
    """Item 0 is held until the caller has seen item 1 finish.

    Unordered results come in that completion order, ordered ones in input order, and
    `.options(ordered=False)` switches one call without changing the function.
    """
    ordered = parallel(**any_concurrent_settings)(helpers.gated_first)
    unordered = ordered.options(ordered=False)
    for function, expected in [(unordered, [1, 0]), (ordered, [0, 1])]:
        gate = tmp_path / f"gate-{expected}"
        bar = GateBar(gate, open_at=1)
        results = function.options(progress=bar)([0, 1], str(gate))
        bar.close()
        assert results == [(x, True) for x in expected]


def test_empty_input_returns_empty_list_and_starts_no_worker(
    any_settings: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[object] = []
    process_start = multiprocessing.process.BaseProcess.start
    thread_start = threading.Thread.start

    def record_process(self: Any) -> None:
        started.append(self)
        process_start(self)

    def record_thread(self: threading.Thread) -> None:
        started.append(self)
        thread_start(self)

    function = parallel(**any_settings)(helpers.must_not_run)
    with monkeypatch.context() as patch:
        patch.setattr(multiprocessing.process.BaseProcess, "start", record_process)
        patch.setattr(threading.Thread, "start", record_thread)
        assert function([]) == []
        assert function(iter(())) == []
        assert function(range(0)) == []
        assert list(function.iter([])) == []
    assert started == []


@pytest.mark.parametrize("bad_input", ["abc", b"ab", bytearray(b"ab"), 3, None])
def test_str_bytes_and_non_iterables_are_refused(bad_input: object) -> None:
    function: Any = parallel(workers=2)(helpers.square)
    with pytest.raises(TypeError, match=r"list") as caught:
        function(bad_input)
    assert ".func(" in str(caught.value)
    with pytest.raises(TypeError, match=r"\.func"):
        function.iter(bad_input)  # refused on the call, before the first next()


def test_iter_yields_results_as_they_become_available(
    any_settings: dict[str, Any], tmp_path: Path
) -> None:
    """Items after the first wait for a gate the test opens only after the first result."""
    gate = tmp_path / "gate"
    results = parallel(**any_settings)(helpers.gated_after_first).iter(range(4), str(gate))
    assert next(results) == (0, True)
    gate.touch()
    assert list(results) == [(1, True), (2, True), (3, True)]


def test_iter_draws_items_only_as_workers_free_up(any_settings: dict[str, Any]) -> None:
    source = Counted()
    squares = parallel(chunksize=4, **any_settings)(helpers.square).iter(source)
    ahead = []
    for consumed, (item, result) in enumerate(zip(itertools.count(), squares), 1):
        assert result == item * item
        ahead.append(source.drawn - consumed)
        if consumed == 300:
            break
    squares.close()
    # A small multiple of workers * chunksize = 8, never growing with the input.
    assert max(ahead) <= 200, max(ahead)


def test_iter_on_endless_generator_stops_on_break(any_settings: dict[str, Any]) -> None:
    threads_before = set(threading.enumerate())
    source = Counted()
    slept = parallel(**any_settings)(helpers.slept)
    for result in slept.iter(source, 0.001):
        if result == 5:
            break
    assert source.drawn < 10_000
    assert wait_for_no_children() == []
    assert wait_for_no_extra_threads(threads_before) == []


def test_iter_close_stops_the_remaining_work_promptly(any_settings: dict[str, Any]) -> None:
    threads_before = set(threading.enumerate())
    source = Counted()
    results = parallel(**any_settings)(helpers.slept).iter(source, 0.05)
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    began = time.monotonic()
    results.close()
    assert time.monotonic() - began < 5
    assert wait_for_no_children() == []
    assert wait_for_no_extra_threads(threads_before) == []
    drawn = source.drawn
    with pytest.raises(StopIteration):
        next(results)
    assert source.drawn == drawn


def test_keep_alive_keeps_workers_until_close(any_settings: dict[str, Any]) -> None:
    threads_before = set(threading.enumerate())
    where = parallel(keep_alive=True, **any_settings)(helpers.where)
    try:
        first = where(range(4))
        children = {child.pid for child in live_children()}
        threads = {thread.ident for thread in extra_threads(threads_before)}
        second = where(range(4))
    finally:
        where.close()
    if any_settings["backend"] == "process":
        assert 1 <= len(children) <= 2
        assert {pid for pid, _ in first + second} <= children
    if any_settings["backend"] == "thread":
        assert 1 <= len(threads) <= 2
        assert {ident for _, ident in first + second} <= threads
    assert wait_for_no_children() == []
    assert wait_for_no_extra_threads(threads_before) == []
    try:
        assert len(where(range(2))) == 2  # usable again: it starts new workers
    finally:
        where.close()


def test_aio_returns_the_list_without_blocking_the_loop(
    any_settings: dict[str, Any], tmp_path: Path
) -> None:
    """The items wait for a gate that another coroutine opens while the call runs."""
    gate = tmp_path / "gate"
    gated = parallel(**any_settings)(helpers.gated_all)

    async def main() -> list[tuple[int, bool]]:
        call = asyncio.ensure_future(gated.aio(range(3), str(gate)))
        await asyncio.sleep(0)  # the call starts; a blocking one would hold the loop here
        gate.touch()
        return await call

    results = asyncio.run(main())
    assert results == [(0, True), (1, True), (2, True)]
    assert results == gated(range(3), str(gate))

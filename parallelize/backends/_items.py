"""Running the items of one chunk: the loop every backend's workers share."""

from __future__ import annotations

import time
from collections.abc import Callable
from itertools import repeat, starmap
from operator import itemgetter, sub
from typing import Any

__all__ = ["ON_CALLER_THREAD", "SLOW_ITEM_SECONDS", "run_items"]

# `f.stats.slowest` names the items that ran longer than this.
SLOW_ITEM_SECONDS = 0.001
clock = time.perf_counter

# Anything an item raises is that item's failure (`SystemExit`, a `BaseException` of a
# framework), as letting it escape would kill a worker or end the call. On the caller's
# own thread (the serial backend) `KeyboardInterrupt` escapes, though: a Ctrl-C lands
# in whichever item is running there, and must stop the call.
ON_CALLER_THREAD: tuple[type[BaseException], ...] = (KeyboardInterrupt,)

Report = Callable[[int, list[Any], "BaseException | None"], None]


def run_items(
    call: Callable[[Any], Any],
    items: list[Any],
    report: Report,
    track: Callable[[int], None] | None = None,
    passthrough: tuple[type[BaseException], ...] = (),
    slow: list[tuple[int, float]] | None = None,
) -> None:
    """Run `call` on each item, reporting runs of results and each failure in order.

    `report(offset, values, error)` gets the results of the items from `offset` on,
    then `error`, the exception of the item just after them, or None on the last
    report of the chunk. `track(offset)`, if given, is told which item starts next
    (it costs time per item, so the fast loop goes without it). Whatever an item
    raises fails it, except the `passthrough` exceptions, which propagate. `slow`,
    if given, gets `(offset, seconds)` for each item that ran over
    `SLOW_ITEM_SECONDS`, failed ones included.
    """
    done = 0
    while True:
        values: list[Any] = []
        ends: list[float] = []  # when each item of `values` ended (timed only)
        rest = items[done:] if done else items
        began = clock() if slow is not None else 0.0
        try:
            if track is None:
                if slow is None:
                    # A loop in C; on an exception `values` keeps the results before it.
                    values.extend(map(call, rest))
                else:
                    _run_timed(call, rest, values, ends)
            else:
                append = values.append
                for offset, item in enumerate(rest, done):
                    track(offset)
                    append(call(item))
                    if slow is not None:
                        ends.append(clock())
        except passthrough:
            raise
        except BaseException as exc:
            if slow is not None:
                _note_slow(slow, done, began, ends, failed_at=clock())
            report(done, values, exc)
            done += len(values) + 1
            continue
        if slow is not None:
            _note_slow(slow, done, began, ends)
        report(done, values, None)
        return


def _run_timed(
    call: Callable[[Any], Any], items: list[Any], values: list[Any], ends: list[float]
) -> None:
    """`values.extend(map(call, items))`, noting when each item ended, still in C: each
    item's value is paired with a reading of the clock taken just after it."""
    pairs: list[tuple[Any, float]] = []
    try:
        pairs.extend(zip(map(call, items), starmap(clock, repeat(())), strict=False))
    finally:
        values.extend(map(itemgetter(0), pairs))
        ends.extend(map(itemgetter(1), pairs))


def _note_slow(
    slow: list[tuple[int, float]],
    first: int,
    began: float,
    ends: list[float],
    failed_at: float | None = None,
) -> None:
    """Add to `slow` the items from `first` on that ran over `SLOW_ITEM_SECONDS`, from
    their end times (and the failed item's, ending at `failed_at`)."""
    if failed_at is not None:
        ends = [*ends, failed_at]
    if not ends or ends[-1] - began <= SLOW_ITEM_SECONDS:
        return  # the whole run took less: no item of it can have
    starts = [began, *ends[:-1]]
    if max(map(sub, ends, starts)) <= SLOW_ITEM_SECONDS:
        return
    for offset, seconds in enumerate(map(sub, ends, starts), first):
        if seconds > SLOW_ITEM_SECONDS:
            slow.append((offset, seconds))

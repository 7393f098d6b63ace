"""Running the items of one chunk: the loop every backend's workers share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["ItemError", "WorkerItemError", "run_items"]

# What counts as the item failing on the caller's own thread (serial backend):
# `SystemExit` too, as `sys.exit()` inside one item must fail that item, but not
# KeyboardInterrupt, which is Ctrl-C and must stop the call.
ItemError: tuple[type[BaseException], ...] = (Exception, SystemExit)
# On a worker (a thread, a process that ignores SIGINT, a cluster task) anything an
# item raises is that item's failure: letting it escape would kill the worker silently.
WorkerItemError: tuple[type[BaseException], ...] = (BaseException,)

Report = Callable[[int, list[Any], "BaseException | None"], None]


def run_items(
    call: Callable[[Any], Any],
    items: list[Any],
    report: Report,
    track: Callable[[int], None] | None = None,
    failures: tuple[type[BaseException], ...] = WorkerItemError,
) -> None:
    """Run `call` on each item, reporting runs of results and each failure in order.

    `report(offset, values, error)` gets the results of the items from `offset` on,
    then `error`, the exception of the item just after them, or None on the last
    report of the chunk. `track(offset)`, if given, is told which item starts next
    (it costs time per item, so the fast loop goes without it). `failures` are the
    exceptions that fail an item; anything else propagates.
    """
    done = 0
    while True:
        values: list[Any] = []
        rest = items[done:] if done else items
        try:
            if track is None:
                # A loop in C; on an exception `values` keeps the results before it.
                values.extend(map(call, rest))
            else:
                append = values.append
                for offset, item in enumerate(rest, done):
                    track(offset)
                    append(call(item))
        except failures as exc:
            report(done, values, exc)
            done += len(values) + 1
            continue
        report(done, values, None)
        return

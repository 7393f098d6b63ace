"""Running the items of one chunk: the loop every backend's workers share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["ON_CALLER_THREAD", "run_items"]

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
) -> None:
    """Run `call` on each item, reporting runs of results and each failure in order.

    `report(offset, values, error)` gets the results of the items from `offset` on,
    then `error`, the exception of the item just after them, or None on the last
    report of the chunk. `track(offset)`, if given, is told which item starts next
    (it costs time per item, so the fast loop goes without it). Whatever an item
    raises fails it, except the `passthrough` exceptions, which propagate.
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
        except passthrough:
            raise
        except BaseException as exc:
            report(done, values, exc)
            done += len(values) + 1
            continue
        report(done, values, None)
        return

"""W6 and W6s: the lazy input, and the consumer that checks and paces the results.

The input is a generator (it has no length), so nothing can size itself from it.
W6s's generator counts what it hands out; the consumer compares that count with
the results it has taken, after every result, and keeps the largest gap: the
items drawn from the input but not yet returned to the caller.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Iterator

from .config import SLOW_CONSUMER_EVERY, SLOW_CONSUMER_SLEEP

__all__ = ["DrawCounter", "StreamOutcome", "consume", "consume_slowly", "counted_ints", "ints"]


class DrawCounter:
    """How many items the input generator has handed out so far."""

    __slots__ = ("drawn",)

    def __init__(self) -> None:
        self.drawn = 0


def ints(n: int) -> Iterator[int]:
    """W6's input: 0 .. n-1 from a generator, so no implementation can ask its length."""
    return (i for i in range(n))


def counted_ints(n: int, counter: DrawCounter) -> Iterator[int]:
    """W6s's input: `ints(n)` that records in `counter` how many it has handed out."""
    for i in range(n):
        counter.drawn = i + 1
        yield i


@dataclasses.dataclass
class StreamOutcome:
    """What the consumer saw: enough to check the answer without keeping the results."""

    count: int = 0
    total: int = 0
    in_order: bool = True
    max_ahead: int = 0  # W6s: max over the run of (items drawn - results consumed)

    def problem(self, n: int, *, ordered: bool) -> str | None:
        """None if this is the answer for the input 0 .. n-1, else what is wrong."""
        if self.count != n:
            return f"wrong answer: {self.count} results for {n} items"
        if self.total != n * (n - 1) // 2:
            return f"wrong answer: results sum to {self.total}, expected {n * (n - 1) // 2}"
        if ordered and not self.in_order:
            return "wrong answer: results out of input order"
        return None


def consume(results: Iterable[int]) -> StreamOutcome:
    """W6: take every result as it comes (`for r in impl(...)`), keeping only a digest."""
    count = total = 0
    in_order = True
    for r in results:
        if r != count:
            in_order = False
        total += r
        count += 1
    return StreamOutcome(count, total, in_order)


def consume_slowly(results: Iterable[int], counter: DrawCounter) -> StreamOutcome:
    """W6s: `consume`, sleeping 1 ms every 256 results and tracking the read-ahead."""
    count = total = max_ahead = 0
    in_order = True
    for r in results:
        if r != count:
            in_order = False
        total += r
        count += 1
        ahead = counter.drawn - count
        if ahead > max_ahead:
            max_ahead = ahead
        if count % SLOW_CONSUMER_EVERY == 0:
            time.sleep(SLOW_CONSUMER_SLEEP)
    return StreamOutcome(count, total, in_order, max_ahead)

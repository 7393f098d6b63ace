"""What the workers of one call did, for `f.stats` (API.md section 2).

Each executor keeps a `WorkTally` for the call under way, new at each `start`; the
runner reads it when the call ends. Counting is per chunk or per message, never per
item, except for the few items that run longer than `SLOW_ITEM_SECONDS`.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable

__all__ = ["SLOWEST_KEPT", "WorkTally"]

# `f.stats.slowest` keeps this many items (those over `_items.SLOW_ITEM_SECONDS`).
SLOWEST_KEPT = 5


class WorkTally:
    """What the workers of one call did, as its executor counts it (`f.stats`): items
    and busy seconds per worker, workers replaced, and the slowest items."""

    __slots__ = ("per_worker", "replaced", "slowest")

    def __init__(self) -> None:
        self.per_worker: dict[Hashable, list[float]] = {}  # worker -> [items, seconds]
        self.replaced = 0
        self.slowest: list[tuple[float, int]] = []  # (seconds, index): a min-heap

    def ran(self, worker: Hashable, items: int, seconds: float) -> None:
        entry = self.per_worker.get(worker)
        if entry is None:
            self.per_worker[worker] = [items, seconds]
        else:
            entry[0] += items
            entry[1] += seconds

    def slow(self, index: int, seconds: float) -> None:
        """Item `index` ran `seconds`, longer than `_items.SLOW_ITEM_SECONDS` (a retried
        item is kept once, at its slowest run)."""
        for position, (kept, same) in enumerate(self.slowest):
            if same == index:
                if seconds > kept:
                    self.slowest[position] = (seconds, index)
                    heapq.heapify(self.slowest)
                return
        if len(self.slowest) < SLOWEST_KEPT:
            heapq.heappush(self.slowest, (seconds, index))
        elif seconds > self.slowest[0][0]:
            heapq.heapreplace(self.slowest, (seconds, index))

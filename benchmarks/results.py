"""Read access to one run's results: a pair by (row, workload), its median, the best peer."""

from __future__ import annotations

from typing import Any

from .measure import median
from .registry import find

__all__ = ["NOT_PEERS", "RunResults", "is_peer"]

# The serial loops (W9's `[f(i, table) for i in items]` too) are references, not peers.
NOT_PEERS = ("serial", "serial_one_blas_thread")


class RunResults:
    """The raw results of one run (the JSON saved as latest.json), indexed."""

    def __init__(self, run: dict[str, Any]) -> None:
        self.run = run
        self.workloads: list[str] = run["workloads"]
        self.implementations: list[str] = run["implementations"]
        self._pairs = {(p["implementation"], p["workload"]): p for p in run["pairs"]}

    def pair(self, implementation: str, workload: str) -> dict[str, Any] | None:
        return self._pairs.get((implementation, workload))

    def ok(self, implementation: str, workload: str) -> dict[str, Any] | None:
        pair = self.pair(implementation, workload)
        return pair if pair is not None and pair["status"] == "ok" else None

    def median(self, implementation: str, workload: str) -> float | None:
        pair = self.ok(implementation, workload)
        return float(pair["median"]) if pair is not None else None

    def worst(self, implementation: str, workload: str, key: str) -> float | None:
        """The largest value of a per-repeat measure (RSS growth, read-ahead)."""
        pair = self.ok(implementation, workload)
        if pair is None or key not in pair:
            return None
        return float(max(pair[key]))

    def middle(self, implementation: str, workload: str, key: str) -> float | None:
        """The median of a measure taken once a round (W9's memory): system-wide, it is
        moved both ways by other work, so the median, not the largest, is its figure."""
        pair = self.ok(implementation, workload)
        if pair is None or key not in pair:
            return None
        return median(pair[key])

    def is_peer(self, implementation: str) -> bool:
        return is_peer(implementation)

    def best_peer(self, workload: str) -> tuple[str, float] | None:
        """The fastest peer that gave the right answer on `workload`, and its median."""
        timed = [
            (median, name)
            for name in self.implementations
            if self.is_peer(name) and (median := self.median(name, workload)) is not None
        ]
        if not timed:
            return None
        median, name = min(timed)
        return name, median


def is_peer(implementation: str) -> bool:
    """Whether the row named `implementation` is a peer to beat (not ours, not serial)."""
    try:
        ours = find(implementation).ours
    except KeyError:
        ours = False
    return not ours and implementation not in NOT_PEERS

"""`f.stats`: what the last call of a parallel function did (API.md section 2).

The runner counts items, final errors and retries as outcomes pass through it; the
executor's `WorkTally` holds what only the backend sees (which worker ran what, for
how long, which were replaced, the slowest items). Both are counted per chunk or
per outcome, never per item: `CallStats` is built once, when the call ends.
"""

from __future__ import annotations

import dataclasses

from .backends._tally import WorkTally

__all__ = ["CallStats", "WorkerStats", "call_stats"]


@dataclasses.dataclass(frozen=True)
class WorkerStats:
    """One worker that ran items in the call: how many, and for how long."""

    items: int
    busy_seconds: float


@dataclasses.dataclass(frozen=True)
class CallStats:
    """What one call did: see `ParallelFunction.stats`.

    `items`: items that got a result or a final error; `failed`: final errors;
    `retried`: re-runs made by `retries`; `wall_seconds`: the call, start to end;
    `workers_replaced`: workers ended and replaced during the call (deaths,
    timeouts, `max_tasks_per_worker`); `per_worker`: one entry per worker that ran
    items; `slowest`: `(index, seconds)` of the 5 slowest items over 1 ms, slowest
    first.
    """

    items: int
    failed: int
    retried: int
    wall_seconds: float
    workers_replaced: int
    per_worker: tuple[WorkerStats, ...]
    slowest: tuple[tuple[int, float], ...]


def call_stats(
    items: int, failed: int, retried: int, wall_seconds: float, tally: WorkTally | None
) -> CallStats:
    """The `CallStats` of a call from the runner's counts and its executor's tally."""
    if tally is None:
        return CallStats(items, failed, retried, wall_seconds, 0, (), ())
    per_worker = tuple(
        WorkerStats(int(count), seconds) for count, seconds in tally.per_worker.values() if count
    )
    slowest = tuple((index, seconds) for seconds, index in sorted(tally.slowest, reverse=True))
    return CallStats(items, failed, retried, wall_seconds, tally.replaced, per_worker, slowest)

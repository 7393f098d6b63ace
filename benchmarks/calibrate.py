"""W2's item: a pure-Python loop whose length is calibrated once per run to ~40 ms."""

from __future__ import annotations

from .config import W2_ITEM_SECONDS
from .measure import clock, median
from .tasks import spin

__all__ = ["calibrate_spin"]

PROBE_LOOPS = 200_000


def _time_spin(loops: int) -> float:
    start = clock()
    spin(loops)
    return clock() - start


def calibrate_spin(target: float = W2_ITEM_SECONDS) -> tuple[int, float]:
    """The loop count that takes `target` seconds here, and the measured serial item time."""
    fastest = min(_time_spin(PROBE_LOOPS) for _ in range(5))
    loops = max(1, round(PROBE_LOOPS * target / fastest))
    return loops, median([_time_spin(loops) for _ in range(3)])

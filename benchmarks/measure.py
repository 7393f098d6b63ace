"""Clocks and the memory sampler used inside a pair's process."""

from __future__ import annotations

import gc
import statistics
import threading
import time
from collections.abc import Sequence
from types import TracebackType

from .config import RSS_SAMPLE_SECONDS

__all__ = ["MIB", "RssSampler", "clock", "median", "paired_ratio"]

MIB = 1024 * 1024
clock = time.perf_counter


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def paired_ratio(times: Sequence[float], references: Sequence[float]) -> float:
    """The median of time / reference over pairs timed back to back.

    Each pair shares the machine's speed of that moment, so a drift over the
    repeats cancels out, where it would not in the ratio of two medians.
    """
    return median([t / r for t, r in zip(times, references, strict=True)])


class RssSampler:
    """Peak RSS growth of this process while the `with` block runs, sampled in a thread.

    The baseline is taken after a garbage collection, just before the block; the
    sampler wakes every `RSS_SAMPLE_SECONDS` and once more at the end, so a peak
    shorter than that can be missed (a read-ahead that grows with the input is not
    short). Only the calling process is measured: that is where read-ahead piles up.
    """

    def __init__(self) -> None:
        import psutil

        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
        self.baseline = 0
        self.peak = 0

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.baseline) / MIB

    def _rss(self) -> int:
        rss: int = self._process.memory_info().rss
        return rss

    def _sample(self) -> None:
        while not self._stop.wait(RSS_SAMPLE_SECONDS):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> RssSampler:
        gc.collect()
        self.baseline = self.peak = self._rss()
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

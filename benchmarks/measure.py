"""Clocks and the memory samplers used inside a pair's process."""

from __future__ import annotations

import gc
import os
import re
import statistics
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import TypeVar

from .config import MEMINFO_SAMPLE_SECONDS, RSS_SAMPLE_SECONDS

__all__ = ["MIB", "MemorySampler", "RssSampler", "clock", "median", "paired_ratio"]

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


_Sampler = TypeVar("_Sampler", bound="_PeakSampler")


class _PeakSampler:
    """The peak of a reading while the `with` block runs, read by a thread every
    `interval` seconds and once more at the end, against a baseline taken after a
    garbage collection just before the block; a peak shorter than `interval` can be
    missed. Subclasses say what they read."""

    interval = RSS_SAMPLE_SECONDS

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="peak-sampler", daemon=True)
        self.baseline = 0
        self.peak = 0

    def _read(self) -> int:
        raise NotImplementedError

    def _read_baseline(self) -> int:
        return self._read()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._read())

    def __enter__(self: _Sampler) -> _Sampler:
        gc.collect()
        self.baseline = self.peak = self._read_baseline()
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
        self.peak = max(self.peak, self._read())


class RssSampler(_PeakSampler):
    """Peak RSS growth of this process while the `with` block runs (W6).

    Only the calling process is measured: that is where read-ahead piles up, and a
    read-ahead that grows with the input is not a short peak.
    """

    def __init__(self) -> None:
        import psutil

        super().__init__()
        self._process = psutil.Process()

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.baseline) / MIB

    def _read(self) -> int:
        rss: int = self._process.memory_info().rss
        return rss


# W9: memory freed by a call that just ended (exiting workers, a removed file in
# /dev/shm) can take a moment to show in /proc/meminfo. Before a baseline, wait until
# the reading stops falling by more than this, at most this long.
SETTLE_BYTES = 4 * MIB
SETTLE_STEP_SECONDS = 0.05
SETTLE_MAX_SECONDS = 3.0
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
_PCP_COUNT = re.compile(rb"\n\s+count:\s+(\d+)")


def memory_in_use() -> int:
    """The machine's memory in use, in bytes: `MemTotal - MemAvailable` of /proc/meminfo,
    less the free pages held in the kernel's per-CPU lists.

    Unlike a process's PSS, it counts the pages of tmpfs and memfd files that no
    process maps (joblib's array file in /dev/shm, a memfd filled with write()),
    and shared pages once. MemAvailable leaves out free pages on the per-CPU lists,
    which since Linux 6.7 grow to hundreds of MiB when processes free much memory at
    once and drain over seconds: read alone, it would show a call's memory after
    its workers ended, in the next call's baseline. /proc/zoneinfo gives them.
    """
    fields: dict[str, int] = {}
    with open("/proc/meminfo", "rb") as meminfo:
        for line in meminfo:
            name, value = line.split(b":", 1)
            if name in (b"MemTotal", b"MemAvailable"):
                fields[name.decode()] = int(value.split()[0]) * 1024
                if len(fields) == 2:
                    break
    return fields["MemTotal"] - fields["MemAvailable"] - _per_cpu_free_pages() * PAGE_BYTES


def _per_cpu_free_pages() -> int:
    """Free pages on the per-CPU lists of every zone (`count:` under `pagesets`)."""
    with open("/proc/zoneinfo", "rb") as zoneinfo:
        return sum(int(count) for count in _PCP_COUNT.findall(zoneinfo.read()))


class MemorySampler(_PeakSampler):
    """Peak growth of the machine's memory in use while the `with` block runs (W9).

    The whole machine, so the caller and every worker (and files nobody maps) are in
    it. The baseline is taken once the memory freed by what ran before has shown;
    other work on the machine moves it too, so the pair measures this in untimed runs
    of its own, and compares two of them (see pair.py).
    """

    interval = MEMINFO_SAMPLE_SECONDS

    @property
    def growth(self) -> int:
        """Bytes: the peak over the block minus the baseline."""
        return self.peak - self.baseline

    def _read(self) -> int:
        return memory_in_use()

    def _read_baseline(self) -> int:
        return _settled_memory()


def _settled_memory() -> int:
    """The memory in use once it has stopped falling (see SETTLE_BYTES)."""
    deadline = clock() + SETTLE_MAX_SECONDS
    last = memory_in_use()
    while clock() < deadline:
        time.sleep(SETTLE_STEP_SECONDS)
        now = memory_in_use()
        if now > last - SETTLE_BYTES:
            return min(now, last)
        last = now
    return last

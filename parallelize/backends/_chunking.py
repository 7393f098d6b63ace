"""Chunk sizes from measured item times, shared by the backends that send chunks."""

from __future__ import annotations

import logging
import math

__all__ = ["CLUSTER_CHUNK_SECONDS", "CHUNK_SECONDS", "ChunkSizer"]

_log = logging.getLogger("parallelize")

# A chunk aims to keep a worker busy this long: long enough that the per-message
# cost (~0.1 ms) is lost in it, short enough that the progress bar moves smoothly
# and the last chunks of a call end together.
CHUNK_SECONDS = 0.02
# On a cluster a task costs the scheduler milliseconds of round trip, not ~0.1 ms:
# chunks there aim longer (Dask's own advice is tasks of 100 ms or more).
CLUSTER_CHUNK_SECONDS = 0.2
# Chunk size grows at most this fast from one chunk to the next, so a first few
# fast items cannot make a chunk of thousands of slow ones.
CHUNK_GROWTH = 16
# With no length to divide, chunks stop here: it bounds how far `.iter()` reads
# ahead of its consumer (about 2 * workers * this many items).
UNKNOWN_LENGTH_CHUNK_CAP = 512
# Items slower than this run with their position tracked, so a crash names the
# item; faster ones run untracked and a crash re-runs them one by one to find it.
TRACK_ITEM_SECONDS = 50e-6


class ChunkSizer:
    """Chooses chunk sizes from how long items took (the user's `chunksize` wins)."""

    def __init__(
        self, fixed: int | None, workers: int, chunk_seconds: float = CHUNK_SECONDS
    ) -> None:
        self.fixed = fixed
        self.workers = workers
        self.chunk_seconds = chunk_seconds
        self.size = fixed or 1
        self.cap = fixed or 1
        self.item_seconds: float | None = None

    def reset(self, total: int | None) -> None:
        if self.fixed is None:
            self.size = 1
            self.cap = (
                max(1, math.ceil(total / (4 * self.workers)))
                if total is not None
                else UNKNOWN_LENGTH_CHUNK_CAP
            )
        self.item_seconds = None

    def record(self, count: int, seconds: float) -> None:
        per_item = seconds / count
        self.item_seconds = (
            per_item if self.item_seconds is None else (self.item_seconds + per_item) / 2
        )
        if self.fixed is None:
            wanted = self.chunk_seconds / max(self.item_seconds, 1e-9)
            size = max(1, min(int(wanted), self.cap, self.size * CHUNK_GROWTH))
            if size != self.size:
                _log.debug(
                    "chunk size %d -> %d: items take %.3g ms",
                    self.size,
                    size,
                    self.item_seconds * 1000,
                )
            self.size = size

    def runs_within(self, count: int, seconds: float) -> bool:
        """Whether a chunk of `count` items is known to run within `seconds`."""
        return self.item_seconds is not None and count * self.item_seconds < seconds

    def should_track(self, count: int) -> bool:
        return count > 1 and (self.item_seconds is None or self.item_seconds > TRACK_ITEM_SECONDS)

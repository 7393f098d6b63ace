"""The shared runner: one call of a parallel function over any backend.

It draws chunks from the input only while the executor has room (so `.iter()` is
lazy and bounded), and turns the executor's outcomes into what the user sees:
input order or completion order, retries, `errors=`, progress ticks and the note
naming a failed item. Results travel as runs of consecutive values, never one
object per item, so 100,000 tiny items cost the parent little.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ._errors import annotate
from ._progress import open_progress
from ._settings import Settings
from ._stats import CallStats, call_stats
from .backends import Executor, Failed, Job

__all__ = ["run"]

_log = logging.getLogger("parallelize")

# In ordered `.iter()`, results that wait behind a slow item are capped at this many
# chunks per worker; past it no new items are drawn until the slow one is done, so
# one straggler cannot make memory grow with the input.
REORDER_CHUNKS_PER_WORKER = 2
# An input without a length is drawn for at most about this long before the chunk
# drawn so far is sent: a generator that yields an item every few milliseconds then
# delays results, timeouts and deaths by this much, not by a whole chunk of it.
DRAW_SECONDS = 0.05
# A chunk drawn within this is drawn fast: the next one is drawn in one go, unclocked.
FAST_DRAW_SECONDS = 0.005


def run(
    executor: Executor,
    job: Job,
    items: Iterable[Any],
    total: int | None,
    settings: Settings,
    name: str,
    *,
    bounded: bool,
    on_end: Callable[[CallStats], None] | None = None,
) -> Iterator[list[Any]]:
    """Yield runs of results of `job` over `items`; `bounded` caps the reorder buffer.

    `on_end` gets the call's statistics when it ends, however it ends.
    """
    count = _Count()
    try:
        source = iter(items)
        draw = _Draw(source, timed=total is None)
        first = list(itertools.islice(source, 1))  # is there any work at all?
        if not first:
            if settings.progress is not False:
                open_progress(settings.progress, total, name).close()
            return
        # The bar first: built before workers are forked, its objects are not pages
        # the parent must copy on write while the workers share them.
        progress = open_progress(settings.progress, total, name)
        finished = False
        try:
            executor.start(job, total)  # sizes this call's chunks afresh
            count.started = True
            size = executor.chunk_size()
            rest, exhausted = draw(size - 1)
            first += rest
            executor.submit(0, first)
            drawn = len(first)
            ordered = settings.ordered
            raise_first = settings.errors == "raise"
            retries, retry_on = settings.retries, settings.retry_on
            attempts: dict[int, int] = {}
            waiting: dict[int, list[Any]] = {}  # ordered: runs that arrived early, by start
            waiting_items = 0
            next_out = 0
            while True:
                while not exhausted and executor.has_room():
                    size = executor.chunk_size()
                    waiting_cap = REORDER_CHUNKS_PER_WORKER * executor.workers * size
                    if bounded and waiting_items > waiting_cap:
                        break
                    chunk, exhausted = draw(size)
                    if chunk:
                        executor.submit(drawn, chunk)
                        drawn += len(chunk)
                if not executor.pending():
                    break
                for outcome in executor.collect():
                    if isinstance(outcome, Failed):
                        index = outcome.index
                        tries = attempts.get(index, 0)
                        if tries < retries and isinstance(outcome.error, retry_on):
                            _log.debug(
                                "item %d failed (%s); retry %d of %d",
                                index,
                                type(outcome.error).__name__,
                                tries + 1,
                                retries,
                            )
                            attempts[index] = tries + 1
                            count.retried += 1
                            executor.submit(index, [outcome.item])
                            continue
                        count.items += 1
                        count.failed += 1
                        progress.update(1)
                        error = annotate(outcome.error, index, outcome.item, name)
                        if raise_first:
                            raise error
                        start, values = index, [error]
                    else:
                        start, values = outcome
                        count.items += len(values)
                        progress.update(len(values))
                    if not ordered:
                        yield values
                    elif start == next_out:
                        yield values
                        next_out += len(values)
                        while next_out in waiting:
                            values = waiting.pop(next_out)
                            waiting_items -= len(values)
                            yield values
                            next_out += len(values)
                    else:
                        waiting[start] = values
                        waiting_items += len(values)
            finished = True
        finally:
            progress.close()
            executor.finish(cancel=not finished)
    finally:
        if on_end is not None:
            seconds = time.perf_counter() - count.began
            tally = executor.tally if count.started else None
            on_end(call_stats(count.items, count.failed, count.retried, seconds, tally))


class _Count:
    """What the runner counts for `f.stats`, as outcomes pass."""

    __slots__ = ("began", "failed", "items", "retried", "started")

    def __init__(self) -> None:
        self.began = time.perf_counter()
        self.started = False  # the executor has started this call
        self.items = 0
        self.failed = 0
        self.retried = 0


class _Draw:
    """Draws chunks from the input; one without a length is drawn against the clock.

    While such an input yields fast, a chunk is one `islice`. Once a chunk took over
    `FAST_DRAW_SECONDS`, items are drawn in doubling batches, and what was drawn is
    sent once drawing has taken `DRAW_SECONDS`: a slow generator then never holds up
    results, deadlines and dead workers for as long as a whole chunk of it takes.
    """

    def __init__(self, source: Iterator[Any], timed: bool) -> None:
        self._source = source
        self._timed = timed
        self._slow = timed  # until a draw proves the input fast

    def __call__(self, size: int) -> tuple[list[Any], bool]:
        """Up to `size` items, and whether the input ran out."""
        if self._slow:
            return self._batched(size)
        began = time.monotonic() if self._timed else 0.0
        chunk = list(itertools.islice(self._source, size))
        if self._timed:
            self._slow = time.monotonic() - began > FAST_DRAW_SECONDS
        return chunk, len(chunk) < size

    def _batched(self, size: int) -> tuple[list[Any], bool]:
        chunk: list[Any] = []
        batch = 1
        began = time.monotonic()
        while len(chunk) < size:
            before, wanted = len(chunk), min(batch, size - len(chunk))
            chunk += itertools.islice(self._source, wanted)
            if len(chunk) - before < wanted:
                return chunk, True
            if time.monotonic() - began >= DRAW_SECONDS:
                return chunk, False
            batch *= 2
        self._slow = time.monotonic() - began > FAST_DRAW_SECONDS
        return chunk, False

"""The shared runner: one call of a parallel function over any backend.

It draws chunks from the input only while the executor has room (so `.iter()` is
lazy and bounded), and turns the executor's outcomes into what the user sees:
input order or completion order, retries, `errors=`, progress ticks and the note
naming a failed item. Results travel as runs of consecutive values, never one
object per item, so 100,000 tiny items cost the parent little.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any

from ._errors import annotate
from ._progress import open_progress
from ._settings import Settings
from .backends import Executor, Failed, Job

__all__ = ["run"]

# In ordered `.iter()`, results that wait behind a slow item are capped at this many
# chunks per worker; past it no new items are drawn until the slow one is done, so
# one straggler cannot make memory grow with the input.
REORDER_CHUNKS_PER_WORKER = 2


def run(
    executor: Executor,
    job: Job,
    items: Iterable[Any],
    total: int | None,
    settings: Settings,
    name: str,
    *,
    bounded: bool,
) -> Iterator[list[Any]]:
    """Yield runs of results of `job` over `items`; `bounded` caps the reorder buffer."""
    source = iter(items)
    first = list(itertools.islice(source, executor.chunk_size()))
    if not first:
        if settings.progress is not False:
            open_progress(settings.progress, total, name).close()
        return
    # The bar first: built before workers are forked, its objects are not pages
    # the parent must copy on write while the workers share them.
    progress = open_progress(settings.progress, total, name)
    finished = False
    try:
        executor.start(job, total)
        executor.submit(0, first)
        drawn = len(first)
        exhausted = len(first) < executor.chunk_size()
        ordered = settings.ordered
        raise_first = settings.errors == "raise"
        retries = settings.retries
        attempts: dict[int, int] = {}
        waiting: dict[int, list[Any]] = {}  # ordered: runs that arrived early, by start
        waiting_items = 0
        next_out = 0
        while True:
            while not exhausted and executor.has_room():
                size = executor.chunk_size()
                if bounded and waiting_items > REORDER_CHUNKS_PER_WORKER * executor.workers * size:
                    break
                chunk = list(itertools.islice(source, size))
                if chunk:
                    executor.submit(drawn, chunk)
                    drawn += len(chunk)
                exhausted = len(chunk) < size
            if not executor.pending():
                break
            for outcome in executor.collect():
                if isinstance(outcome, Failed):
                    index = outcome.index
                    tries = attempts.get(index, 0)
                    if tries < retries:
                        attempts[index] = tries + 1
                        executor.submit(index, [outcome.item])
                        continue
                    progress.update(1)
                    error = annotate(outcome.error, index, outcome.item, name)
                    if raise_first:
                        raise error
                    start, values = index, [error]
                else:
                    start, values = outcome
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

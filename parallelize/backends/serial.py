"""The serial backend: every item on the calling thread, one by one, for debugging.

Breakpoints, profilers and tracebacks work as in a plain loop. A `timeout` cannot
interrupt the caller's own thread, so an item found to have run too long fails with
`TaskTimeoutError` once it returns, as it would have on the other backends.

Whatever an item raises fails that item, `SystemExit` included, as on the other
backends; only `KeyboardInterrupt` stops the call, as a Ctrl-C lands in the item.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Any

from .._errors import TaskTimeoutError
from .._settings import Settings
from . import Failed, Job, Outcome, make_item_call
from ._items import ON_CALLER_THREAD, run_items
from ._tally import WorkTally

__all__ = ["SerialExecutor", "create"]

# The serial backend's one worker, in `f.stats.per_worker`: the calling thread.
CALLER = "caller"


def timed(call: Callable[[Any], Any], timeout: float) -> Callable[[Any], Any]:
    """`call`, failing with `TaskTimeoutError` when one item took over `timeout` s."""

    def run(item: Any) -> Any:
        began = time.monotonic()
        result = call(item)
        if time.monotonic() - began > timeout:
            raise TaskTimeoutError(f"item ran longer than timeout={timeout} s")
        return result

    return run


def _not_started(item: Any) -> Any:
    raise RuntimeError("SerialExecutor.start() was not called")


class SerialExecutor:
    """Runs each submitted chunk when the runner collects."""

    workers = 1

    def __init__(self, settings: Settings) -> None:
        self._chunk_size = settings.chunksize or 1
        self._queue: collections.deque[tuple[int, list[Any]]] = collections.deque()
        self._call: Callable[[Any], Any] = _not_started
        self._initializer = settings.initializer
        self._initargs = settings.initargs
        self._tally = WorkTally()

    @property
    def tally(self) -> WorkTally:
        return self._tally

    def start(self, job: Job, total: int | None) -> None:
        self._tally = WorkTally()
        if self._initializer is not None:  # the caller's thread is the one worker
            initializer, self._initializer = self._initializer, None
            initializer(*self._initargs)
        call = make_item_call(job)
        self._call = timed(call, job.timeout) if job.timeout is not None else call

    def chunk_size(self) -> int:
        return self._chunk_size

    def has_room(self) -> bool:
        return not self._queue

    def submit(self, start: int, items: list[Any]) -> None:
        self._queue.append((start, items))

    def pending(self) -> bool:
        return bool(self._queue)

    def collect(self) -> list[Outcome]:
        start, items = self._queue.popleft()
        outcomes: list[Outcome] = []

        def report(offset: int, values: list[Any], error: BaseException | None) -> None:
            if values:
                outcomes.append((start + offset, values))
            if error is not None:
                index = offset + len(values)
                outcomes.append(Failed(start + index, items[index], error))

        slow: list[tuple[int, float]] = []
        began = time.perf_counter()
        try:
            run_items(self._call, items, report, passthrough=ON_CALLER_THREAD, slow=slow)
        finally:  # the caller's thread is the one worker
            self._tally.ran(CALLER, len(items), time.perf_counter() - began)
            for offset, seconds in slow:
                self._tally.slow(start + offset, seconds)
        return outcomes

    def finish(self, *, cancel: bool) -> None:
        self._queue.clear()

    def shutdown(self) -> None:
        self._queue.clear()


def create(settings: Settings) -> SerialExecutor:
    return SerialExecutor(settings)

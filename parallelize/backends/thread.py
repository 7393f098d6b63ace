"""The thread backend: items run on a pool of threads, for I/O and GIL-releasing code.

Each thread runs the `initializer` once, before its first item.

Threads cannot be killed: an item over its `timeout` fails with `TaskTimeoutError`
and its thread is abandoned (a daemon thread, replaced at once) to finish alone.
"""

from __future__ import annotations

import math
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from .._context import worker_thread
from .._errors import TaskTimeoutError
from .._settings import Settings
from . import Failed, Job, Outcome, make_item_call
from ._items import run_items
from ._tally import WorkTally

__all__ = ["ThreadExecutor", "create", "default_workers"]

# What a thread did with one chunk (its id, items, seconds, slow items), and what it
# puts on the outcomes queue: (call generation, outcomes, chunk done, work).
_Work = tuple[int, int, float, tuple[tuple[int, float], ...]]
_Message = tuple[int, list["Outcome"], bool, "_Work | None"]

# A stopped pool waits this long for threads still inside an item; past it they are
# left to finish alone (daemon threads), so Ctrl-C and errors return promptly.
JOIN_SECONDS = 2.0
# Under a `timeout`, the longest one wait for outcomes lasts. The next deadline bounds
# each wait already; this only covers an item that began just as it was computed.
DEADLINE_POLL_SECONDS = 0.5


def default_workers() -> int:
    """As `concurrent.futures.ThreadPoolExecutor`: enough to overlap I/O, capped."""
    return min(32, (os.cpu_count() or 1) + 4)


class _Worker:
    """One thread and what it is running: `(generation, start, items, offset, began)`."""

    def __init__(self, executor: ThreadExecutor) -> None:
        self.current: tuple[int, int, list[Any], int, float] | None = None
        self.abandoned = False
        self.lock = threading.Lock()  # a report and an abandonment never interleave
        self.unreported = 0  # offset in the current chunk of the first unreported item
        self.thread = threading.Thread(
            target=executor._work, args=(self,), name="parallelize-thread", daemon=True
        )


class ThreadExecutor:
    """A small thread pool whose outcomes reach the caller through one queue."""

    def __init__(self, settings: Settings) -> None:
        self.workers = settings.workers or default_workers()
        self._chunk_size = settings.chunksize or 1
        self._tasks: queue.SimpleQueue[tuple[int, int, list[Any]] | None] = queue.SimpleQueue()
        self._outcomes: queue.SimpleQueue[_Message] = queue.SimpleQueue()
        self._threads: list[_Worker] = []
        self._generation = 0
        self._unfinished = 0
        self._call: Callable[[Any], Any] | None = None
        self._timeout: float | None = None
        # No running item's deadline falls before this; infinite without a timeout.
        self._next_deadline = math.inf
        self._initializer = settings.initializer
        self._initargs = settings.initargs
        self._init_error: BaseException | None = None
        self._tally = WorkTally()

    # -- the runner's side -------------------------------------------------------

    @property
    def tally(self) -> WorkTally:
        return self._tally

    def start(self, job: Job, total: int | None) -> None:
        self._tally = WorkTally()
        self._generation += 1
        self._call = make_item_call(job)
        self._timeout = job.timeout
        self._next_deadline = math.inf if job.timeout is None else time.monotonic() + job.timeout
        self._threads = [w for w in self._threads if not w.abandoned and w.thread.is_alive()]
        while len(self._threads) < self.workers:
            self._add_thread()

    def chunk_size(self) -> int:
        return self._chunk_size

    def has_room(self) -> bool:
        if not self._unfinished:
            return True
        # No room while outcomes wait or a deadline is due: the runner collects first,
        # so a slow input holds up neither results nor timeouts.
        return (
            self._unfinished < 2 * self.workers
            and self._outcomes.empty()
            and (self._timeout is None or time.monotonic() < self._next_deadline)
        )

    def submit(self, start: int, items: list[Any]) -> None:
        self._unfinished += 1
        self._tasks.put((self._generation, start, items))

    def pending(self) -> bool:
        return self._unfinished > 0

    def collect(self) -> list[Outcome]:
        # Deadlines are checked on every round, not only when no outcome came: items
        # that finish steadily must not hold up another's timeout.
        outcomes: list[Outcome] = []
        freed = False  # a chunk finished: room for the next one opened
        while not (outcomes or freed) and self.pending():
            try:
                message = self._outcomes.get(timeout=self._wait_seconds())
            except queue.Empty:
                message = None
            while message is not None:
                freed |= self._accept(message, outcomes)
                message = self._next_message()
            outcomes += self._expire_overdue()
        return outcomes

    def finish(self, *, cancel: bool) -> None:
        if cancel:
            self._generation += 1  # outcomes of the cancelled call are ignored
            while True:
                try:
                    self._tasks.get_nowait()
                except queue.Empty:
                    break
        self._unfinished = 0

    def shutdown(self) -> None:
        threads, self._threads = self._threads, []
        for _ in threads:
            self._tasks.put(None)
        deadline = time.monotonic() + JOIN_SECONDS
        for worker in threads:
            worker.thread.join(max(0.0, deadline - time.monotonic()))

    # -- inside the threads ------------------------------------------------------

    def _work(self, worker: _Worker) -> None:
        if self._initializer is not None:
            try:
                self._initializer(*self._initargs)
            except BaseException as exc:
                self._init_error = exc
                self._outcomes.put((self._generation, [], False, None))  # wakes collect()
                return
        while not worker.abandoned:  # abandoned: it overran a timeout, and was replaced
            task = self._tasks.get()
            if task is None:
                return
            if worker.abandoned:
                self._tasks.put(task)  # not ours to run any more
                return
            self._run_chunk(worker, *task)

    def _run_chunk(self, worker: _Worker, generation: int, start: int, items: list[Any]) -> None:
        call = self._call
        assert call is not None
        began = time.perf_counter()
        slow: list[tuple[int, float]] = []

        def report(offset: int, values: list[Any], error: BaseException | None) -> None:
            outcomes: list[Outcome] = [(start + offset, values)] if values else []
            work: _Work | None = None
            if error is not None:
                index = offset + len(values)
                outcomes.append(Failed(start + index, items[index], error))
            else:  # the chunk's last report
                slowest = tuple((start + item, seconds) for item, seconds in slow)
                work = (id(worker), len(items), time.perf_counter() - began, slowest)
            with worker.lock:
                if worker.abandoned:
                    return
                if error is None:
                    worker.current = None
                worker.unreported = offset + len(values) + 1
                self._outcomes.put((generation, outcomes, error is None, work))

        def track(offset: int) -> None:
            worker.current = (generation, start, items, offset, time.monotonic())

        worker.unreported = 0
        with worker_thread():
            run_items(call, items, report, track if self._timeout is not None else None, slow=slow)

    # -- timeouts ----------------------------------------------------------------

    def _add_thread(self) -> None:
        worker = _Worker(self)
        self._threads.append(worker)
        worker.thread.start()

    def _wait_seconds(self) -> float | None:
        """How long to wait for an outcome: until the next deadline, if any."""
        if self._timeout is None:
            return None
        return max(0.0, min(self._next_deadline - time.monotonic(), DEADLINE_POLL_SECONDS))

    def _expire_overdue(self) -> list[Outcome]:
        """Fail items over their timeout, abandon their threads, requeue the rest."""
        if self._timeout is None or time.monotonic() < self._next_deadline:
            return []
        now = time.monotonic()
        # An item that starts after now has its deadline after now + timeout.
        self._next_deadline = now + self._timeout
        failed: list[Outcome] = []
        for worker in list(self._threads):
            with worker.lock:
                current = worker.current
                if current is None or worker.abandoned:
                    continue
                generation, start, items, offset, began = current
                if generation != self._generation:
                    continue
                if now - began <= self._timeout:
                    self._next_deadline = min(self._next_deadline, began + self._timeout)
                    continue
                worker.abandoned = True
            self._threads.remove(worker)
            self._tally.replaced += 1
            self._add_thread()
            error = TaskTimeoutError(
                f"item ran longer than timeout={self._timeout} s; its thread was abandoned"
            )
            failed.append(Failed(start + offset, items[offset], error))
            # Items of the chunk that ran but were not reported yet, and those after
            # the stuck one, run again on the other threads.
            pieces = [(worker.unreported, offset), (offset + 1, len(items))]
            pieces = [(a, b) for a, b in pieces if a < b]
            for a, b in pieces:
                self._tasks.put((generation, start + a, items[a:b]))
            self._unfinished += len(pieces) - 1
        return failed

    # -- outcomes ----------------------------------------------------------------

    def _next_message(self) -> _Message | None:
        try:
            return self._outcomes.get_nowait()
        except queue.Empty:
            return None

    def _accept(self, message: _Message, outcomes: list[Outcome]) -> bool:
        """Add a thread's outcomes of this call to `outcomes`; whether its chunk is done."""
        if self._init_error is not None:
            error, self._init_error = self._init_error, None
            raise error
        generation, more, finished, work = message
        if generation != self._generation:
            return False  # from a cancelled call of a kept-alive pool
        outcomes.extend(more)
        if work is not None:
            thread, count, seconds, slowest = work
            self._tally.ran(thread, count, seconds)
            for index, item_seconds in slowest:
                self._tally.slow(index, item_seconds)
        if finished:
            self._unfinished -= 1
        return finished


def create(settings: Settings) -> ThreadExecutor:
    return ThreadExecutor(settings)

"""The backend of `async def` functions: items are coroutines on one event loop.

The loop runs on a thread of its own, so `f(items)` works from plain code and from
inside another running loop alike. At most `workers` items are awaited at once; a
`timeout` cancels the item's coroutine for real.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from .._context import worker_thread
from .._errors import TaskTimeoutError
from .._settings import Settings
from . import Failed, Job, Outcome, make_item_call
from ._items import SLOW_ITEM_SECONDS
from ._tally import WorkTally

__all__ = ["CoroutineExecutor", "create", "default_workers"]

# The backend's one worker, in `f.stats.per_worker`: the event loop.
LOOP = "event loop"

# Joining the loop's thread at shutdown waits at most this long.
JOIN_SECONDS = 2.0


def default_workers() -> int:
    """Coroutines wait on I/O, not CPUs: this many in flight suits most services."""
    return 32


class CoroutineExecutor:
    """Schedules one coroutine per item on a private event loop."""

    def __init__(self, settings: Settings, *, serial: bool) -> None:
        self.workers = 1 if serial else settings.workers or default_workers()
        # Each finished item: its outcome, its index and how long it ran.
        self._outcomes: queue.SimpleQueue[tuple[Outcome, int, float]] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._running: set[concurrent.futures.Future[None]] = set()
        self._unreported = 0  # items submitted whose outcome was not collected yet
        self._call: Callable[[Any], Any] | None = None
        self._timeout: float | None = None
        self._tally = WorkTally()
        self._busy = _BusyClock()

    @property
    def tally(self) -> WorkTally:
        """The loop is the one worker: busy while any of its items runs."""
        entry = self._tally.per_worker.get(LOOP)
        if entry is not None:
            entry[1] = self._busy.seconds
        return self._tally

    def start(self, job: Job, total: int | None) -> None:
        self._tally = WorkTally()
        self._busy = _BusyClock()
        self._call = make_item_call(job)
        self._timeout = job.timeout
        if self._loop is None:
            loop = asyncio.new_event_loop()
            ready = threading.Event()
            self._thread = threading.Thread(
                target=self._run_loop, args=(loop, ready), name="parallelize-async", daemon=True
            )
            self._thread.start()
            ready.wait()
            self._loop = loop

    def chunk_size(self) -> int:
        return 1

    def has_room(self) -> bool:
        # No room while outcomes wait: the runner collects them before it draws more
        # from a slow input, so results are not held up behind it.
        if not self._unreported:
            return True
        return self._unreported < self.workers and self._outcomes.empty()

    def submit(self, start: int, items: list[Any]) -> None:
        assert self._loop is not None
        self._unreported += len(items)
        for offset, item in enumerate(items):
            future = asyncio.run_coroutine_threadsafe(self._item(start + offset, item), self._loop)
            self._running.add(future)
            future.add_done_callback(self._running.discard)

    def pending(self) -> bool:
        return self._unreported > 0

    def collect(self) -> list[Outcome]:
        outcomes: list[Outcome] = []
        finished = [self._outcomes.get()]
        while True:
            try:
                finished.append(self._outcomes.get_nowait())
            except queue.Empty:
                break
        for outcome, index, seconds in finished:
            outcomes.append(outcome)
            self._tally.ran(LOOP, 1, 0.0)
            if seconds > SLOW_ITEM_SECONDS:
                self._tally.slow(index, seconds)
        self._unreported -= len(outcomes)
        return outcomes

    def finish(self, *, cancel: bool) -> None:
        running = list(self._running)
        for future in running:
            future.cancel()
        concurrent.futures.wait(running, timeout=JOIN_SECONDS)
        self._running.clear()
        self._unreported = 0
        while not self._outcomes.empty():
            self._outcomes.get_nowait()

    def shutdown(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(JOIN_SECONDS)
            if not thread.is_alive():
                loop.close()

    # -- on the loop's thread ----------------------------------------------------

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        with worker_thread():
            loop.run_forever()

    async def _item(self, index: int, item: Any) -> None:
        call = self._call
        assert call is not None
        outcome: Outcome
        began = self._busy.item_started()
        run = _ItemRun(call, item)
        try:
            done, _ = await asyncio.wait({run.task}, timeout=self._timeout)
        except asyncio.CancelledError:  # the call was cancelled: so is its item
            run.stop()
            self._busy.item_ended()
            raise
        seconds = self._busy.item_ended() - began
        if done:
            ok, value = run.task.result()
            outcome = (index, [value]) if ok else Failed(index, item, value)
        else:
            run.stop()
            message = f"item ran longer than timeout={self._timeout} s; it was cancelled"
            outcome = Failed(index, item, TaskTimeoutError(message))
        self._outcomes.put((outcome, index, seconds))


class _BusyClock:
    """On the loop's thread: the time during which at least one item ran."""

    def __init__(self) -> None:
        self.running = 0
        self.since = 0.0
        self.seconds = 0.0

    def item_started(self) -> float:
        now = time.perf_counter()
        if not self.running:
            self.since = now
        self.running += 1
        return now

    def item_ended(self) -> float:
        now = time.perf_counter()
        self.running -= 1
        if not self.running:
            self.seconds += now - self.since
        return now


class _ItemRun:
    """One item's coroutine as a task whose result is `(ok, value or exception)`.

    Whatever the item raises is its outcome: its own `asyncio.CancelledError` too,
    which would otherwise end the task as cancelled with no outcome, and
    `SystemExit` or `KeyboardInterrupt`, which asyncio re-raises out of the event
    loop, stopping it with every other item in it. Only the cancellation that
    `stop()` asks for ends the task as cancelled.
    """

    def __init__(self, call: Callable[[Any], Any], item: Any) -> None:
        self._stopping = False
        self.task = asyncio.ensure_future(self._run(call, item))

    def stop(self) -> None:
        """Cancel the item for real (a timeout, a cancelled call)."""
        self._stopping = True
        self.task.cancel()

    async def _run(self, call: Callable[[Any], Any], item: Any) -> tuple[bool, Any]:
        try:
            return True, await call(item)
        except asyncio.CancelledError as exc:
            if self._stopping:
                raise
            return False, exc
        except BaseException as exc:
            return False, exc


def create(settings: Settings, *, serial: bool = False) -> CoroutineExecutor:
    return CoroutineExecutor(settings, serial=serial)

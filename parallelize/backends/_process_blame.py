"""Deaths and deadlines of worker processes: which item to blame, which to run again.

A worker's slot (`_process_protocol`) says which item of which chunk it is running;
`Blame` reads it to end a worker whose item overran `timeout`, and, when a worker
has died, to fail only the item it was running and queue again what it held and
had not reported.
"""

from __future__ import annotations

import logging
import time

from .._errors import TaskTimeoutError, WorkerLostError
from . import Failed
from ._crash_reports import FATAL_SIGNALS
from ._process_dispatch import Dispatcher
from ._process_lifecycle import WorkerPool, exit_text
from ._process_protocol import CHUNK_SEQ, RUNNING_OFFSET, SENDING, STARTED_AT, slot_base
from ._process_receiving import Receiver
from ._process_state import Call, Chunk, Worker

__all__ = ["Blame"]

_log = logging.getLogger("parallelize")

# Workers that die this many times in a row (per worker slot) without a single
# result in between cannot start at all (say, spawn cannot import the main module):
# the call fails instead of replacing them forever.
FRUITLESS_DEATHS_PER_WORKER = 3


class Blame:
    """Ends workers past their deadline and settles what a dead worker held."""

    def __init__(
        self, pool: WorkerPool, call: Call, dispatcher: Dispatcher, receiver: Receiver
    ) -> None:
        self.pool = pool
        self.call = call
        self.dispatcher = dispatcher
        self.receiver = receiver

    def on_exit(self, worker: Worker) -> None:
        """A worker process ended: blame the item it was running, rerun the others."""
        if not self.pool.is_current(worker):
            return  # already handled (retired or discarded)
        # Its items' children end with it, and so let go of its pipes: what it said
        # before it died can then be read to the end.
        self.pool.kill(worker)
        if worker.results.poll():
            self.receiver.receive(worker)  # what it said before it died counts
        self.pool.reap(worker)
        exitcode = None if worker.exit_status_lost else worker.process.exitcode
        crash = ""
        if exitcode is not None and -exitcode in FATAL_SIGNALS:
            crash = worker.crash_file.report()
        how = exit_text(worker)
        if worker.kill_reason is None:
            _log.debug("worker %d (pid %d) %s; replacing it", worker.slot, worker.process.pid, how)
        running = worker.in_flight[0] if worker.in_flight else None
        started = running is not None and self._slot(worker, CHUNK_SEQ) == running.seq
        if not started:
            self._count_fruitless_death(worker, exitcode)
        unstarted = list(worker.in_flight)
        if started:
            unstarted.pop(0)
        else:
            running = None
        culprit = self._culprit(worker, running) if running is not None else None
        self.pool.discard(worker)
        for chunk in reversed(unstarted):
            self.dispatcher.requeue_front(chunk, [(0, len(chunk.items))])
        if running is not None:
            first, end = running.reported, len(running.items)
            if culprit is None:  # unknown: run the rest one by one to find it
                self.dispatcher.requeue_one_by_one(running, first, end)
            else:
                if worker.kill_reason is not None:
                    error = worker.kill_reason[1]
                else:
                    error = WorkerLostError(_death_message(self.call.name, how, crash))
                item = running.items[culprit]
                self.call.outcomes.append(Failed(running.start + culprit, item, error))
                self.dispatcher.requeue_front(running, [(first, culprit), (culprit + 1, end)])
        self.call.tally.replaced += 1
        self.pool.spawn(worker.slot)

    def _count_fruitless_death(self, worker: Worker, exitcode: int | None) -> None:
        self.call.fruitless_deaths += 1
        if self.call.fruitless_deaths > FRUITLESS_DEATHS_PER_WORKER * len(self.pool.by_slot):
            self.pool.discard(worker)
            raise WorkerLostError(
                f"worker processes for {self.call.name}() keep dying before they run "
                f"anything (last exit code {exitcode}); the call was stopped. Check that "
                "the module defining the function can be imported by a new process."
            )

    def _culprit(self, worker: Worker, running: Chunk) -> int | None:
        """The offset in `running` of the unreported item the worker was running."""
        if worker.kill_reason is not None and worker.kill_reason[0] is not None:
            offset = worker.kill_reason[0]
            # Killed for an item that had meanwhile reported (a timeout racing its
            # failure): that item has its outcome; the next one is not known.
            return offset if offset >= running.reported else None
        # Killed while sending results (which one hung is not known), or died.
        if len(running.items) - running.reported == 1:
            return running.reported
        if running.tracked:
            tracked = self._running_offset(worker, running)
            if tracked is not None and tracked >= running.reported:
                return tracked
        return None

    def _running_offset(self, worker: Worker, chunk: Chunk) -> int | None:
        if self._slot(worker, CHUNK_SEQ) != chunk.seq:
            return None
        position = self._slot(worker, RUNNING_OFFSET)
        return int(position) if position >= 0 else None

    def _slot(self, worker: Worker, field: int) -> float:
        value: float = self.pool.slots[slot_base(worker.slot) + field]
        return value

    def wait_seconds(self) -> float | None:
        """How long `collect` may wait before a deadline needs checking."""
        timeout = self.call.timeout
        if timeout is None:
            return None
        now = time.monotonic()
        wake = now + min(timeout / 4, 0.5)
        for worker in self.pool.by_slot:
            started = self._started_item(worker)
            if started is not None:
                wake = min(wake, started[1] + timeout)
        return max(0.001, wake - now)

    def _started_item(self, worker: Worker | None) -> tuple[int | None, float] | None:
        """(offset, start time) of the item `worker` runs, read consistently; the
        offset is None while it sends results, under the last item's deadline."""
        if worker is None or not worker.in_flight or worker.kill_reason is not None:
            return None
        chunk = worker.in_flight[0]
        base = slot_base(worker.slot)
        slots = self.pool.slots
        for _ in range(3):
            seq, first = slots[base + CHUNK_SEQ], slots[base + RUNNING_OFFSET]
            began, second = slots[base + STARTED_AT], slots[base + RUNNING_OFFSET]
            if seq != chunk.seq or (first < 0 and first != SENDING):
                return None
            if first == second and slots[base + CHUNK_SEQ] == seq:
                return (None if first == SENDING else int(first)), began
        return None

    def expire_overdue(self) -> None:
        """Kill each worker whose item overran `timeout`; `on_exit` does the rest."""
        timeout = self.call.timeout
        if timeout is None:
            return
        now = time.monotonic()
        for worker in self.pool.by_slot:
            started = self._started_item(worker)
            if worker is None or started is None or now - started[1] <= timeout:
                continue
            offset, _ = started
            _log.debug(
                "worker %d (pid %d) killed: its item ran past timeout=%s s; replacing it",
                worker.slot,
                worker.process.pid,
                timeout,
            )
            worker.kill_reason = (
                offset,
                TaskTimeoutError(
                    f"item ran longer than timeout={timeout} s; "
                    "its worker process was ended and replaced"
                ),
            )
            self.pool.kill(worker)


def _death_message(name: str, how: str, crash: str) -> str:
    message = (
        f"the worker process running {name}() died ({how}) during this item. "
        "Likely causes: a crash in native code (segfault), os._exit() or sys.exit() "
        "outside the item, or the out-of-memory killer; other items were not affected."
    )
    if crash:
        message += f"\nIts Python traceback when it crashed (faulthandler):\n{crash}"
    return message

"""The process backend: a small pool of `multiprocessing` processes we own.

Why not `multiprocessing.Pool`: it hangs when a worker dies, reads the whole input
ahead and cannot end one stuck item (docs/design.md). This pool keeps its shape, a
chunked `map` for ordered calls and submissions with completion handling for
unordered ones, on plain processes, pipes and exit watches (pidfds):

    caller thread (runner)                                 worker process
    ──────────────────────                                 ──────────────
    submit(start, items) ─► queue ─► dispatch ─► task pipe ─► run the chunk,
                                                              noting the running
                                                              item in a shared slot
    collect() ◄─ outcomes ◄─ handle message ◄─ result pipe ◄─ runs of results
             ◄─ WorkerLostError / TaskTimeoutError ◄─ process exit watch + slot

Everything on the parent side runs on the caller's thread, inside `collect()`,
which waits on the result pipes and the processes' exit watches at once: a dead worker
wakes it as surely as a result does, and Ctrl-C interrupts it. Each worker has its
own pipes, so the parent always knows which chunk a worker holds and, from the
shared slot, which item it was running when it died or overran its timeout.
"""

from __future__ import annotations

import logging
import multiprocessing
import select
import sys
import time
from multiprocessing.connection import wait
from typing import Any

from .._cpus import usable_cpus
from .._sending import dumps
from .._settings import Settings
from . import Job, Outcome, make_item_call
from ._chunking import ChunkSizer
from ._crossing import unsendable
from ._process_blame import Blame
from ._process_dispatch import Dispatcher
from ._process_lifecycle import WorkerPool
from ._process_receiving import Receiver
from ._process_state import Call, Worker, WorkerState
from ._segment import CAN_SHARE
from ._shared_args import CallJob
from ._tally import WorkTally
from ._thread_limits import worker_limits

__all__ = ["ProcessExecutor", "create"]

_log = logging.getLogger("parallelize")

# A chunk that took longer than this to draw marks the input as slow: results that
# workers have sent are then read before the next chunk is drawn. A fast input is
# drawn without that check, which costs a system call per chunk.
SLOW_DRAW_SECONDS = 0.005


class ProcessExecutor:
    """The pool: its workers, the chunk queue, and what the call has to collect.

    The parts, one module each: `WorkerPool` starts and ends processes
    (`_process_lifecycle`), `Dispatcher` sends chunks (`_process_dispatch`),
    `Receiver` turns messages into outcomes (`_process_receiving`) and `Blame`
    handles deaths and deadlines (`_process_blame`). The states they share are in
    `_process_state`, the messages in `_process_protocol`.
    """

    def __init__(self, settings: Settings) -> None:
        self.workers = settings.workers or usable_cpus()
        init_payload = (
            dumps((settings.initializer, settings.initargs))
            if settings.initializer is not None
            else None
        )
        context: Any = multiprocessing.get_context(settings.start_method)
        limits = worker_limits(settings.inner_threads, self.workers)
        self._pool = WorkerPool(context, self.workers, init_payload, limits)
        self._call = Call()
        self._sizer = ChunkSizer(settings.chunksize, self.workers)
        max_tasks = settings.max_tasks_per_worker
        self._dispatcher = Dispatcher(self._pool, self._call, self._sizer, max_tasks)
        self._receiver = Receiver(self._pool, self._call, self._dispatcher, self._sizer, max_tasks)
        self._blame = Blame(self._pool, self._call, self._dispatcher, self._receiver)
        self._unstarted: list[int] = []  # slots to start once the first chunk is out
        self._input_may_be_slow = False
        self._input_is_slow = False  # the last chunk took a while to draw
        self._room_given_at = 0.0
        self._job: CallJob | None = None  # the call's, until it ends
        # Kept pools: the last call's job, released, its segment kept to compare with.
        self._keep_alive = settings.keep_alive
        self._kept_job: CallJob | None = None
        # Kept workers may still hold a large job of an earlier call (its segment
        # mapped, or its descriptor): the next call gives them its job at once.
        self._kept_may_hold_large_job = False

    # -- the runner's side -------------------------------------------------------

    @property
    def tally(self) -> WorkTally:
        return self._call.tally

    def start(self, job: Job, total: int | None) -> None:
        call = self._call
        call.tally = WorkTally()
        call.job_id += 1
        call.name = getattr(job.func, "__name__", "function")
        call.timeout = job.timeout
        try:
            packed = CallJob(call.job_id, (make_item_call(job), job.timeout is not None))
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # a `__reduce__` calling sys.exit() included
            raise unsendable(exc, f"{call.name}() or its extra arguments") from exc
        kept_job, self._kept_job = self._kept_job, None
        if kept_job is not None:
            try:
                if packed.same_as(kept_job):
                    packed.adopt(kept_job)
                    call.job_id = packed.job_id
            finally:
                kept_job.close()
        self._job = packed
        call.fruitless_deaths = 0
        self._sizer.reset(total)
        # An input with a length is in memory, drawn at once; one without may be a
        # generator that takes its time.
        self._input_may_be_slow = total is None
        self._input_is_slow = False
        self._room_given_at = time.monotonic()
        self._unstarted = []
        kept: list[Worker] = []
        for slot, worker in enumerate(self._pool.by_slot):
            if worker is not None and _reusable(self._pool, worker):
                kept.append(worker)
                continue
            if worker is not None:
                self._pool.discard(worker)
            self._unstarted.append(slot)
        forked = self._pool.context.get_start_method() == "fork"
        # Workers forked from now on inherit the job: a segment is for the others, and
        # on a kept pool, for the next call to compare its job with.
        kept_open = any(self._pool.opens_caller_fds(w) for w in kept) if packed.large else False
        wanted = not forked or kept_open or self._keep_alive
        if packed.large and CAN_SHARE and packed.segment is None and wanted:
            packed.share(kept=self._keep_alive)
        call.job_message = packed.message(forked=forked)
        self._pool.job = packed
        if packed.large:  # set first: an interrupt below must not lose it
            self._kept_may_hold_large_job = True
        if kept and self._kept_may_hold_large_job:
            self._give_job_to_kept(packed, kept, call.job_message)
        self._kept_may_hold_large_job = packed.large
        # One worker now; the others once the first chunk is on its way to it, so the
        # first items run while they start (a cold call starts every worker).
        if self._unstarted and not self._pool.live():
            self._pool.spawn(self._unstarted.pop(0))

    def _give_job_to_kept(self, packed: CallJob, kept: list[Worker], message: bytes) -> None:
        """Give the job to each kept worker now, not with its first chunk: a worker that
        gets no chunk this call then still lets go of an earlier call's large job. A
        kept worker maps the segment through /proc where it can; if it cannot, an idle
        one gets the job through its pipe, and one still starting is started anew."""
        pool = self._pool
        for worker in kept:
            if worker.job_id == packed.job_id:  # the last call's job, unchanged
                continue
            buffers: list[Any] = []
            envelope = message
            if packed.large and not (packed.segment is not None and pool.opens_caller_fds(worker)):
                envelope, buffers = packed.by_pipe()
            # Idle, it is reading: any size goes in. Starting, only what fits its pipe.
            reading = worker.state is WorkerState.IDLE
            if reading or (not buffers and pool.fits_in_task_pipe(worker, len(envelope))):
                pool.give_job(worker, packed.job_id, envelope, buffers)
            else:  # starting: nothing to lose, and we must not block on it
                pool.discard(worker)
                self._unstarted.append(worker.slot)

    def chunk_size(self) -> int:
        return self._sizer.size

    def has_room(self) -> bool:
        if self._dispatcher.queue:
            return False
        busy = [w for w in self._pool.live() if w.in_flight]
        if sum(len(w.in_flight) for w in busy) >= 2 * self.workers:
            return False
        if self._input_is_slow:
            # What the workers have sent already is read now, and its outcomes go to
            # the caller before more input is drawn: a slow input must not hold them up.
            for worker in _with_messages(busy):
                self._receiver.receive(worker)
            if self._call.outcomes:
                return False
        if self._input_may_be_slow:
            self._room_given_at = time.monotonic()
        return True

    def submit(self, start: int, items: list[Any]) -> None:
        if self._input_may_be_slow:  # did drawing this chunk take a while?
            drawn_in = time.monotonic() - self._room_given_at
            self._input_is_slow = drawn_in > SLOW_DRAW_SECONDS
        self._dispatcher.add(start, items)
        self._dispatcher.dispatch()
        if self._unstarted:
            for slot in self._unstarted:
                self._pool.spawn(slot)
            self._unstarted = []
            self._dispatcher.dispatch()

    def pending(self) -> bool:
        return bool(self._call.outcomes or self._dispatcher.queue) or any(
            w.in_flight for w in self._pool.live()
        )

    def collect(self) -> list[Outcome]:
        # A chunk's last message may carry no result (its last item failed earlier):
        # stop waiting as soon as nothing is pending, outcome or not. Return, too, once
        # the queued chunk has gone to a worker: the runner may then draw the next.
        call, dispatcher = self._call, self._dispatcher
        queued = bool(dispatcher.queue)
        if call.outcomes:  # read by has_room(): deaths and deadlines are due all the same
            self._poll(0.0)
        while not call.outcomes and self.pending():
            dispatcher.dispatch()
            if call.outcomes or (queued and not dispatcher.queue):
                break
            self._poll(self._blame.wait_seconds())
        outcomes, call.outcomes = call.outcomes, []
        return outcomes

    def _poll(self, seconds: float | None) -> None:
        """Wait up to `seconds` for messages and exits, handle them, end overdue items."""
        pool = self._pool
        workers = pool.live()
        results = {w.results: w for w in workers if w.in_flight or w.state is WorkerState.STARTING}
        exits = {w.exit_fd: w for w in workers}
        ready = wait([*results, *exits], seconds)
        for end in ready:
            if end in results and pool.is_current(results[end]):
                self._receiver.receive(results[end])
        for end in ready:
            if end in exits:
                self._blame.on_exit(exits[end])
        self._blame.expire_overdue()

    def finish(self, *, cancel: bool) -> None:
        if cancel:
            for worker in self._pool.live():
                if worker.in_flight or worker.holds_half_a_message:
                    _log.debug(
                        "worker %d (pid %d) killed: the call stopped with work in it",
                        worker.slot,
                        worker.process.pid,
                    )
                    self._pool.discard(worker)
        self._dispatcher.queue.clear()
        self._call.outcomes = []
        self._release_job()

    def shutdown(self) -> None:
        self._unstarted = []
        self._release_job()
        if self._kept_job is not None:
            self._kept_job.close()
            self._kept_job = None
        self._pool.end_all()
        self._kept_may_hold_large_job = False

    def _release_job(self) -> None:
        """Drop the call's job; close its segment (workers keep their mappings), or on a
        kept pool keep it for the next call to compare with."""
        packed, self._job = self._job, None
        self._pool.job = None
        self._call.job_message = b""
        if packed is None:
            return
        if self._keep_alive and packed.segment is not None:
            packed.release()
            self._kept_job = packed
        else:
            packed.close()


def _with_messages(workers: list[Worker]) -> list[Worker]:
    """The `workers` whose result pipe has something to read now (one system call)."""
    if not workers:
        return []
    if sys.platform == "win32":
        readable = set(wait([w.results for w in workers], 0))
        return [w for w in workers if w.results in readable]
    fds = select.select([w.results.fileno() for w in workers], [], [], 0)[0]
    return [w for w in workers if w.results.fileno() in fds]


def _reusable(pool: WorkerPool, worker: Worker) -> bool:
    """Whether a worker kept from an earlier call can take this call's work."""
    state_ok = worker.state is WorkerState.IDLE or worker.state is WorkerState.STARTING
    return state_ok and not worker.in_flight and not pool.has_exited(worker)


def create(settings: Settings) -> ProcessExecutor:
    return ProcessExecutor(settings)

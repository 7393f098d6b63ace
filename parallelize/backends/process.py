"""The process backend: a small pool of `multiprocessing` processes we own.

Why not `multiprocessing.Pool`: it hangs when a worker dies, reads the whole input
ahead and cannot end one stuck item (docs/design.md). This pool keeps its shape, a
chunked `map` for ordered calls and submissions with completion handling for
unordered ones, on plain processes, pipes and sentinels:

    caller thread (runner)                                 worker process
    ──────────────────────                                 ──────────────
    submit(start, items) ─► queue ─► dispatch ─► task pipe ─► run the chunk,
                                                              noting the running
                                                              item in a shared slot
    collect() ◄─ outcomes ◄─ handle message ◄─ result pipe ◄─ runs of results
             ◄─ WorkerLostError / TaskTimeoutError ◄─ process sentinel + slot

Everything on the parent side runs on the caller's thread, inside `collect()`,
which waits on the result pipes and the process sentinels at once: a dead worker
wakes it as surely as a result does, and Ctrl-C interrupts it. Each worker has its
own pipes, so the parent always knows which chunk a worker holds and, from the
shared slot, which item it was running when it died or overran its timeout.
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import os
import pickle
import signal
import sys
import time
from collections.abc import Iterator
from multiprocessing.connection import wait
from typing import Any

from .._errors import ParallelError, RemoteTraceback, TaskTimeoutError, WorkerLostError
from .._sending import dumps, loads, main_is_a_file
from .._settings import Settings
from . import Failed, Job, Outcome, make_item_call
from ._chunking import ChunkSizer
from ._crossing import unsendable
from ._process_worker import SLOT_FIELDS, worker_main
from ._slots import shared_doubles
from ._wire import receive, send, widen

__all__ = ["ProcessExecutor", "create", "usable_cpus"]

# A second chunk is queued on a busy worker only if its message is this small: it
# then fits in the pipe's buffer, so the parent never blocks on a worker that is
# itself blocked sending results back.
PREFETCH_BYTES = 16 * 1024
# ...and only if chunks are known to take less than this: queuing hides the round
# trip between chunks (~0.1 ms), but a chunk queued behind a slow one waits while
# other workers may be idle, which costs uneven workloads far more.
PREFETCH_CHUNK_SECONDS = 0.005
# Workers that die this many times in a row (per worker slot) without a single
# result in between cannot start at all (say, spawn cannot import the main module):
# the call fails instead of replacing them forever.
FRUITLESS_DEATHS_PER_WORKER = 3
# Workers told to stop get this long to exit before they are killed.
STOP_SECONDS = 1.0
_STOP = pickle.dumps(None)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity), not all CPUs of the machine."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


class _Chunk:
    """Consecutive items sent as one message; `reported` counts items answered."""

    __slots__ = ("buffers", "envelope", "items", "reported", "seq", "size", "start", "tracked")

    def __init__(self, seq: int, start: int, items: list[Any]) -> None:
        self.seq = seq
        self.start = start
        self.items = items
        self.reported = 0
        self.tracked = False
        self.envelope: bytes | None = None  # set while encoded and not yet sent
        self.buffers: list[Any] = []
        self.size = 0  # bytes of the encoded message


class _Worker:
    """One worker process, its two pipe ends and the chunks it holds, oldest first."""

    def __init__(self, process: Any, tasks: Any, results: Any, slot: int) -> None:
        self.process = process
        self.tasks = tasks
        self.results = results
        self.slot = slot
        self.in_flight: collections.deque[_Chunk] = collections.deque()
        self.job_id = 0
        self.items_sent = 0
        self.broken = False
        self.ready = False  # it said it started (or is forked and has nothing to start)
        self.kill_reason: tuple[int, BaseException] | None = None


class ProcessExecutor:
    """The pool: workers by slot, a queue of chunks, and outcomes ready to collect."""

    def __init__(self, settings: Settings) -> None:
        self.workers = settings.workers or usable_cpus()
        self._context: Any = multiprocessing.get_context(settings.start_method)
        self._max_tasks = settings.max_tasks_per_worker
        self._init_payload = (
            dumps((settings.initializer, settings.initargs))
            if settings.initializer is not None
            else None
        )
        self._pool: list[_Worker | None] = [None] * self.workers
        self._slots: Any = None
        self._queue: collections.deque[_Chunk] = collections.deque()
        self._ready: list[Outcome] = []
        self._sizer = ChunkSizer(settings.chunksize, self.workers)
        self._seq = 0
        self._job_id = 0
        self._job_message = b""
        self._job_name = ""
        self._timeout: float | None = None
        self._fruitless_deaths = 0
        self._unstarted: list[int] = []  # slots to start once the first chunk is out

    # -- the runner's side -------------------------------------------------------

    def start(self, job: Job, total: int | None) -> None:
        self._job_id += 1
        self._job_name = getattr(job.func, "__name__", "function")
        self._timeout = job.timeout
        try:
            payload = dumps((make_item_call(job), job.timeout is not None))
        except Exception as exc:
            raise unsendable(exc, f"{self._job_name}() or its extra arguments") from exc
        self._job_message = pickle.dumps(("job", self._job_id, payload), pickle.HIGHEST_PROTOCOL)
        self._sizer.reset(total)
        if self._slots is None:
            self._slots = shared_doubles(self._context, SLOT_FIELDS * self.workers)
        self._unstarted = []
        for slot, worker in enumerate(self._pool):
            if worker is None or worker.broken or not worker.process.is_alive():
                if worker is not None:
                    self._discard(worker)
                self._unstarted.append(slot)
        # One worker now; the others once the first chunk is on its way to it, so the
        # first items run while they start (a cold call starts every worker).
        if self._unstarted and not any(self._pool):
            self._spawn(self._unstarted.pop(0))

    def chunk_size(self) -> int:
        return self._sizer.size

    def has_room(self) -> bool:
        if self._queue:
            return False
        return sum(len(w.in_flight) for w in self._pool if w is not None) < 2 * self.workers

    def submit(self, start: int, items: list[Any]) -> None:
        self._seq += 1
        self._queue.append(_Chunk(self._seq, start, items))
        self._dispatch()
        if self._unstarted:
            for slot in self._unstarted:
                self._spawn(slot)
            self._unstarted = []
            self._dispatch()

    def pending(self) -> bool:
        return bool(self._ready or self._queue) or any(
            w is not None and w.in_flight for w in self._pool
        )

    def collect(self) -> list[Outcome]:
        # A chunk's last message may carry no result (its last item failed earlier):
        # stop waiting as soon as nothing is pending, outcome or not. Return, too, once
        # the queued chunk has gone to a worker: the runner may then draw the next.
        queued = bool(self._queue)
        while not self._ready and self.pending():
            self._dispatch()
            if self._ready or (queued and not self._queue):
                break
            workers = [w for w in self._pool if w is not None]
            results = {w.results: w for w in workers if w.in_flight or not w.ready}
            sentinels = {w.process.sentinel: w for w in workers}
            ready = wait([*results, *sentinels], self._wait_seconds())
            for end in ready:
                if end in results and self._pool[results[end].slot] is results[end]:
                    self._receive(results[end])
            for end in ready:
                if end in sentinels:
                    self._on_exit(sentinels[end])
            self._expire_overdue()
        outcomes, self._ready = self._ready, []
        return outcomes

    def finish(self, *, cancel: bool) -> None:
        if cancel:
            for worker in self._pool:
                if worker is not None and worker.in_flight:
                    self._discard(worker)
        self._queue.clear()
        self._ready = []

    def shutdown(self) -> None:
        self._unstarted = []
        workers = [w for w in self._pool if w is not None]
        self._pool = [None] * self.workers
        for worker in workers:
            if not worker.ready:  # still starting, never given work: nothing to lose
                worker.process.kill()
                continue
            with contextlib.suppress(OSError):
                send(worker.tasks, _STOP)
        deadline = time.monotonic() + STOP_SECONDS
        for worker in workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            self._discard(worker)
        if self._slots is not None:
            self._slots.close()
            self._slots = None

    # -- workers -----------------------------------------------------------------

    def _spawn(self, slot: int) -> None:
        tasks_out, tasks_in = self._context.Pipe(duplex=False)
        results_out, results_in = self._context.Pipe(duplex=False)
        widen(tasks_in)
        widen(results_in)
        close_fds: list[int] = []
        method = self._context.get_start_method()
        if method == "fork":
            close_fds = [tasks_in.fileno(), results_out.fileno()]
            for other in self._pool:
                if other is not None:
                    close_fds += [other.tasks.fileno(), other.results.fileno()]
        process = self._context.Process(
            target=worker_main,
            args=(
                tasks_out,
                results_in,
                self._slots,
                slot,
                self._init_payload,
                close_fds,
                method == "spawn",
            ),
            name=f"parallelize-worker-{slot}",
            daemon=True,
        )
        with _main_hidden_unless_a_file():
            process.start()
        tasks_out.close()
        results_in.close()
        worker = _Worker(process, tasks_in, results_out, slot)
        # A forked worker with no initializer is running our loop within a millisecond:
        # its work waits in the pipe instead of for its "ready".
        worker.ready = method == "fork" and self._init_payload is None
        self._pool[slot] = worker

    def _discard(self, worker: _Worker) -> None:
        """End `worker` for good: kill it if needed, reap it, close its pipes."""
        if self._pool[worker.slot] is worker:
            self._pool[worker.slot] = None
        process = worker.process
        if process.exitcode is None:
            process.kill()
        process.join()
        for end in (worker.tasks, worker.results):
            end.close()
        process.close()

    # -- sending -----------------------------------------------------------------

    def _dispatch(self) -> None:
        """Send queued chunks to idle workers, or to busy ones if the message is small."""
        while self._queue:
            chunk = self._queue[0]
            if chunk.envelope is None and not self._encode(chunk):
                continue
            assert chunk.envelope is not None
            worker = self._pick_worker(
                chunk.size <= PREFETCH_BYTES
                and self._sizer.runs_within(len(chunk.items), PREFETCH_CHUNK_SECONDS)
            )
            if worker is None:
                return
            if self._max_tasks is not None:
                room = self._max_tasks - worker.items_sent
                if room < len(chunk.items):
                    self._split_front(chunk, room)
                    continue
            self._queue.popleft()
            try:
                if worker.job_id != self._job_id:
                    send(worker.tasks, self._job_message)
                    worker.job_id = self._job_id
                send(worker.tasks, chunk.envelope, chunk.buffers)
            except OSError:  # the worker died; its sentinel will tell collect()
                worker.broken = True
            chunk.envelope = None
            chunk.buffers = []
            worker.in_flight.append(chunk)
            worker.items_sent += len(chunk.items)

    def _pick_worker(self, small: bool) -> _Worker | None:
        best = None
        for worker in self._pool:
            if worker is None or worker.broken or not worker.ready:
                continue
            if self._max_tasks is not None and worker.items_sent >= self._max_tasks:
                continue
            busy = len(worker.in_flight)
            if busy == 0:
                return worker
            if busy == 1 and small and best is None:
                best = worker
        return best

    def _encode(self, chunk: _Chunk) -> bool:
        """Pickle the chunk's message; fail the items that cannot be pickled."""
        chunk.tracked = self._timeout is not None or self._sizer.should_track(len(chunk.items))
        out_of_band: list[memoryview] = []
        try:
            items = dumps(chunk.items, buffers=out_of_band)
        except Exception:
            self._queue.popleft()
            self._fail_unpicklable(chunk)
            return False
        message = ("chunk", chunk.seq, chunk.tracked)
        chunk.envelope = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        chunk.buffers = [items, *out_of_band]
        chunk.size = len(items) + sum(view.nbytes for view in out_of_band)
        return True

    def _fail_unpicklable(self, chunk: _Chunk) -> None:
        """Fail each item that cannot be pickled; requeue the others."""
        good: list[tuple[int, int]] = []
        run_start = 0
        for offset, item in enumerate(chunk.items):
            try:
                dumps(item)
            except Exception as exc:
                error = unsendable(exc, "the item, to be sent to a worker process,")
                self._ready.append(Failed(chunk.start + offset, item, error))
                good.append((run_start, offset))
                run_start = offset + 1
        good.append((run_start, len(chunk.items)))
        self._requeue_front(chunk, good)

    def _split_front(self, chunk: _Chunk, size: int) -> None:
        self._queue.popleft()
        self._requeue_front(chunk, [(0, size), (size, len(chunk.items))])

    def _requeue_front(self, chunk: _Chunk, pieces: list[tuple[int, int]]) -> None:
        """Put `chunk.items[a:b]` for each piece back at the head of the queue, in order."""
        for a, b in reversed(pieces):
            if a >= b:
                continue
            self._seq += 1
            self._queue.appendleft(_Chunk(self._seq, chunk.start + a, chunk.items[a:b]))

    # -- receiving ---------------------------------------------------------------

    def _receive(self, worker: _Worker) -> None:
        """Handle every message waiting on `worker`'s result pipe."""
        try:
            while True:
                envelope, buffers = receive(worker.results)
                self._handle(worker, pickle.loads(envelope), buffers)
                if not worker.results.poll():
                    return
        except (EOFError, OSError):
            worker.broken = True  # it is exiting; its sentinel follows

    def _handle(self, worker: _Worker, message: tuple[Any, ...], buffers: list[memoryview]) -> None:
        kind = message[0]
        if kind == "ready":
            worker.ready = True
            return
        self._fruitless_deaths = 0
        if kind == "r":
            _, _seq, offset, count, has_failure, elapsed = message
            chunk = worker.in_flight[0]
            chunk.reported = offset + count + has_failure
            try:
                values, failure = loads(buffers[0], buffers[1:])
            except Exception as exc:
                self._unrebuildable(chunk, offset, count + has_failure, exc)
            else:
                if values:
                    self._ready.append((chunk.start + offset, values))
                if failure is not None:
                    self._ready.append(self._failed(chunk, offset + count, failure))
            if elapsed is not None:
                worker.in_flight.popleft()
                self._sizer.record(len(chunk.items), elapsed)
                self._retire_if_spent(worker)
        elif kind == "u":  # the chunk could not be unpickled in the worker
            chunk = worker.in_flight.popleft()
            if len(chunk.items) == 1:
                self._ready.append(self._failed(chunk, 0, message[2]))
            else:
                self._requeue_front(chunk, [(i, i + 1) for i in range(len(chunk.items))])
        else:  # "j" or "i": the function or the initializer cannot run at all
            error, text = message[-1]
            error.__cause__ = RemoteTraceback(text)
            raise error

    def _unrebuildable(self, chunk: _Chunk, offset: int, count: int, exc: Exception) -> None:
        """Outcomes that could not be unpickled here: fail a lone item, else run the
        items again one by one so the one at fault is found and only it fails."""
        if count > 1:
            self._requeue_front(chunk, [(i, i + 1) for i in range(offset, offset + count)])
            return
        error = ParallelError(
            "the outcome of this item could not be rebuilt in the calling process: "
            f"{type(exc).__name__}: {exc}"
        )
        self._ready.append(Failed(chunk.start + offset, chunk.items[offset], error))

    def _failed(self, chunk: _Chunk, offset: int, failure: tuple[BaseException, str]) -> Failed:
        exc, text = failure
        exc.__cause__ = RemoteTraceback(text)
        return Failed(chunk.start + offset, chunk.items[offset], exc)

    def _retire_if_spent(self, worker: _Worker) -> None:
        """Replace a worker that ran `max_tasks_per_worker` items, once it is idle."""
        if self._max_tasks is None or worker.in_flight or worker.items_sent < self._max_tasks:
            return
        with contextlib.suppress(OSError):
            send(worker.tasks, _STOP)
        worker.process.join(STOP_SECONDS)
        self._discard(worker)
        self._spawn(worker.slot)

    # -- failures ----------------------------------------------------------------

    def _on_exit(self, worker: _Worker) -> None:
        """A worker process ended: blame the item it was running, rerun the others."""
        if self._pool[worker.slot] is not worker:
            return  # already handled (retired or discarded)
        self._receive(worker)
        worker.process.join()
        exitcode = worker.process.exitcode
        running = worker.in_flight.popleft() if worker.in_flight else None
        started = running is not None and self._slots[worker.slot * SLOT_FIELDS] == running.seq
        if not started:
            self._fruitless_deaths += 1
            if self._fruitless_deaths > FRUITLESS_DEATHS_PER_WORKER * self.workers:
                self._discard(worker)
                raise WorkerLostError(
                    f"worker processes for {self._job_name}() keep dying before they run "
                    f"anything (last exit code {exitcode}); the call was stopped. Check that "
                    "the module defining the function can be imported by a new process."
                )
        unstarted = list(worker.in_flight)
        if running is not None and not started:
            unstarted.insert(0, running)
            running = None
        culprit = self._culprit(worker, running) if running is not None else None
        self._discard(worker)
        for chunk in reversed(unstarted):
            self._requeue_front(chunk, [(0, len(chunk.items))])
        if running is not None:
            first, end = running.reported, len(running.items)
            if culprit is None:  # unknown: run the rest one by one to find it
                self._requeue_front(running, [(i, i + 1) for i in range(first, end)])
            else:
                if worker.kill_reason is not None:
                    error = worker.kill_reason[1]
                else:
                    error = WorkerLostError(_death_message(self._job_name, exitcode))
                self._ready.append(Failed(running.start + culprit, running.items[culprit], error))
                self._requeue_front(running, [(first, culprit), (culprit + 1, end)])
        self._spawn(worker.slot)

    def _culprit(self, worker: _Worker, running: _Chunk) -> int | None:
        """The offset in `running` of the item the worker was running, if known."""
        if worker.kill_reason is not None:
            return worker.kill_reason[0]
        if len(running.items) - running.reported == 1:
            return running.reported
        if running.tracked:
            offset = self._running_offset(worker, running)
            if offset is not None and offset >= running.reported:
                return offset
        return None

    def _running_offset(self, worker: _Worker, chunk: _Chunk) -> int | None:
        base = worker.slot * SLOT_FIELDS
        slots = self._slots
        if slots[base] != chunk.seq:
            return None
        position = slots[base + 1]
        return int(position) if position >= 0 else None

    def _wait_seconds(self) -> float | None:
        if self._timeout is None:
            return None
        now = time.monotonic()
        wake = now + min(self._timeout / 4, 0.5)
        for worker in self._pool:
            started = self._started_item(worker)
            if started is not None:
                wake = min(wake, started[1] + self._timeout)
        return max(0.001, wake - now)

    def _started_item(self, worker: _Worker | None) -> tuple[int, float] | None:
        """(offset, start time) of the item `worker` runs, read consistently."""
        if worker is None or not worker.in_flight or worker.kill_reason is not None:
            return None
        chunk = worker.in_flight[0]
        base = worker.slot * SLOT_FIELDS
        slots = self._slots
        for _ in range(3):
            seq, first = slots[base], slots[base + 1]
            began, second = slots[base + 2], slots[base + 1]
            if seq != chunk.seq or first < 0:
                return None
            if first == second and slots[base] == seq:
                return int(first), began
        return None

    def _expire_overdue(self) -> None:
        """Kill each worker whose item overran `timeout`; `_on_exit` does the rest."""
        if self._timeout is None:
            return
        now = time.monotonic()
        for worker in self._pool:
            started = self._started_item(worker)
            if worker is None or started is None or now - started[1] <= self._timeout:
                continue
            offset, _ = started
            worker.kill_reason = (
                offset,
                TaskTimeoutError(
                    f"item ran longer than timeout={self._timeout} s; "
                    "its worker process was ended and replaced"
                ),
            )
            worker.process.kill()


@contextlib.contextmanager
def _main_hidden_unless_a_file() -> Iterator[None]:
    """Keep spawn and forkserver from re-running a `__main__` that is not a file.

    Python's spawn re-runs `__main__.__file__` in each new process; for source read
    from stdin (`python -`) that "file" is `<stdin>`, and every worker would die at
    start-up. What such a `__main__` defines travels by value anyway (`_sending`).
    """
    main = sys.modules["__main__"]
    path = getattr(main, "__file__", None)
    if path is None or main_is_a_file():
        yield
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


def _death_message(name: str, exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            how = f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            how = f"killed by signal {-exitcode}"
    else:
        how = f"exited with code {exitcode}"
    return (
        f"the worker process running {name}() died ({how}) during this item. "
        "Likely causes: a crash in native code (segfault), os._exit() or sys.exit() "
        "outside the item, or the out-of-memory killer; other items were not affected."
    )


def create(settings: Settings) -> ProcessExecutor:
    return ProcessExecutor(settings)

"""The child side of the process backend: the loop each worker process runs.

Kept apart from `process.py` so a worker imports only what it needs. What it sends
and receives, and the slot fields it writes, are named in `_process_protocol`.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

from .._context import mark_worker_process
from .._sending import dumps, loads
from ._crash_reports import CrashFile, report_crashes_to
from ._crossing import error_payload, result_errors, unsendable
from ._items import run_items
from ._process_detach import detach_from_caller
from ._process_protocol import (
    CHUNK_SEQ,
    OPENS_CALLER_FDS,
    RUNNING_OFFSET,
    SENDING,
    STARTED_AT,
    ChunkUnreadable,
    InitializerFailed,
    JobUnloadable,
    LoadJob,
    Ready,
    Results,
    decode,
    slot_base,
    wire_form,
)
from ._segment import close_inherited_segments
from ._shared_args import Handoff, WorkerJobs
from ._thread_limits import apply_in_worker
from ._wire import receive
from ._wire import send as send_message

__all__ = ["TIMED_CHUNK_ITEMS", "worker_main"]

# Chunks of at most this many items have each item timed for `f.stats.slowest`
# whatever their items take: timing costs ~0.2 us an item, ~10 us here, about what
# the chunk's own message costs. Larger chunks of items under 50 us (untracked) are
# not timed item by item: W1's items take 0.05 us, and timing them would cost 4x.
TIMED_CHUNK_ITEMS = 64

# Python 3.13 (gh-83856) made fork and forkserver children run the exit handlers
# registered in them, after dropping the inherited ones; before it they ran none.
# Spawned children always ran their own. `worker_main` gives older Pythons 3.13's rule.
_MULTIPROCESSING_RUNS_CHILD_EXIT_HANDLERS = sys.version_info >= (3, 13)


def worker_main(
    tasks: Any,
    results: Any,
    slots: Any,
    slot: int,
    init_payload: bytes | None,
    close_fds: list[int],
    spawned: bool,
    lifeline: Any,
    thread_limits: dict[str, str],
    handoff: Handoff,
    crash_file: CrashFile,
) -> None:
    """Run chunks from `tasks` until told to stop or the parent is gone.

    `lifeline` is the read end of a pipe only the caller writes to, and never does:
    it turns readable when the caller dies (`_process_detach`); `thread_limits` are
    the numeric libraries' thread limits (`_thread_limits`); `handoff` brings the job
    of the call under way, or what it takes to find it (`_shared_args`); `crash_file`
    gets its Python traceback if it dies of a fatal signal. A worker that ends on
    its own runs the exit handlers registered in it (by the initializer, by items, by
    modules they imported) and never those it inherited from the caller, on every
    Python and start method.
    """
    with _only_own_exit_handlers(spawned):
        for fd in close_fds:  # under fork: the parent's ends of other workers' pipes
            with contextlib.suppress(OSError):
                os.close(fd)
        close_inherited_segments()  # under fork: those of calls under way
        detach_from_caller(lifeline)
        report_crashes_to(crash_file)
        apply_in_worker(thread_limits)  # before the initializer and the job load anything
        mark_worker_process()
        base = slot_base(slot)
        jobs = WorkerJobs(handoff, lifeline.fileno())
        slots[base + OPENS_CALLER_FDS] = 1.0 if jobs.opens_caller_fds() else -1.0

        def send(message: Any, buffers: list[Any] | None = None) -> None:
            send_message(results, dumps(wire_form(message)), buffers or ())

        if init_payload is not None:
            try:
                initializer, initargs = loads(init_payload)
                initializer(*initargs)
            except BaseException as exc:
                send(InitializerFailed(error_payload(exc)))
                return
        send(Ready())

        call: Any = None
        timed = False
        # Why the last job could not be loaded: said when a chunk of it comes, as a
        # job given to a kept worker ahead of its work may never get any.
        unloadable: JobUnloadable | None = None
        inherited = jobs.take_inherited()
        if inherited is not None:
            job_id, parts = inherited
            try:
                call, timed = loads(parts[0], parts[1:])
            except BaseException as exc:
                unloadable = JobUnloadable(job_id, error_payload(exc))
            del inherited, parts
        while True:
            try:
                envelope, buffers = receive(tasks)
            except (EOFError, OSError):
                return  # the parent is gone
            message = decode(envelope)
            if message is None:
                if spawned:
                    _exit_quickly()
                return
            if type(message) is LoadJob:
                call, unloadable = None, None  # the last job's memory goes first
                try:
                    call, timed = jobs.rebuild(message, buffers)
                except BaseException as exc:
                    unloadable = JobUnloadable(message.job_id, error_payload(exc))
                continue
            if unloadable is not None:
                send(unloadable)
                continue
            seq = message.seq
            slots[base + RUNNING_OFFSET] = -1.0
            slots[base + CHUNK_SEQ] = seq
            try:
                items = loads(buffers[0], buffers[1:])
            except BaseException as exc:
                send(ChunkUnreadable(seq, error_payload(exc)))
                continue
            tracker = _tracker(slots, base, timed) if message.tracked else None
            # Items are timed one by one where that costs little beside them: in
            # chunks of slow items (tracked ones) and in small chunks.
            slow: list[tuple[int, float]] | None = None
            if message.tracked or len(items) <= TIMED_CHUNK_ITEMS:
                slow = []
            report = _reporter(send, slots, base, seq, timed, slow)
            run_items(call, items, report, tracker, slow=slow)


@contextlib.contextmanager
def _only_own_exit_handlers(spawned: bool) -> Iterator[None]:
    """Under fork and forkserver before 3.13: drop the inherited exit handlers, and run
    those registered in the worker when it ends (3.13's multiprocessing does both)."""
    if spawned or _MULTIPROCESSING_RUNS_CHILD_EXIT_HANDLERS:
        yield
        return
    atexit._clear()  # the inherited ones are the caller's (or the fork server's)
    try:
        yield
    finally:
        atexit._run_exitfuncs()


def _exit_quickly() -> None:
    """End a spawned worker told to stop without tearing its interpreter down.

    Fork and forkserver children already end with `os._exit` (`worker_main` runs
    their own exit handlers first). A spawned one would otherwise tear
    its whole interpreter down, tens of milliseconds the caller waits for with a few
    libraries loaded. Its own exit handlers still run and its output is flushed.
    Under coverage measurement it ends normally, so coverage saves its data.
    """
    if "coverage" in sys.modules:
        return
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)


def _reporter(
    send: Any, slots: Any, base: int, seq: int, timed: bool, slow: list[tuple[int, float]] | None
) -> Any:
    """The `report` callback of one chunk: sends runs of results and failures, and
    with the last of them the chunk's slow items (`slow`, filled by `run_items`).

    Under a timeout the slot says SENDING while it pickles and sends, and keeps the
    start time of the last item run: sending counts towards that item's deadline.
    """
    began = time.perf_counter()
    position = base + RUNNING_OFFSET
    sending = SENDING if timed else -1.0

    def report(offset: int, values: list[Any], error: BaseException | None) -> None:
        slots[position] = sending  # not running an item: a death blames none of them
        failure = None if error is None else error_payload(error)
        elapsed = None if error is not None else time.perf_counter() - began
        slowest = tuple(slow) if slow and error is None else ()
        _send_run(send, seq, offset, values, failure, elapsed, slowest)
        slots[position] = -1.0

    return report


Slow = tuple[tuple[int, float], ...]


def _send_run(
    send: Any,
    seq: int,
    offset: int,
    values: list[Any],
    failure: Any,
    elapsed: float | None,
    slow: Slow = (),
) -> None:
    """Send a run of results (the values and failure pickled apart, as the message's
    buffers); if they do not pickle, those that do, failing the others with the
    reason. Whatever pickling a result raises fails it: `SystemExit` from a
    `__reduce__` too."""

    def results(start: int, end: int, error: Any, seconds: float | None, slowest: Slow) -> None:
        buffers: list[Any] = []
        body = dumps((values[start:end], error), buffers=buffers)
        count, failed = end - start, error is not None
        send(Results(seq, offset + start, count, failed, seconds, slowest), [body, *buffers])

    try:
        results(0, len(values), failure, elapsed, slow)
        return
    except BaseException:
        pass
    start = 0
    for bad, exc in result_errors(values):
        error = unsendable(exc, "the result, to be sent back to the parent process,")
        results(start, bad, error_payload(error), None, ())
        start = bad + 1
    results(start, len(values), failure, elapsed, slow)


def _tracker(slots: Any, base: int, timed: bool) -> Any:
    """Writes the running item's offset (and start time) where the parent can see it."""
    position = base + RUNNING_OFFSET
    if not timed:

        def track(offset: int) -> None:
            slots[position] = offset

        return track
    clock = time.monotonic
    started = base + STARTED_AT

    def track_timed(offset: int) -> None:
        slots[position] = -1.0  # readers ignore the slot while it is half written
        slots[started] = clock()
        slots[position] = offset

    return track_timed

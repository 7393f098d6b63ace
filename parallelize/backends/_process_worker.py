"""The child side of the process backend: the loop each worker process runs.

Kept apart from `process.py` so a worker imports only what it needs. Messages go
through `_wire`: a pickled envelope plus raw buffers. From the parent: `("job", id,
payload)`, `("chunk", seq, track)` with the pickled items and their out-of-band
buffers, or `None` to stop. To the parent: `("ready",)` once started, a run of
results (see `run_message`),
`("u", seq, error)` when a chunk could not be read, `("j", id, error)` when a job
could not be loaded, `("i", error)` when the initializer failed.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pickle
import signal
import sys
import time
from typing import Any

from .._context import mark_worker_process
from .._sending import dumps, loads
from ._crossing import error_payload, result_errors, unsendable
from ._items import run_items
from ._wire import receive
from ._wire import send as send_message

__all__ = ["worker_main"]

# Slot layout in the shared array, per worker: the chunk being run, the offset of
# the item being run (-1 between items) and when that item started.
SLOT_FIELDS = 3


def worker_main(
    tasks: Any,
    results: Any,
    slots: Any,
    slot: int,
    init_payload: bytes | None,
    close_fds: list[int],
    spawned: bool,
) -> None:
    """Run chunks from `tasks` until told to stop or the parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    for fd in close_fds:  # under fork: the parent's ends of other workers' pipes
        with contextlib.suppress(OSError):
            os.close(fd)
    mark_worker_process()
    base = slot * SLOT_FIELDS

    def send(message: tuple[Any, ...], buffers: list[Any] | None = None) -> None:
        send_message(results, dumps(message), buffers or ())

    if init_payload is not None:
        try:
            initializer, initargs = loads(init_payload)
            initializer(*initargs)
        except BaseException as exc:
            send(("i", error_payload(exc)))
            return
    send(("ready",))

    call: Any = None
    timed = False
    while True:
        try:
            envelope, buffers = receive(tasks)
        except (EOFError, OSError):
            return  # the parent is gone
        message = pickle.loads(envelope)
        if message is None:
            if spawned:
                _exit_quickly()
            return
        if message[0] == "job":
            _, job_id, payload = message
            try:
                call, timed = loads(payload)
            except BaseException as exc:
                call = None
                send(("j", job_id, error_payload(exc)))
            continue
        _, seq, track = message
        slots[base + 1] = -1.0
        slots[base] = seq
        try:
            items = loads(buffers[0], buffers[1:])
        except BaseException as exc:
            send(("u", seq, error_payload(exc)))
            continue
        tracker = _tracker(slots, base, timed) if track else None
        run_items(call, items, _reporter(send, slots, base, seq), tracker)


def _exit_quickly() -> None:
    """End a spawned worker told to stop without tearing its interpreter down.

    Fork and forkserver children already end with `os._exit` (and must not run the
    exit handlers they inherited: the parent's). A spawned one would otherwise tear
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


def _reporter(send: Any, slots: Any, base: int, seq: int) -> Any:
    """The `report` callback of one chunk: sends runs of results and failures."""
    began = time.perf_counter()

    def report(offset: int, values: list[Any], error: BaseException | None) -> None:
        slots[base + 1] = -1.0  # between items: a death from here on blames no item
        failure = None if error is None else error_payload(error)
        elapsed = None if error is not None else time.perf_counter() - began
        try:
            send(*run_message(seq, offset, values, failure, elapsed))
        except Exception:
            _report_unsendable(send, seq, offset, values, failure, elapsed)

    return report


def run_message(
    seq: int, offset: int, values: list[Any], failure: Any, elapsed: float | None
) -> tuple[tuple[Any, ...], list[Any]]:
    """A run of results, its body pickled apart: the parent can read the envelope even
    when a result or exception cannot be rebuilt there, and knows which items it held.
    The body and its out-of-band buffers are the message's buffers."""
    buffers: list[Any] = []
    body = dumps((values, failure), buffers=buffers)
    return ("r", seq, offset, len(values), failure is not None, elapsed), [body, *buffers]


def _report_unsendable(
    send: Any, seq: int, offset: int, values: list[Any], failure: Any, elapsed: float | None
) -> None:
    """Send the results that pickle; fail those that do not, naming the reason."""
    start = 0
    for bad, exc in result_errors(values):
        error = unsendable(exc, "the result, to be sent back to the parent process,")
        send(*run_message(seq, offset + start, values[start:bad], error_payload(error), None))
        start = bad + 1
    send(*run_message(seq, offset + start, values[start:], failure, elapsed))


def _tracker(slots: Any, base: int, timed: bool) -> Any:
    """Writes the running item's offset (and start time) where the parent can see it."""
    position = base + 1
    if not timed:

        def track(offset: int) -> None:
            slots[position] = offset

        return track
    clock = time.monotonic
    started = base + 2

    def track_timed(offset: int) -> None:
        slots[position] = -1.0  # readers ignore the slot while it is half written
        slots[started] = clock()
        slots[position] = offset

    return track_timed

"""Worker processes of the process backend: starting, stopping, killing, replacing.

`WorkerPool` owns the processes, their pipes and the shared slot array; it is the
only part of the pool that starts or ends a process.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any

from .._sending import main_is_a_file
from ._process_protocol import SLOT_FIELDS, STOP
from ._process_state import Worker, WorkerState
from ._process_worker import worker_main
from ._slots import shared_doubles
from ._wire import send, widen

__all__ = ["STOP_SECONDS", "WorkerPool"]

# Workers told to stop get this long to exit before they are killed.
STOP_SECONDS = 1.0


class WorkerPool:
    """The worker processes by slot, started with one `multiprocessing` context."""

    def __init__(self, context: Any, size: int, init_payload: bytes | None) -> None:
        self.context = context
        self.init_payload = init_payload
        self.by_slot: list[Worker | None] = [None] * size
        self.slots: Any = None  # the shared slot array, made with the first worker

    def live(self) -> list[Worker]:
        return [worker for worker in self.by_slot if worker is not None]

    def is_current(self, worker: Worker) -> bool:
        return self.by_slot[worker.slot] is worker

    def spawn(self, slot: int) -> None:
        """Start a worker in `slot`."""
        if self.slots is None:
            self.slots = shared_doubles(self.context, SLOT_FIELDS * len(self.by_slot))
        tasks_out, tasks_in = self.context.Pipe(duplex=False)
        results_out, results_in = self.context.Pipe(duplex=False)
        widen(tasks_in)
        widen(results_in)
        method = self.context.get_start_method()
        close_fds: list[int] = []
        if method == "fork":
            close_fds = [tasks_in.fileno(), results_out.fileno()]
            for other in self.live():
                close_fds += [other.tasks.fileno(), other.results.fileno()]
        process = self.context.Process(
            target=worker_main,
            args=(
                tasks_out,
                results_in,
                self.slots,
                slot,
                self.init_payload,
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
        # A forked worker with no initializer is running our loop within a millisecond:
        # its work waits in the pipe instead of for its "ready".
        ready = method == "fork" and self.init_payload is None
        self.by_slot[slot] = Worker(process, tasks_in, results_out, slot, ready)

    def discard(self, worker: Worker) -> None:
        """End `worker` for good: kill it if needed, reap it, close its pipes."""
        if self.by_slot[worker.slot] is worker:
            self.by_slot[worker.slot] = None
        worker.stopping()
        process = worker.process
        if process.exitcode is None:
            process.kill()
        process.join()
        for end in (worker.tasks, worker.results):
            end.close()
        process.close()

    def replace(self, worker: Worker) -> None:
        """Stop `worker` (idle) and start a new one in its slot."""
        self._tell_to_stop(worker)
        worker.process.join(STOP_SECONDS)
        self.discard(worker)
        self.spawn(worker.slot)

    def end_all(self) -> None:
        """End every worker: those that can be told stop, the others are killed."""
        workers = self.live()
        self.by_slot = [None] * len(self.by_slot)
        for worker in workers:
            if worker.state is WorkerState.STARTING or worker.holds_half_a_message:
                worker.stopping()
                worker.process.kill()  # nothing to lose, or nothing it could read
            else:
                self._tell_to_stop(worker)
        deadline = time.monotonic() + STOP_SECONDS
        for worker in workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            self.discard(worker)
        if self.slots is not None:
            self.slots.close()
            self.slots = None

    def _tell_to_stop(self, worker: Worker) -> None:
        worker.stopping()
        with contextlib.suppress(OSError):
            send(worker.tasks, STOP)


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

"""Worker processes of the process backend: starting, stopping, killing, replacing.

`WorkerPool` owns the processes, their pipes and the shared slot array; it is the
only part of the pool that starts or ends a process. A worker it starts during a
call is handed the call's job (`_shared_args`): inherited under fork, as the shared
segment's descriptor otherwise.

Each worker leads its own process group (`_process_detach`), so ending a worker
kills the group: the processes its items started end with it. Its exit is watched
through a pidfd where the system has them, not through multiprocessing's sentinel,
a pipe that an item's forked children inherit and would hold open after the worker
died.
"""

from __future__ import annotations

import array
import contextlib
import logging
import os
import select
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

from .._sending import main_is_a_file
from ._crash_reports import CrashFile
from ._process_protocol import OPENS_CALLER_FDS, SLOT_FIELDS, STOP, slot_base
from ._process_state import Worker, WorkerState
from ._process_worker import worker_main
from ._shared_args import CallJob, Handoff
from ._slots import shared_doubles
from ._thread_limits import prepare_fork
from ._wire import MESSAGE_OVERHEAD_BYTES, capacity, send, widen

__all__ = ["STOP_SECONDS", "UNKNOWN_EXIT_CODE", "WorkerPool", "exit_text", "uninterrupted"]

_log = logging.getLogger("parallelize")

# Workers told to stop get this long to exit before they are killed.
STOP_SECONDS = 1.0


class WorkerPool:
    """The worker processes by slot, started with one `multiprocessing` context."""

    def __init__(
        self,
        context: Any,
        size: int,
        init_payload: bytes | None,
        thread_limits: dict[str, str],
    ) -> None:
        self.context = context
        self.init_payload = init_payload
        self.thread_limits = thread_limits  # for the numeric libraries in each worker
        self.by_slot: list[Worker | None] = [None] * size
        self.slots: Any = None  # the shared slot array, made with the first worker
        self.job: CallJob | None = None  # the call's, for workers started during it

    def live(self) -> list[Worker]:
        return [worker for worker in self.by_slot if worker is not None]

    def is_current(self, worker: Worker) -> bool:
        return self.by_slot[worker.slot] is worker

    def spawn(self, slot: int) -> None:
        """Start a worker in `slot`; a Ctrl-C meanwhile waits until it is recorded."""
        with uninterrupted():
            self._spawn(slot)

    def _spawn(self, slot: int) -> None:
        if self.slots is None:
            self.slots = shared_doubles(self.context, SLOT_FIELDS * len(self.by_slot))
        tasks_out, tasks_in = self.context.Pipe(duplex=False)
        results_out, results_in = self.context.Pipe(duplex=False)
        lifeline_out, lifeline_in = self.context.Pipe(duplex=False)
        widen(tasks_in)
        widen(results_in)
        method = self.context.get_start_method()
        close_fds: list[int] = []
        if method == "fork":
            prepare_fork(self.thread_limits)
            close_fds = [tasks_in.fileno(), results_out.fileno(), lifeline_in.fileno()]
            for other in self.live():
                close_fds += [other.tasks.fileno(), other.results.fileno()]
                close_fds += [other.lifeline.fileno(), other.crash_file.fd]
        # A worker forked now inherits the call's job; one spawned gets the segment.
        job = self.job
        inherited = job.inherited() if job is not None and method == "fork" else None
        passed = job.passed() if job is not None and method != "fork" else None
        handoff = Handoff(os.getpid(), lifeline_in.fileno(), inherited, passed)
        crash_file = CrashFile()
        self.slots[slot_base(slot) + OPENS_CALLER_FDS] = 0.0  # until the new one looks
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
                lifeline_out,
                self.thread_limits,
                handoff,
                crash_file,
            ),
            name=f"parallelize-worker-{slot}",
            daemon=True,
        )
        with _main_hidden_unless_a_file():
            process.start()
        if method == "fork":  # the child does it too; whichever runs first wins the race
            with contextlib.suppress(OSError):
                os.setpgid(process.pid, process.pid)
        tasks_out.close()
        results_in.close()
        lifeline_out.close()
        # A forked worker with no initializer is running our loop within a millisecond:
        # its work waits in the pipe instead of for its "ready".
        ready = method == "fork" and self.init_payload is None
        worker = Worker(process, tasks_in, results_out, slot, ready)
        if inherited is not None:
            worker.job_id = inherited[0]  # it needs no `LoadJob`
        worker.lifeline = lifeline_in
        worker.crash_file = crash_file
        worker.exit_fd, worker.owns_exit_fd = _exit_watch(process)
        worker.task_pipe_bytes = capacity(tasks_in)
        self.by_slot[slot] = worker
        _log.debug("worker %d started: pid %d (%s)", slot, process.pid, method)

    def opens_caller_fds(self, worker: Worker) -> bool:
        """Whether `worker` found at its start that it can open our descriptors."""
        return bool(self.slots[slot_base(worker.slot) + OPENS_CALLER_FDS] > 0)

    def fits_in_task_pipe(self, worker: Worker, size: int) -> bool:
        """Whether a message of `size` bytes fits in what is left of `worker`'s task
        pipe (a worker still starting may not have read what it was given before)."""
        return unread_bytes(worker.tasks) + size + MESSAGE_OVERHEAD_BYTES <= worker.task_pipe_bytes

    def give_job(self, worker: Worker, job_id: int, envelope: bytes, buffers: list[Any]) -> None:
        """Send job `job_id` to `worker`, which holds no work (kept from an earlier call):
        idle, it is reading; starting, the message must fit in its pipe."""
        state = worker.state
        worker.state = WorkerState.RECEIVING  # an interrupt from here on leaves it half-written
        try:
            send(worker.tasks, envelope, buffers)
        except OSError:  # it died; its exit watch will tell collect()
            worker.lost()
            return
        worker.state = state
        worker.job_id = job_id

    def has_exited(self, worker: Worker) -> bool:
        """Whether `worker`'s process has ended (it may not be reaped yet)."""
        return bool(select.select([worker.exit_fd], [], [], 0)[0])

    def reap(self, worker: Worker) -> None:
        """Collect the exit status of `worker`, whose process has ended."""
        process = worker.process
        process.join()
        if process.exitcode is None:
            # The caller set SIGCHLD to SIG_IGN: the system reaped the worker itself and
            # kept no status, and multiprocessing would wait for one forever.
            worker.exit_status_lost = True
            process._popen.returncode = UNKNOWN_EXIT_CODE

    def kill(self, worker: Worker) -> None:
        """Kill `worker` and every process its items started (its process group)."""
        worker.stopping()
        _kill_group(worker.process.pid)
        if worker.process.exitcode is None:
            worker.process.kill()

    def discard(self, worker: Worker) -> None:
        """End `worker` for good: kill what is left of its group, reap it, close its pipes.

        Done whole or not at all as far as Ctrl-C goes: the worker leaves `by_slot`
        only once it is reaped, so nothing is left for a later clean-up to miss.
        """
        with uninterrupted():
            if worker.discarded:
                return
            self.kill(worker)  # also after a clean exit: its items' children end with it
            self.reap(worker)
            _log.debug(
                "worker %d ended: pid %d, %s", worker.slot, worker.process.pid, exit_text(worker)
            )
            for end in (worker.tasks, worker.results, worker.lifeline, worker.crash_file):
                end.close()
            if worker.owns_exit_fd:
                os.close(worker.exit_fd)
                worker.owns_exit_fd = False
            worker.process.close()
            worker.discarded = True
            if self.by_slot[worker.slot] is worker:
                self.by_slot[worker.slot] = None

    def replace(self, worker: Worker, why: str) -> None:
        """Stop `worker` (idle) and start a new one in its slot."""
        _log.debug("worker %d (pid %d) replaced: %s", worker.slot, worker.process.pid, why)
        with uninterrupted():
            self._tell_to_stop(worker)
            _wait_for_exits([worker], time.monotonic() + STOP_SECONDS)
            self.discard(worker)
            self.spawn(worker.slot)

    def end_all(self) -> None:
        """End every worker: those that can be told stop, the others are killed. A
        Ctrl-C meanwhile is raised once all are reaped (within STOP_SECONDS)."""
        with uninterrupted():
            workers = self.live()
            for worker in workers:
                if worker.state is WorkerState.STARTING or worker.holds_half_a_message:
                    self.kill(worker)  # nothing to lose, or nothing it could read
                else:
                    self._tell_to_stop(worker)
            _wait_for_exits(workers, time.monotonic() + STOP_SECONDS)
            for worker in workers:
                self.discard(worker)
            if self.slots is not None:
                self.slots.close()
                self.slots = None

    def _tell_to_stop(self, worker: Worker) -> None:
        worker.stopping()
        with contextlib.suppress(OSError):
            send(worker.tasks, STOP)


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Hold SIGINT back while a process is started or ended and recorded: a Ctrl-C in
    the middle would leave a worker that no record names, running or a zombie. The
    `KeyboardInterrupt` comes as soon as the block is done. (Children inherit the
    mask; workers unblock SIGINT first thing, `_process_detach`.)"""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


# What multiprocessing's fork server reports when it has no status: ours for the same.
UNKNOWN_EXIT_CODE = 255


def exit_text(worker: Worker) -> str:
    """How `worker`'s process ended, in words: `exited with code 0`, `killed by SIGSEGV`."""
    if worker.exit_status_lost:
        return "its exit status is unknown: SIGCHLD is ignored in this process"
    exitcode = worker.process.exitcode
    if exitcode is None:
        return "still running"
    if exitcode >= 0:
        return f"exited with code {exitcode}"
    try:
        return f"killed by {signal.Signals(-exitcode).name}"
    except ValueError:
        return f"killed by signal {-exitcode}"


def _exit_watch(process: Any) -> tuple[int, bool]:
    """A file descriptor that becomes readable when `process` ends, and whether it is ours.

    A pidfd on Linux; elsewhere (or if the process is already gone) the sentinel.
    """
    if hasattr(os, "pidfd_open"):
        with contextlib.suppress(OSError):
            return os.pidfd_open(process.pid), True
    return process.sentinel, False


def unread_bytes(conn: Any) -> int:
    """The bytes written to the pipe `conn` and not read yet; where the system cannot
    say, as many as it holds (nothing more fits)."""
    try:
        import fcntl
        import termios

        count = array.array("i", [0])
        fcntl.ioctl(conn.fileno(), termios.FIONREAD, count)
        return count[0]
    except (ImportError, OSError):
        return capacity(conn)


def _wait_for_exits(workers: list[Worker], deadline: float) -> None:
    """Wait until every one of `workers` has ended, or until `deadline`."""
    waiting = {worker.exit_fd for worker in workers}
    while waiting:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        waiting -= set(select.select(list(waiting), [], [], left)[0])


def _kill_group(pid: int) -> None:
    """SIGKILL the process group `pid` leads, if it still has members."""
    if sys.platform != "win32":
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)


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

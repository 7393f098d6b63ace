"""What the cluster backends (Dask, Ray) share: the task each chunk becomes, and the
parent side that turns finished tasks into outcomes.

A chunk is one cluster task. The task runs the items itself and returns a list of
plain messages, so one item's exception never fails the task: the cluster only
reports a task as failed when its worker was lost (or the cluster itself failed).
"""

from __future__ import annotations

import os
import pickle
import threading
import time
from collections.abc import Callable
from typing import Any

from .._context import worker_thread
from .._errors import TaskTimeoutError, WorkerLostError, with_remote_traceback
from .._sending import dumps, loads
from .._settings import Settings
from . import Failed, Job, Outcome, make_item_call
from ._chunking import CLUSTER_CHUNK_SECONDS, ChunkSizer
from ._crossing import error_payload, result_errors, unsendable
from ._items import run_items
from ._tally import WorkTally

__all__ = ["ClusterExecutor", "SharedJob", "refuse_process_settings", "run_chunk"]

Message = tuple[int, list[Any], "tuple[BaseException, str] | None"]
# What a chunk's task returns: its messages, seconds, worker, slow items.
Ran = tuple[list[Message], float, str, tuple[tuple[int, float], ...]]

# A pickled job (the function and the call's extra arguments) this large is sent to
# the cluster once per call (`Client.scatter`, `ray.put`) and tasks refer to it;
# a smaller one travels inside each task, which costs less than a round trip.
SHARED_JOB_BYTES = 64 * 1024


class SharedJob:
    """A large job as the cluster keeps it: the pickle, and its large buffers (numpy
    arrays' data) set apart as `PickleBuffer`s. Dask and Ray pickle those out of band
    too, and hand each task the stored buffers themselves, so tasks rebuild the arrays
    on them instead of each unpickling a copy (W9, 200 MB: 5.3 s on Ray before)."""

    __slots__ = ("buffers", "payload")

    def __init__(self, payload: bytes, buffers: list[Any]) -> None:
        self.payload = payload
        self.buffers = buffers

    def load(self) -> Any:
        return loads(self.payload, self.buffers)


def _with_timeout(call: Callable[[Any], Any], timeout: float) -> Callable[[Any], Any]:
    """`call` on a helper thread, failing with `TaskTimeoutError` past `timeout`.

    The result is pickled there once, so a result whose pickling hangs times out too.
    A cluster worker's thread cannot be killed: the overrunning item is abandoned to
    finish alone, and the task goes on with the next item.
    """

    def run(item: Any) -> Any:
        box: list[Any] = []

        def target() -> None:
            try:
                value = call(item)
            except BaseException as exc:
                box.append((False, exc))
                return
            try:
                dumps(value)  # pickling the result counts towards its timeout too
            except BaseException as exc:
                box.append((False, unsendable(exc, "the result, to be sent back to the caller,")))
                return
            box.append((True, value))

        thread = threading.Thread(target=target, name="parallelize-item", daemon=True)
        thread.start()
        thread.join(timeout)
        if not box:
            raise TaskTimeoutError(f"item ran longer than timeout={timeout} s; it was abandoned")
        ok, value = box[0]
        if not ok:
            raise value
        return value

    return run


def run_chunk(job: bytes | SharedJob, items: list[Any]) -> Ran:
    """Runs in a cluster worker: every item of one chunk, as messages and seconds, and
    which worker ran them and the slow ones among them (`f.stats`)."""
    call, timeout = loads(job) if isinstance(job, bytes) else job.load()
    if timeout is not None:
        call = _with_timeout(call, timeout)
    messages: list[Message] = []

    def report(offset: int, values: list[Any], error: BaseException | None) -> None:
        start = 0
        for bad, exc in result_errors(values) if values else []:
            what = "the result, to be sent back to the caller,"
            messages.append(
                (offset + start, values[start:bad], error_payload(unsendable(exc, what)))
            )
            start = bad + 1
        failure = None if error is None else error_payload(error)
        messages.append((offset + start, values[start:], failure))

    slow: list[tuple[int, float]] = []
    began = time.perf_counter()
    with worker_thread():  # nested parallel calls run serially here
        run_items(call, items, report, slow=slow)
    return messages, time.perf_counter() - began, _worker_name(), tuple(slow)


def _worker_name() -> str:
    """This cluster worker process, as `f.stats` tells workers apart: host and pid."""
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def refuse_process_settings(settings: Settings) -> None:
    """Fail early on settings that only a pool of our own processes can honour."""
    for name in ("initializer", "max_tasks_per_worker"):
        if getattr(settings, name) is not None:
            raise ValueError(
                f"{name} is not supported on a cluster backend; set up cluster workers "
                "with the cluster's own tools (Dask worker plugins, Ray runtime_env)"
            )


class ClusterExecutor:
    """The parent side of a cluster backend; subclasses talk to the cluster."""

    workers: int
    # Tasks in flight per cluster worker: a scheduler takes milliseconds to hand a
    # worker its next task, so a few queued hide that; more would only read ahead.
    tasks_per_worker = 4

    def __init__(self, settings: Settings) -> None:
        refuse_process_settings(settings)
        self._settings = settings
        self.workers = settings.workers or 1
        self._sizer = ChunkSizer(settings.chunksize, self.workers, CLUSTER_CHUNK_SECONDS)
        self._connected = False
        self._tasks: dict[Any, tuple[int, list[Any]]] = {}  # future -> (start, items)
        self._unsent: list[Outcome] = []  # items that failed to be pickled
        self._job: Any = b""  # the pickled job, or the cluster's reference to it
        self._tally = WorkTally()

    @property
    def tally(self) -> WorkTally:
        return self._tally

    # -- what a cluster provides -------------------------------------------------

    def _connect(self) -> int:
        """Reach (or start) the cluster, only now that there is work; return its size."""
        raise NotImplementedError

    def _share(self, job: SharedJob) -> Any:
        """Send `job` to the cluster once; return what tasks refer to it by."""
        raise NotImplementedError

    def _unshare(self, shared: Any) -> None:
        """Let the cluster drop what `_share` sent: the call is over."""
        raise NotImplementedError

    def _submit_task(self, job: Any, items: list[Any]) -> Any:
        """Start `run_chunk(job, items)` on the cluster (`job`: the pickled job or its
        reference from `_share`, which the cluster resolves); return its future."""
        raise NotImplementedError

    def _wait_any(self, futures: list[Any]) -> list[Any]:
        """Block until at least one of `futures` is done; return the done ones."""
        raise NotImplementedError

    def _result(self, future: Any) -> Any:
        """The future's value; raises the cluster's exception if the task failed."""
        raise NotImplementedError

    def _is_worker_lost(self, error: BaseException) -> bool:
        """Whether `error` says the task's worker died (rather than the task failing)."""
        raise NotImplementedError

    def _cancel(self, futures: list[Any]) -> None:
        raise NotImplementedError

    # -- the protocol --------------------------------------------------------------

    def start(self, job: Job, total: int | None) -> None:
        self._tally = WorkTally()
        if not self._connected:
            size = self._connect()
            self._connected = True
            self.workers = self._settings.workers or size
            self._sizer = ChunkSizer(self._settings.chunksize, self.workers, CLUSTER_CHUNK_SECONDS)
        buffers: list[memoryview] = []
        try:
            payload = dumps((make_item_call(job), job.timeout), foreign=True, buffers=buffers)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # a `__reduce__` calling sys.exit() included
            name = getattr(job.func, "__name__", "function")
            raise unsendable(exc, f"{name}() or its extra arguments") from exc
        # A large job (an extra argument of some size) goes to the cluster once, and
        # each task refers to it; a small one (never with buffers set apart: each is
        # as large as a shared job) rides along with each task.
        if len(payload) + sum(b.nbytes for b in buffers) >= SHARED_JOB_BYTES:
            self._job = self._share(SharedJob(payload, [pickle.PickleBuffer(b) for b in buffers]))
        else:
            self._job = payload
        self._sizer.reset(total)

    def chunk_size(self) -> int:
        return self._sizer.size

    def has_room(self) -> bool:
        return len(self._tasks) < self.tasks_per_worker * self.workers

    def submit(self, start: int, items: list[Any]) -> None:
        try:
            self._tasks[self._submit_task(self._job, items)] = (start, items)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # the cluster pickles the items now: one failed
            self._submit_sendable(start, items, exc)

    def _submit_sendable(self, start: int, items: list[Any], exc: BaseException) -> None:
        """Fail each item that cannot be pickled and submit the others, one by one."""
        what = "the item, to be sent to the cluster,"
        culprits = 0
        for offset, item in enumerate(items):
            try:
                dumps(item, foreign=True)
            except KeyboardInterrupt:
                raise
            except BaseException as why:
                culprits += 1
                self._unsent.append(Failed(start + offset, item, unsendable(why, what)))
            else:
                if len(items) > 1:
                    self.submit(start + offset, [item])
        if not culprits:  # only the cluster's own pickling fails it
            self._unsent.append(Failed(start, items[0], unsendable(exc, what)))

    def pending(self) -> bool:
        return bool(self._tasks or self._unsent)

    def collect(self) -> list[Outcome]:
        outcomes: list[Outcome] = list(self._unsent)
        self._unsent.clear()
        if not self._tasks:
            return outcomes
        for future in self._wait_any(list(self._tasks)):
            start, items = self._tasks.pop(future)
            try:
                messages, seconds, worker, slow = self._result(future)
            except Exception as exc:
                if not self._is_worker_lost(exc):
                    raise
                self._tally.replaced += 1
                outcomes += self._lost(start, items, exc)
                continue
            self._sizer.record(len(items), seconds)
            self._tally.ran(worker, len(items), seconds)
            for offset, item_seconds in slow:
                self._tally.slow(start + offset, item_seconds)
            for offset, values, failure in messages:
                if values:
                    outcomes.append((start + offset, values))
                if failure is not None:
                    index = offset + len(values)
                    error = with_remote_traceback(*failure)
                    outcomes.append(Failed(start + index, items[index], error))
        return outcomes

    def _lost(self, start: int, items: list[Any], exc: BaseException) -> list[Outcome]:
        """A task's worker died: blame a lone item, else rerun the items one by one."""
        if len(items) > 1:
            for offset, item in enumerate(items):
                self.submit(start + offset, [item])
            return []
        error = WorkerLostError(f"the cluster worker running this item died: {exc}")
        return [Failed(start, items[0], error)]

    def finish(self, *, cancel: bool) -> None:
        if cancel and self._tasks:
            self._cancel(list(self._tasks))
        self._tasks.clear()
        self._unsent.clear()
        if not isinstance(self._job, bytes):
            self._unshare(self._job)
        self._job = b""

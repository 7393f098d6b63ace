"""Reading what worker processes send back, and turning it into outcomes."""

from __future__ import annotations

from typing import Any

from .._errors import ParallelError, with_remote_traceback
from .._sending import loads
from . import Failed
from ._chunking import ChunkSizer
from ._process_dispatch import Dispatcher
from ._process_lifecycle import WorkerPool
from ._process_protocol import ChunkUnreadable, ErrorPayload, Ready, Results, decode
from ._process_state import Call, Chunk, Worker
from ._wire import receive

__all__ = ["Receiver"]


class Receiver:
    """Handles the messages on the workers' result pipes."""

    def __init__(
        self,
        pool: WorkerPool,
        call: Call,
        dispatcher: Dispatcher,
        sizer: ChunkSizer,
        max_tasks: int | None,
    ) -> None:
        self.pool = pool
        self.call = call
        self.dispatcher = dispatcher
        self.sizer = sizer
        self.max_tasks = max_tasks

    def receive(self, worker: Worker) -> None:
        """Handle every message waiting on `worker`'s result pipe."""
        try:
            while True:
                envelope, buffers = receive(worker.results)
                self._handle(worker, decode(envelope), buffers)
                if not worker.results.poll():
                    return
        except (EOFError, OSError):
            worker.lost()  # it is exiting; its exit watch follows

    def _handle(self, worker: Worker, message: Any, buffers: list[memoryview]) -> None:
        kind = type(message)
        if kind is Ready:
            worker.started()
            return
        self.call.fruitless_deaths = 0
        if kind is Results:
            self._results(worker, message, buffers)
        elif kind is ChunkUnreadable:
            chunk = worker.finished_chunk()
            if len(chunk.items) == 1:
                self.call.outcomes.append(_failed(chunk, 0, message.error))
            else:
                self.dispatcher.requeue_one_by_one(chunk, 0, len(chunk.items))
        else:  # JobUnloadable or InitializerFailed: the call cannot run at all
            raise with_remote_traceback(*message.error)

    def _results(self, worker: Worker, message: Results, buffers: list[memoryview]) -> None:
        chunk = worker.in_flight[0]
        offset, count = message.offset, message.result_count
        worker.reported(chunk, offset + count + message.failed)
        try:
            values, failure = loads(buffers[0], buffers[1:])
        except Exception as exc:
            self._unrebuildable(chunk, offset, count + message.failed, exc)
        else:
            if values:
                self.call.outcomes.append((chunk.start + offset, values))
            if failure is not None:
                self.call.outcomes.append(_failed(chunk, offset + count, failure))
        tally = self.call.tally
        tally.ran(worker.process.pid, count + message.failed, message.elapsed or 0.0)
        if message.elapsed is not None:
            for item, seconds in message.slow:
                tally.slow(chunk.start + item, seconds)
            worker.finished_chunk()
            self.sizer.record(len(chunk.items), message.elapsed)
            self._retire_if_spent(worker)

    def _unrebuildable(self, chunk: Chunk, offset: int, count: int, exc: Exception) -> None:
        """Outcomes that could not be unpickled here: fail a lone item, else run the
        items again one by one so the one at fault is found and only it fails."""
        if count > 1:
            self.dispatcher.requeue_one_by_one(chunk, offset, offset + count)
            return
        error = ParallelError(
            "the outcome of this item could not be rebuilt in the calling process: "
            f"{type(exc).__name__}: {exc}"
        )
        self.call.outcomes.append(Failed(chunk.start + offset, chunk.items[offset], error))

    def _retire_if_spent(self, worker: Worker) -> None:
        """Replace a worker that ran `max_tasks_per_worker` items, once it is idle."""
        if self.max_tasks is None or worker.in_flight or worker.items_sent < self.max_tasks:
            return
        self.call.tally.replaced += 1
        self.pool.replace(worker, f"it ran max_tasks_per_worker={self.max_tasks} items")


def _failed(chunk: Chunk, offset: int, error: ErrorPayload) -> Failed:
    return Failed(chunk.start + offset, chunk.items[offset], with_remote_traceback(*error))

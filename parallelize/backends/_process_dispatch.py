"""Sending chunks to worker processes: the queue, encoding, and which worker gets what."""

from __future__ import annotations

import collections
from typing import Any

from .._sending import dumps
from . import Failed
from ._chunking import ChunkSizer
from ._crossing import unsendable
from ._process_lifecycle import WorkerPool
from ._process_protocol import RunChunk, encode
from ._process_state import Call, Chunk, Worker
from ._wire import MESSAGE_OVERHEAD_BYTES, send

__all__ = ["Dispatcher"]

# A second chunk is queued on a busy worker only if its message is this small, and
# fits in that worker's pipe buffer (which may be a single page): the parent must
# never block writing to a worker that is itself blocked sending results back.
PREFETCH_BYTES = 16 * 1024
# ...and only if chunks are known to take less than this: queuing hides the round
# trip between chunks (~0.1 ms), but a chunk queued behind a slow one waits while
# other workers may be idle, which costs uneven workloads far more.
PREFETCH_CHUNK_SECONDS = 0.005


class Dispatcher:
    """The chunks waiting for a worker, sent in order as workers have room."""

    def __init__(
        self, pool: WorkerPool, call: Call, sizer: ChunkSizer, max_tasks: int | None
    ) -> None:
        self.pool = pool
        self.call = call
        self.sizer = sizer
        self.max_tasks = max_tasks
        self.queue: collections.deque[Chunk] = collections.deque()
        self._seq = 0

    def add(self, start: int, items: list[Any]) -> None:
        self._seq += 1
        self.queue.append(Chunk(self._seq, start, items))

    def dispatch(self) -> None:
        """Send queued chunks to idle workers, or to busy ones if the message is small."""
        while self.queue:
            chunk = self.queue[0]
            if chunk.envelope is None and not self._encode(chunk):
                continue
            assert chunk.envelope is not None
            worker = self._pick_worker(
                chunk.size + MESSAGE_OVERHEAD_BYTES
                if chunk.size <= PREFETCH_BYTES
                and self.sizer.runs_within(len(chunk.items), PREFETCH_CHUNK_SECONDS)
                else None
            )
            if worker is None:
                return
            if self.max_tasks is not None:
                room = self.max_tasks - worker.items_sent
                if room < len(chunk.items):
                    self.queue.popleft()
                    self.requeue_front(chunk, [(0, room), (room, len(chunk.items))])
                    continue
            self.queue.popleft()
            self._send(worker, chunk, chunk.envelope)

    def _send(self, worker: Worker, chunk: Chunk, envelope: bytes) -> None:
        worker.receiving()  # an interrupt from here on leaves it half-written
        broken = False
        try:
            if worker.job_id != self.call.job_id:
                send(worker.tasks, self.call.job_message)
                worker.job_id = self.call.job_id
            send(worker.tasks, envelope, chunk.buffers)
        except OSError:  # the worker died; its exit watch will tell collect()
            broken = True
        worker.took(chunk)
        if broken:
            worker.lost()
        chunk.envelope = None
        chunk.buffers = []

    def _pick_worker(self, prefetch_bytes: int | None) -> Worker | None:
        """An idle worker, else a worker with one chunk whose pipe holds `prefetch_bytes`."""
        best = None
        for worker in self.pool.by_slot:
            if worker is None or not worker.takes_work:
                continue
            if self.max_tasks is not None and worker.items_sent >= self.max_tasks:
                continue
            busy = len(worker.in_flight)
            if busy == 0:
                return worker
            if (
                busy == 1
                and prefetch_bytes is not None
                and prefetch_bytes <= worker.task_pipe_bytes
                and best is None
            ):
                best = worker
        return best

    def _encode(self, chunk: Chunk) -> bool:
        """Pickle the chunk's message; fail the items that cannot be pickled."""
        count = len(chunk.items)
        chunk.tracked = self.call.timeout is not None or self.sizer.should_track(count)
        out_of_band: list[memoryview] = []
        try:
            items = dumps(chunk.items, buffers=out_of_band)
        except KeyboardInterrupt:
            raise
        except BaseException:  # an item's `__reduce__` may even call sys.exit()
            self.queue.popleft()
            self._fail_unpicklable(chunk)
            return False
        chunk.envelope = encode(RunChunk(chunk.seq, chunk.tracked))
        chunk.buffers = [items, *out_of_band]
        chunk.size = len(items) + sum(view.nbytes for view in out_of_band)
        return True

    def _fail_unpicklable(self, chunk: Chunk) -> None:
        """Fail each item that cannot be pickled; requeue the others."""
        good: list[tuple[int, int]] = []
        run_start = 0
        for offset, item in enumerate(chunk.items):
            try:
                dumps(item)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:
                error = unsendable(exc, "the item, to be sent to a worker process,")
                self.call.outcomes.append(Failed(chunk.start + offset, item, error))
                good.append((run_start, offset))
                run_start = offset + 1
        good.append((run_start, len(chunk.items)))
        self.requeue_front(chunk, good)

    def requeue_front(self, chunk: Chunk, pieces: list[tuple[int, int]]) -> None:
        """Put `chunk.items[a:b]` for each piece back at the head of the queue, in order."""
        for a, b in reversed(pieces):
            if a >= b:
                continue
            self._seq += 1
            self.queue.appendleft(Chunk(self._seq, chunk.start + a, chunk.items[a:b]))

    def requeue_one_by_one(self, chunk: Chunk, first: int, end: int) -> None:
        """Queue items `first .. end` of `chunk` as chunks of one, to find a culprit."""
        self.requeue_front(chunk, [(i, i + 1) for i in range(first, end)])

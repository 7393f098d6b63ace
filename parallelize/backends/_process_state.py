"""The parent's explicit record of each worker process and each chunk, and the call.

Each state is recorded before the side effect it names (a message written, a stop
sent), so an interrupt or a death at any moment leaves a state that the clean-up
knows how to handle:

    worker  STARTING ──► IDLE ◄──► RECEIVING ──► BUSY ──► IDLE ...
            any state ──► STOPPING (told to stop, or killed) ──► its exit
            any state ──► DEAD (its pipe broke: it is exiting) ──► its exit

    chunk   QUEUED ──► SENDING ──► IN_FLIGHT ──► PARTLY_REPORTED ──► DONE

A worker caught in RECEIVING (Ctrl-C in the middle of a large message) holds half a
message in its pipe: it cannot be told anything more and is only ever killed. What
a dead worker's chunks had not reported is queued again as new chunks.
"""

from __future__ import annotations

import collections
import enum
from typing import Any

from . import Outcome
from ._tally import WorkTally

__all__ = ["Call", "Chunk", "Worker", "WorkerState"]


class WorkerState(enum.Enum):
    STARTING = "starting"  # started; has not said it is ready, holds no work
    IDLE = "idle"  # ready, holds no chunk
    RECEIVING = "receiving"  # a message to it is being written
    BUSY = "busy"  # holds chunks (`in_flight`)
    STOPPING = "stopping"  # told to stop, or killed: only its exit remains
    DEAD = "dead"  # its pipe broke: its exit follows


class Chunk:
    """Consecutive items sent as one message."""

    __slots__ = (
        "buffers",
        "envelope",
        "items",
        "reported",
        "seq",
        "size",
        "start",
        "tracked",
    )

    def __init__(self, seq: int, start: int, items: list[Any]) -> None:
        self.seq = seq
        self.start = start  # the input index of its first item
        self.items = items
        self.reported = 0  # items answered, from the first
        self.tracked = False  # the worker writes the running item to its slot
        self.envelope: bytes | None = None  # set while encoded and not yet sent
        self.buffers: list[Any] = []
        self.size = 0  # bytes of the encoded message


class Worker:
    """One worker process, its two pipe ends and the chunks it holds, oldest first."""

    def __init__(self, process: Any, tasks: Any, results: Any, slot: int, ready: bool) -> None:
        self.process = process
        self.tasks = tasks  # the parent's end of the pipe to the worker
        self.results = results  # the parent's end of the pipe from the worker
        self.slot = slot
        self.state = WorkerState.IDLE if ready else WorkerState.STARTING
        self.in_flight: collections.deque[Chunk] = collections.deque()
        self.job_id = 0  # the job it has loaded
        self.items_sent = 0
        # Why the parent killed it: (offset in its running chunk, or None if it was
        # sending results, and the error to report).
        self.kill_reason: tuple[int | None, BaseException] | None = None
        self.discarded = False  # reaped and its pipes closed: nothing of it is left
        self.exit_fd = -1  # readable once the process has ended (`WorkerPool.spawn`)
        self.owns_exit_fd = False  # a pidfd we opened and close, not the sentinel
        self.exit_status_lost = False  # reaped by the system: SIGCHLD is ignored
        self.task_pipe_bytes = 0  # what its task pipe holds before a write blocks
        self.lifeline: Any = None  # the write end only we hold: closed, it ends the worker
        self.crash_file: Any = None  # where its faulthandler writes (`_crash_reports`)

    @property
    def takes_work(self) -> bool:
        return self.state is WorkerState.IDLE or self.state is WorkerState.BUSY

    @property
    def holds_half_a_message(self) -> bool:
        return self.state is WorkerState.RECEIVING

    def started(self) -> None:
        if self.state is WorkerState.STARTING:
            self.state = WorkerState.IDLE

    def receiving(self) -> None:
        self.state = WorkerState.RECEIVING

    def took(self, chunk: Chunk) -> None:
        self.in_flight.append(chunk)
        self.items_sent += len(chunk.items)
        if self.state is WorkerState.RECEIVING:
            self.state = WorkerState.BUSY

    def reported(self, chunk: Chunk, through: int) -> None:
        chunk.reported = through

    def finished_chunk(self) -> Chunk:
        chunk = self.in_flight.popleft()
        if self.state is WorkerState.BUSY and not self.in_flight:
            self.state = WorkerState.IDLE
        return chunk

    def lost(self) -> None:
        """Its pipe broke: it is exiting, and its exit watch will say so."""
        if self.state is not WorkerState.STOPPING:
            self.state = WorkerState.DEAD

    def stopping(self) -> None:
        self.state = WorkerState.STOPPING


class Call:
    """What the parts of the pool share about the call under way."""

    def __init__(self) -> None:
        self.job_id = 0
        self.job_message = b""  # the `LoadJob` envelope
        self.name = ""  # the function's name, for messages
        self.timeout: float | None = None
        self.outcomes: list[Outcome] = []  # ready for the runner's next `collect`
        self.fruitless_deaths = 0  # workers that died in a row before any result
        self.tally = WorkTally()  # what the workers did, for `f.stats`

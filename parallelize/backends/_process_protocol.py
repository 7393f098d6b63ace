"""What the parent and a worker process exchange: pipe messages and the shared slots.

Every message is a small pickled envelope, one of the named tuples below, plus raw
buffers (`_wire`). From the parent a worker gets `LoadJob` once per call (unless it
was forked for the call and inherited the job: `_shared_args`), then `RunChunk`s,
and `STOP` (pickled `None`) to end. A worker answers `Ready` once
started, a `Results` for each run of results (and for the item that failed after
them), `ChunkUnreadable` or `JobUnloadable` when it could not unpickle what it was
sent, and `InitializerFailed` if it cannot start at all.

Beside the pipes, each worker owns `SLOT_FIELDS` doubles of an array shared with
the parent (`_slots`). The worker writes them, the parent only reads them:

- `CHUNK_SEQ`: the `seq` of the chunk the worker is running;
- `RUNNING_OFFSET`: the offset in that chunk of the item running now, or -1 between
  items (a death then blames no item); written only for tracked chunks. Under a
  `timeout` it is `SENDING` while results are pickled and sent, which count towards
  the deadline of the last item run (a pickling that hangs must time out too);
- `STARTED_AT`: `time.monotonic()` when that item started, for timeouts;
- `OPENS_CALLER_FDS`: 1 once the worker found it can open the caller's descriptors
  through `/proc/<caller>/fd` (so a kept worker can map a later call's shared
  arguments), -1 if it cannot, 0 until it has looked. The parent sets it to 0 before
  it starts a worker in the slot; only the worker writes it afterwards.

While it changes the item, a worker writes -1 to `RUNNING_OFFSET` first and the new
offset last, so a reader that sees the same offset before and after reading
`STARTED_AT` has a consistent pair.
"""

from __future__ import annotations

import pickle
from typing import Any, NamedTuple

__all__ = [
    "CHUNK_SEQ",
    "RUNNING_OFFSET",
    "SENDING",
    "SLOT_FIELDS",
    "STARTED_AT",
    "STOP",
    "ChunkUnreadable",
    "InitializerFailed",
    "JobUnloadable",
    "LoadJob",
    "OPENS_CALLER_FDS",
    "Ready",
    "Results",
    "RunChunk",
    "decode",
    "encode",
    "slot_base",
    "wire_form",
]

# Field offsets within one worker's slot, and the slot's size.
CHUNK_SEQ = 0
RUNNING_OFFSET = 1
STARTED_AT = 2
OPENS_CALLER_FDS = 3
SLOT_FIELDS = 4
# `RUNNING_OFFSET` while a timed chunk's results are being pickled and sent.
SENDING = -2.0

STOP = pickle.dumps(None)

# An error as it crosses the pipe: the exception (or a stand-in that pickles) and
# the worker's formatted traceback.
ErrorPayload = tuple[BaseException, str]


def slot_base(slot: int) -> int:
    """Index of worker `slot`'s first field in the shared array."""
    return slot * SLOT_FIELDS


# -- parent to worker ----------------------------------------------------------------


class LoadJob(NamedTuple):
    """The call's item function and whether items are timed, pickled with protocol 5.

    `parts` are the pickle and then its out-of-band buffers, each given as the bytes
    themselves, as the index of one of the message's buffers, or as `(offset, size)`
    in the shared segment `segment` names (`_shared_args.SegmentRef`). None: the job
    was meant to reach this worker another way (a bug if it is ever sent).
    """

    job_id: int
    parts: tuple[Any, ...] | None
    segment: tuple[int, ...] | None


class RunChunk(NamedTuple):
    """Run the chunk whose pickled items are the message's buffers."""

    seq: int
    tracked: bool  # write the running item to the slot (see the module docstring)


# -- worker to parent ----------------------------------------------------------------


class Ready(NamedTuple):
    """The worker has started (its initializer ran) and waits for work."""


class Results(NamedTuple):
    """Items `offset .. offset + result_count` of chunk `seq` gave results; if `failed`,
    the item after them failed. The values and the failure are pickled apart, as the
    message's buffers, so the parent can read this even when they cannot be rebuilt.
    `elapsed` (seconds since the chunk began) is set on the chunk's last message only,
    with `slow`: `(offset, seconds)` of the chunk's items that ran over 1 ms.
    """

    seq: int
    offset: int
    result_count: int
    failed: bool
    elapsed: float | None
    slow: tuple[tuple[int, float], ...]


class ChunkUnreadable(NamedTuple):
    """The items of chunk `seq` could not be unpickled in the worker."""

    seq: int
    error: ErrorPayload


class JobUnloadable(NamedTuple):
    """The function of job `job_id` could not be unpickled in the worker."""

    job_id: int
    error: ErrorPayload


class InitializerFailed(NamedTuple):
    """The initializer raised; the worker has ended."""

    error: ErrorPayload


# On the pipe a message is a plain tuple, its kind's number first: a named tuple
# pickles by class name, several times slower to write and read, once per chunk.
_KINDS: tuple[Any, ...] = (
    LoadJob,
    RunChunk,
    Ready,
    Results,
    ChunkUnreadable,
    JobUnloadable,
    InitializerFailed,
)
_NUMBERS = {kind: number for number, kind in enumerate(_KINDS)}


def wire_form(message: Any) -> tuple[Any, ...]:
    """`message` as the plain tuple that travels."""
    return (_NUMBERS[type(message)], *message)


def encode(message: Any) -> bytes:
    """The envelope of `message`."""
    return pickle.dumps(wire_form(message), pickle.HIGHEST_PROTOCOL)


def decode(envelope: Any) -> Any:
    """The message in `envelope`, or None for `STOP`."""
    data = pickle.loads(envelope)
    if data is None:
        return None
    return _KINDS[data[0]]._make(data[1:])

"""A call's function and extra arguments on the process backend: pickled once, shared.

The job of a call (the item function with its extra arguments) is pickled once with
protocol 5, and the large buffers pickle sets apart (numpy arrays and the like,
also inside lists, dicts and objects) are never copied into each worker:

| worker                                   | how it gets the job                          |
|------------------------------------------|----------------------------------------------|
| forked for this call (`fork`)            | inherits the pickle and the buffers' memory  |
|                                          | (copy-on-write): no copy, no message         |
| started for this call (spawn/forkserver) | the segment's descriptor, passed at its      |
|                                          | start; a small `LoadJob` says where what is  |
| kept from an earlier call (`keep_alive`) | a small `LoadJob`; it opens the segment      |
|                                          | through `/proc/<caller>/fd/<fd>`, if its     |
|                                          | start-up probe found that it can; otherwise  |
|                                          | the parts cross its pipe (copied, as before) |

The segment (`_segment`) is a sealed memfd, closed when the call ends
(`CallJob.close`); workers map it read-only (arrays rebuilt from it are read-only)
and let go of it when they load the next call's job or end: after a large call, the
next one gives every kept worker its job at once, even one that will get no work.

On a kept pool the last call's segment is kept too (the workers' mappings hold its
pages anyway): a call whose pickle and buffers are that segment's, byte for byte
(`memcmp`, ~13 ms for 200 MB), is the same job (`CallJob.adopt`), and workers that
loaded it get no `LoadJob` at all. Under fork the first kept call makes a segment
for that reason, though its workers inherit the job. A call whose large buffers
total under `SHARED_BYTES` pickles everything in band, as it always did: no
segment, and the same single message.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from .._sending import OUT_OF_BAND_BYTES, dumps, loads
from ._process_protocol import LoadJob, encode
from ._segment import CAN_SHARE, Segment, SegmentRef, mapped

__all__ = ["SHARED_BYTES", "CallJob", "Handoff", "WorkerJobs"]

# A call shares its large buffers once they total this much: below it, copying them
# into each worker's pipe costs less than a segment (a few system calls, and a page
# fault per page a worker reads).
SHARED_BYTES = 1 << 20


class CallJob:
    """One call's pickled job (`parts`: the pickle, then its out-of-band buffers), and
    the messages that take it to workers."""

    def __init__(self, job_id: int, obj: Any) -> None:
        self.job_id = job_id
        self._obj = obj
        buffers: list[memoryview] = []
        payload = dumps(obj, buffers=buffers)
        shared = sum(b.nbytes for b in buffers)
        if len(payload) >= OUT_OF_BAND_BYTES:
            shared += len(payload)
        self.large = shared >= SHARED_BYTES
        if buffers and not self.large:  # a few small arrays: in band, as always
            payload, buffers = dumps(obj), []
        self.parts: list[Any] = [payload, *buffers]
        self.segment: Segment | None = None

    def share(self, *, kept: bool) -> None:
        """Put the parts into a segment; on failure (no memory for it, no descriptor
        left) the job travels the other ways. `kept`: on a kept pool the next call
        compares its job with this one, and the segment is mapped for that now."""
        with contextlib.suppress(OSError):
            self.segment = Segment([memoryview(part) for part in self._shared_parts()])
            if kept:
                self.segment.keep_mapped()

    def same_as(self, earlier: CallJob) -> bool:
        """Whether `earlier` (the last call's job, released, its segment kept) is this
        job: the same pickle and buffers, byte for byte."""
        if earlier.segment is None or not self.large:
            return False
        shared = self._shared_parts()
        in_band = self.parts[: len(self.parts) - len(shared)]
        if in_band != earlier.parts:
            return False
        try:
            return earlier.segment.holds([memoryview(part) for part in shared])
        except OSError:  # no memory to map it: share anew
            return False

    def adopt(self, earlier: CallJob) -> None:
        """Become `earlier`'s job: its id, which workers have loaded, and its segment."""
        self.job_id = earlier.job_id
        self.segment, earlier.segment = earlier.segment, None

    def _shared_parts(self) -> list[Any]:
        payload = self.parts[0]
        return self.parts if len(payload) >= OUT_OF_BAND_BYTES else self.parts[1:]

    def message(self, *, forked: bool) -> bytes:
        """The `LoadJob` for a worker that has the segment, or will open it (or for
        any worker, if the job is small). `forked`: under fork, a large job with no
        segment reaches every worker otherwise (`inherited`, `by_pipe`)."""
        if self.segment is not None:
            places = iter(self.segment.places)
            payload = self.parts[0]
            parts: tuple[Any, ...] = (
                *([next(places)] if len(payload) >= OUT_OF_BAND_BYTES else [payload]),
                *places,
            )
            return encode(LoadJob(self.job_id, parts, tuple(self.segment.ref)))
        if not self.large:
            return encode(LoadJob(self.job_id, (self.parts[0],), None))
        if forked:
            return encode(LoadJob(self.job_id, None, None))
        return encode(LoadJob(self.job_id, (dumps(self._obj),), None))  # no memfd here

    def by_pipe(self) -> tuple[bytes, list[Any]]:
        """The `LoadJob` and buffers that carry the job through a worker's pipe."""
        return encode(LoadJob(self.job_id, tuple(range(len(self.parts))), None)), self.parts

    def inherited(self) -> tuple[int, list[Any]]:
        """What a worker forked now inherits: the job, in this process's memory."""
        return self.job_id, self.parts

    def passed(self) -> tuple[int, int] | None:
        """The segment's descriptor for a worker started now (spawn, forkserver)."""
        return None if self.segment is None else (self.job_id, self.segment.fd)

    def release(self) -> None:
        """Let go of the caller's objects, keeping the segment and what `same_as`
        compares beside it: the pickle, unless the segment holds it."""
        self.parts = self.parts[: len(self.parts) - len(self._shared_parts())]
        self._obj = None

    def close(self) -> None:
        """Let go of the segment and of the caller's objects."""
        if self.segment is not None:
            self.segment.close()
        self.parts = []
        self._obj = None


class Handoff:
    """What a worker gets at its start: who its caller is, to probe /proc with, and the
    job under way, inherited (fork) or as the segment's descriptor (spawn,
    forkserver). Pickled for a spawned worker, it passes the descriptor along."""

    def __init__(
        self,
        caller_pid: int,
        caller_lifeline: int,
        inherited: tuple[int, list[Any]] | None,
        passed: tuple[int, int] | None,
    ) -> None:
        self.caller_pid = caller_pid
        self.caller_lifeline = caller_lifeline  # the caller's number for its lifeline end
        self.inherited = inherited
        self.passed = passed

    def __reduce__(self) -> tuple[Any, ...]:
        from multiprocessing.reduction import DupFd

        passed = None if self.passed is None else (self.passed[0], DupFd(self.passed[1]))
        return (_rebuilt_handoff, (self.caller_pid, self.caller_lifeline, passed))


def _rebuilt_handoff(caller_pid: int, caller_lifeline: int, passed: Any) -> Handoff:
    """In a spawned worker: the handoff, with the descriptor the parent passed."""
    mine = None if passed is None else (passed[0], passed[1].detach())
    return Handoff(caller_pid, caller_lifeline, None, mine)


class WorkerJobs:
    """The worker's side: rebuilds each `LoadJob` from wherever its parts are."""

    def __init__(self, handoff: Handoff, lifeline_fd: int) -> None:
        self._handoff = handoff
        self._lifeline_fd = lifeline_fd
        self._passed = handoff.passed

    def opens_caller_fds(self) -> bool:
        """Whether this worker can open the caller's descriptors through /proc (not if
        /proc is missing, the caller is not dumpable, or a security module says no):
        the caller's end of our lifeline, seen there, is the pipe we hold."""
        if not CAN_SHARE:
            return False
        path = f"/proc/{self._handoff.caller_pid}/fd/{self._handoff.caller_lifeline}"
        try:
            theirs, ours = os.stat(path), os.fstat(self._lifeline_fd)
        except OSError:
            return False
        return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)

    def take_inherited(self) -> tuple[int, list[Any]] | None:
        inherited, self._handoff.inherited = self._handoff.inherited, None
        return inherited

    def rebuild(self, message: LoadJob, buffers: list[memoryview]) -> Any:
        """The job `message` describes; `buffers` are the message's own."""
        passed, self._passed = self._passed, None  # a passed descriptor serves one job
        try:
            if message.parts is None:
                raise RuntimeError(
                    "parallelize sent this worker a job it should have inherited; "
                    "please report this bug"
                )
            mapping = None
            if message.segment is not None:
                ref = SegmentRef(*message.segment)
                fd = passed[1] if passed is not None and passed[0] == message.job_id else None
                mapping = mapped(ref, fd)
            parts = [_part(part, buffers, mapping) for part in message.parts]
        finally:
            if passed is not None:
                os.close(passed[1])
        return loads(parts[0], parts[1:])


def _part(part: Any, buffers: list[memoryview], mapping: memoryview | None) -> Any:
    if isinstance(part, int):
        return buffers[part]
    if isinstance(part, tuple):
        assert mapping is not None
        start, size = part
        return mapping[start : start + size]
    return part

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

The segment is a memfd (Linux): it has no name, in `/dev/shm` or anywhere, so no
death can leak it; it is freed when the last descriptor and mapping of it go, the
caller's included, however they end. The parent writes it with `pwritev` (no
mapping of its own), seals it against writes and resizing, and closes it when the
call ends (`CallJob.close`); workers map it read-only (arrays rebuilt from it are
read-only) and let go of it when they load the next call's job or end: after a large
call, the next one gives every kept worker its job at once, even one that will get
no work. A call whose large buffers total under `SHARED_BYTES` pickles everything in
band, as it always did: no segment, and the same single message.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import sys
from typing import Any, NamedTuple

from .._sending import OUT_OF_BAND_BYTES, dumps, loads
from ._process_protocol import LoadJob, encode

__all__ = [
    "CAN_SHARE",
    "SHARED_BYTES",
    "CallJob",
    "Handoff",
    "WorkerJobs",
    "close_inherited_segments",
]

# A call shares its large buffers once they total this much: below it, copying them
# into each worker's pipe costs less than a segment (a few system calls, and a page
# fault per page a worker reads).
SHARED_BYTES = 1 << 20
# Parts start at multiples of this in the segment: any dtype's alignment, one cache line.
ALIGNMENT = 64
SEGMENT_NAME = "parallelize-args"
# A memfd is created 0777; only a descriptor or /proc/<pid>/fd (owner only) reaches
# it, but its mode should say so too (as the slots' does).
SEGMENT_MODE = 0o600
CAN_SHARE = sys.platform == "linux" and hasattr(os, "memfd_create") and hasattr(os, "pwritev")

# Segment descriptors open in this process, by every call under way (there may be
# several, in threads). A worker forked meanwhile inherits them and closes them at
# once: kept open, they would hold another call's segment for the worker's lifetime.
_open_segment_fds: set[int] = set()


class SegmentRef(NamedTuple):
    """What a worker needs to find a segment and check it found the right one."""

    caller_pid: int
    fd: int  # in the caller
    device: int
    inode: int
    size: int


class Segment:
    """A sealed memfd holding the parts of one job, each at an aligned offset."""

    def __init__(self, parts: list[memoryview]) -> None:
        self.places: list[tuple[int, int]] = []
        end = 0
        for part in parts:
            start = -(-end // ALIGNMENT) * ALIGNMENT
            self.places.append((start, part.nbytes))
            end = start + part.nbytes
        fd = os.memfd_create(SEGMENT_NAME, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        _open_segment_fds.add(fd)
        self.fd = fd
        try:
            os.fchmod(fd, SEGMENT_MODE)
            os.ftruncate(fd, end)
            for part, (start, _) in zip(parts, self.places, strict=True):
                _write_at(fd, part, start)
            import fcntl

            seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals | fcntl.F_SEAL_SEAL)
            status = os.fstat(fd)
        except BaseException:  # Ctrl-C in the middle of the copy included
            self.close()
            raise
        self.ref = SegmentRef(os.getpid(), fd, status.st_dev, status.st_ino, end)

    def close(self) -> None:
        if self.fd < 0:
            return
        _open_segment_fds.discard(self.fd)
        os.close(self.fd)
        self.fd = -1


def _write_at(fd: int, part: memoryview, offset: int) -> None:
    view = part.cast("B")
    done = 0
    while done < view.nbytes:
        done += os.pwritev(fd, [view[done:]], offset + done)


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

    def share(self) -> None:
        """Put the parts into a segment; on failure (no memory for it, no descriptor
        left) the job travels the other ways."""
        with contextlib.suppress(OSError):
            self.segment = Segment([memoryview(part) for part in self._shared_parts()])

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


def close_inherited_segments() -> None:
    """In a new worker: close the segment descriptors a fork gave it. A forked worker
    never needs them (it inherits its call's job whole), and kept they would hold the
    segments of calls that have ended."""
    for fd in _open_segment_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    _open_segment_fds.clear()


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
                mapping = _mapped(ref, fd)
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


def _mapped(ref: SegmentRef, fd: int | None) -> memoryview:
    """A read-only view of the segment `ref` names, through `fd` or the caller's /proc."""
    opened = fd is None
    if fd is None:
        path = f"/proc/{ref.caller_pid}/fd/{ref.fd}"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise OSError(
                exc.errno, f"cannot open the call's shared arguments at {path}: {exc.strerror}"
            ) from None
    try:
        status = os.fstat(fd)
        if (status.st_dev, status.st_ino, status.st_size) != (ref.device, ref.inode, ref.size):
            raise OSError(f"{SEGMENT_NAME}: the call's shared arguments are gone (call over)")
        # Private and read-only: the pages are the segment's, shared, as none is written;
        # a shared mapping of a write-sealed memfd is refused before Linux 6.7.
        return memoryview(mmap.mmap(fd, ref.size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ))
    finally:
        if opened:
            os.close(fd)

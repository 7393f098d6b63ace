"""The shared segment of a call's large arguments: a sealed memfd (Linux).

The caller writes the parts of a job into it at aligned offsets with `pwritev` (no
mapping of its own), seals it against writes and resizing, and hands workers its
descriptor or a `SegmentRef` to open it through `/proc/<caller>/fd`; workers map
it read-only. It has no name, in `/dev/shm` or anywhere, so no death can leak it:
it is freed when the last descriptor and mapping of it go, however they end.

Sealed, it is also a snapshot of the arguments at the time of their call: a later
call's arguments are compared with it byte for byte (`Segment.holds`), which is how
a kept pool knows that arguments it already has did not change.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import sys
from typing import Any, NamedTuple

__all__ = [
    "CAN_SHARE",
    "SEGMENT_NAME",
    "Segment",
    "SegmentRef",
    "close_inherited_segments",
    "mapped",
]

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
        self._mapped: int | None = None  # the address of `keep_mapped`'s mapping
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

    def keep_mapped(self) -> None:
        """Map the segment read-only in this process for `holds`, and keep it mapped:
        its pages are the workers' (no memory added), and mapping 200 MB again for
        each comparison would cost more than the comparison."""
        if self._mapped is None and self.ref.size:
            self._mapped = _map_populated(self.fd, self.ref.size)

    def holds(self, parts: list[memoryview]) -> bool:
        """Whether the segment holds exactly `parts`, byte for byte, in its places.

        False also where that cannot be told cheaply (a read-only buffer with no
        address to give `memcmp`): the parts are then shared anew.
        """
        sizes = [size for _, size in self.places]
        if self.fd < 0 or [part.nbytes for part in parts] != sizes:
            return False
        self.keep_mapped()
        for part, (start, size) in zip(parts, self.places, strict=True):
            if not size:
                continue
            address = _address(part)
            if address is None or self._mapped is None:
                return False
            if _libc().memcmp(address, self._mapped + start, size) != 0:
                return False
        return True

    def close(self) -> None:
        if self._mapped is not None:
            _libc().munmap(self._mapped, self.ref.size)
            self._mapped = None
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


def _address(part: memoryview) -> int | None:
    """Where `part`'s bytes are, if that can be told without copying them."""
    if not part.c_contiguous:
        return None
    if not part.readonly:
        import ctypes

        with memoryview(part) as view:  # released at once: ctypes copies nothing
            return ctypes.addressof(ctypes.c_char.from_buffer(view))
    numpy: Any = sys.modules.get("numpy")  # a read-only array's buffer
    if numpy is None:
        return None
    address: int = numpy.frombuffer(part, dtype=numpy.uint8).ctypes.data
    return address


def _map_populated(fd: int, size: int) -> int:
    """The address of a private read-only mapping of `fd`, its pages mapped at once
    (`MAP_POPULATE`: one system call, where faulting 200 MB in page by page costs
    as much again as comparing it). ctypes, as Python's `mmap` gives no address."""
    import ctypes

    libc = _libc()
    address: int | None = libc.mmap(
        None, size, mmap.PROT_READ, mmap.MAP_PRIVATE | mmap.MAP_POPULATE, fd, 0
    )
    if address is None or address == ctypes.c_void_p(-1).value:  # MAP_FAILED
        raise OSError(ctypes.get_errno(), "cannot map the call's shared arguments")
    # Not into workers forked later: they would hold the segment for their lifetime.
    if libc.madvise(address, size, mmap.MADV_DONTFORK) != 0:
        error = ctypes.get_errno()
        libc.munmap(address, size)
        raise OSError(error, "cannot keep the call's shared arguments out of forks")
    return address


_libc_functions: Any = None


def _libc() -> Any:
    """The C library's `mmap`, `madvise`, `munmap` and `memcmp`: `memcmp` compares 200 MB in
    ~13 ms, where comparing two memoryviews takes ~330 ms."""
    global _libc_functions
    if _libc_functions is None:
        import ctypes  # here: workers never compare, and need not import it

        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_long,
        ]
        libc.mmap.restype = ctypes.c_void_p
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        libc.munmap.restype = ctypes.c_int
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        libc.madvise.restype = ctypes.c_int
        libc.memcmp.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
        libc.memcmp.restype = ctypes.c_int
        _libc_functions = libc
    return _libc_functions


def close_inherited_segments() -> None:
    """In a new worker: close the segment descriptors a fork gave it. A forked worker
    never needs them (it inherits its call's job whole), and kept they would hold the
    segments of calls that have ended."""
    for fd in _open_segment_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    _open_segment_fds.clear()


def mapped(ref: SegmentRef, fd: int | None) -> memoryview:
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

"""Messages on the pipes between the parent and a worker process.

A message is a small pickled envelope plus raw buffers: a chunk's pickled items, a
run's pickled results, and the large buffers pickle protocol 5 kept out of band
(numpy arrays and the like). The buffers are written straight from the objects'
memory and read straight into the memory the rebuilt objects use, so a 4 MB array
is copied by the kernel and nowhere else. `multiprocessing.Connection` would copy
it four more times on the way (pickle, BytesIO chunks, getvalue, unpickle).

On POSIX the pipe is driven with `os.writev`/`os.readv` on the connection's file
descriptor, and widened to 1 MiB on Linux so a large buffer crosses in few system
calls. Elsewhere (Windows pipes are handles) each part is one Connection message.
"""

from __future__ import annotations

import contextlib
import os
import select
import struct
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["capacity", "receive", "send", "widen"]

_RAW = sys.platform != "win32" and hasattr(os, "readv") and hasattr(os, "writev")
# Before each message: the bytes after this head, the envelope's length and the
# number of buffers; then each buffer's length, the envelope and the buffers.
_HEAD = struct.Struct("!QQI")
_SIZE = struct.Struct("!Q")
# A message smaller than this is read in one system call, its parts slices of one
# bytearray; a larger one gets a bytearray per buffer, as its arrays keep them alive.
ONE_READ_BYTES = 64 * 1024
# The widest pipe an unprivileged process may ask for on Linux by default.
PIPE_BYTES = 1 << 20
# A message's bytes beyond its items and buffers (the head, sizes and envelope), at most.
MESSAGE_OVERHEAD_BYTES = 256
# os.writev and os.readv take at most IOV_MAX parts per call (1024 on Linux).
_PARTS_PER_CALL = 64


if sys.platform == "linux":
    import fcntl

    def widen(conn: Any) -> None:
        """Ask for a 1 MiB pipe buffer; a refusal (over the user's quota) only costs speed."""
        with contextlib.suppress(OSError):
            fcntl.fcntl(conn.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)

    def capacity(conn: Any) -> int:
        """The bytes the pipe holds before a write blocks: one page, if the user is
        over the kernel's quota of pipe memory (many workers, or many pipes)."""
        try:
            return int(fcntl.fcntl(conn.fileno(), fcntl.F_GETPIPE_SZ))
        except OSError:
            return select.PIPE_BUF

else:

    def widen(conn: Any) -> None:
        """Pipe buffers keep their size outside Linux."""

    def capacity(conn: Any) -> int:
        """Only PIPE_BUF bytes are sure to fit: macOS pipes shrink under memory pressure."""
        return select.PIPE_BUF if hasattr(select, "PIPE_BUF") else 512


def send(conn: Any, envelope: bytes, buffers: Sequence[Any] = ()) -> None:
    """Write one message: `envelope` and `buffers` (bytes-like), in one piece."""
    views = [memoryview(b).cast("B") for b in buffers]
    sizes = b"".join(_SIZE.pack(v.nbytes) for v in views)
    rest = len(sizes) + len(envelope) + sum(v.nbytes for v in views)
    head = _HEAD.pack(rest, len(envelope), len(views)) + sizes
    if not _RAW:
        conn.send_bytes(head)
        conn.send_bytes(envelope)
        for view in views:
            conn.send_bytes(view)
        return
    _write_all(conn.fileno(), [memoryview(head + envelope), *views])


def receive(conn: Any) -> tuple[memoryview, list[memoryview]]:
    """Read one message: its envelope and its buffers (writable).

    Raises EOFError when the other end is gone, also in the middle of a message.
    """
    if not _RAW:
        head = conn.recv_bytes()
        _, _, count = _HEAD.unpack_from(head)
        envelope = memoryview(bytearray(conn.recv_bytes()))
        return envelope, [memoryview(bytearray(conn.recv_bytes())) for _ in range(count)]
    fd = conn.fileno()
    rest, length, count = _HEAD.unpack(_read_into(fd, [bytearray(_HEAD.size)])[0])
    if rest < ONE_READ_BYTES:
        whole = memoryview(_read_into(fd, [bytearray(rest)])[0])
        parts = _split(whole, count, length)
        return parts[0], parts[1:]
    meta = memoryview(_read_into(fd, [bytearray(count * _SIZE.size + length)])[0])
    sizes = struct.unpack_from(f"!{count}Q", meta)
    buffers = _read_into(fd, [bytearray(size) for size in sizes])
    return meta[count * _SIZE.size :], [memoryview(b) for b in buffers]


def _split(whole: memoryview, count: int, length: int) -> list[memoryview]:
    """The envelope, then each buffer, as slices of a message read in one piece."""
    sizes = struct.unpack_from(f"!{count}Q", whole)
    start = count * _SIZE.size
    parts = [whole[start : start + length]]
    start += length
    for size in sizes:
        parts.append(whole[start : start + size])
        start += size
    return parts


def _write_all(fd: int, views: list[memoryview]) -> None:
    while views:
        _advance(views, os.writev(fd, views[:_PARTS_PER_CALL]))


def _read_into(fd: int, buffers: list[bytearray]) -> list[bytearray]:
    """Fill `buffers` from `fd`, in order, in as few system calls as the pipe allows."""
    views = [memoryview(b) for b in buffers if b]
    while views:
        got = os.readv(fd, views[:_PARTS_PER_CALL])
        if got == 0:
            raise EOFError("the other end of the pipe closed")
        _advance(views, got)
    return buffers


def _advance(views: list[memoryview], done: int) -> None:
    """Drop from `views` the `done` bytes a (partial) writev or readv went through."""
    while views and done >= views[0].nbytes:
        done -= views[0].nbytes
        views.pop(0)
    if done:
        views[0] = views[0][done:]

"""The array of doubles the process backend shares with its workers (their slots).

On Linux it is an `mmap` of a memfd, handed to a spawned or forkserver worker as a
file descriptor, the way its pipes are: the worker then maps it with `mmap` alone,
instead of importing `ctypes` and the multiprocessing heap to rebuild a `RawArray`
(~6 ms of every such worker's start). Elsewhere it is a `RawArray`.
"""

from __future__ import annotations

import mmap
import os
from typing import Any

__all__ = ["shared_doubles"]

DOUBLE_BYTES = 8
# A memfd is created with mode 0777. Only the fd, or /proc/<pid>/fd (open to the
# owner alone), reaches it, but its mode should say so too: owner only.
SLOTS_MODE = 0o600


def shared_doubles(context: Any, count: int) -> Any:
    """`count` zeroed doubles, indexable, shared with workers started by `context`.

    Call `.close()` on it (a no-op for a `RawArray`) once no worker will start again.
    """
    if not hasattr(os, "memfd_create"):
        return _RawArraySlots(context.RawArray("d", count))
    fd = os.memfd_create("parallelize-slots")
    os.fchmod(fd, SLOTS_MODE)
    os.ftruncate(fd, count * DOUBLE_BYTES)
    return MappedDoubles(fd, count)


class _RawArraySlots:
    """A `RawArray` with the `close()` of `MappedDoubles`."""

    def __init__(self, array: Any) -> None:
        self.array = array

    def __getitem__(self, index: int) -> float:
        return float(self.array[index])

    def __setitem__(self, index: int, value: float) -> None:
        self.array[index] = value

    def close(self) -> None:
        return None


class MappedDoubles:
    """Doubles in a shared mapping of `fd`; pickles (for a new worker) as that fd."""

    def __init__(self, fd: int, count: int) -> None:
        self._fd = fd
        self.count = count
        self._map = mmap.mmap(fd, count * DOUBLE_BYTES)
        self._view = memoryview(self._map).cast("d")

    def __getitem__(self, index: int) -> float:
        return float(self._view[index])

    def __setitem__(self, index: int, value: float) -> None:
        self._view[index] = value

    def __reduce__(self) -> tuple[Any, ...]:
        from multiprocessing.reduction import DupFd

        return (_attach, (DupFd(self._fd), self.count))

    def close(self) -> None:
        """Unmap and close the descriptor; workers keep their own mappings."""
        if self._fd < 0:
            return
        self._view.release()
        self._map.close()
        os.close(self._fd)
        self._fd = -1


def _attach(fd: Any, count: int) -> MappedDoubles:
    """In a new worker: map the descriptor the parent passed."""
    return MappedDoubles(fd.detach(), count)

"""A worker's Python traceback when it dies of a fatal signal (API.md section 8).

Each worker enables `faulthandler` on a file of its own that the caller holds too:
a memfd on Linux, an unlinked temporary file elsewhere, so it has no name and no
death leaks it. faulthandler writes the traceback from its signal handler, where a
file (unlike a pipe nobody reads yet) never blocks the write. The caller reads it
only when the worker died of one of `FATAL_SIGNALS`, for the `WorkerLostError`.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

__all__ = ["FATAL_SIGNALS", "CrashFile", "report_crashes_to"]

FATAL_SIGNALS = frozenset(
    getattr(signal, name).value
    for name in ("SIGSEGV", "SIGBUS", "SIGFPE", "SIGABRT", "SIGILL")
    if hasattr(signal, name)
)
# The most of a traceback the caller reads: faulthandler writes up to 100 frames for
# each of up to 100 threads; the crashing thread comes first.
REPORT_BYTES = 16 * 1024
# A memfd is created 0777; only its descriptor reaches it, but its mode says so too.
CRASH_FILE_MODE = 0o600


class CrashFile:
    """The file one worker's faulthandler writes to; pickles (for a new worker) as its
    descriptor."""

    def __init__(self, fd: int | None = None) -> None:
        self.fd = _new_file() if fd is None else fd

    def report(self) -> str:
        """What the worker wrote (nothing, unless it crashed)."""
        try:
            data = os.pread(self.fd, REPORT_BYTES, 0)
        except OSError:
            return ""
        return data.decode("utf-8", "replace").strip()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __reduce__(self) -> tuple[Any, ...]:
        from multiprocessing.reduction import DupFd

        return (_attach, (DupFd(self.fd),))


def _attach(fd: Any) -> CrashFile:
    """In a new worker: the crash file, through the descriptor the parent passed."""
    return CrashFile(fd.detach())


def _new_file() -> int:
    if sys.platform == "linux" and hasattr(os, "memfd_create"):
        fd = os.memfd_create("parallelize-crash", os.MFD_CLOEXEC)
        os.fchmod(fd, CRASH_FILE_MODE)
        return fd
    import tempfile

    with tempfile.TemporaryFile() as file:  # created 0600, and unlinked at once
        return os.dup(file.fileno())


def report_crashes_to(crash_file: CrashFile) -> None:
    """In the worker: a fatal signal writes every thread's Python traceback there."""
    import faulthandler

    faulthandler.enable(file=crash_file.fd, all_threads=True)

"""Whether the current code runs inside a parallelize worker (for nested calls).

A parallel function called from inside a worker runs its items serially on that
worker: the outer call already uses every core, and worker processes are daemons,
which may not start processes of their own.
"""

from __future__ import annotations

import threading

__all__ = ["inside_worker", "mark_worker_process", "worker_thread"]

_process_is_worker = False
_thread = threading.local()


def mark_worker_process() -> None:
    """Called once at the start of a worker process."""
    global _process_is_worker
    _process_is_worker = True


class worker_thread:
    """Marks the current thread as running a worker's items for the `with` block."""

    def __enter__(self) -> None:
        _thread.inside = True

    def __exit__(self, *exc: object) -> None:
        _thread.inside = False


def inside_worker() -> bool:
    return _process_is_worker or getattr(_thread, "inside", False)

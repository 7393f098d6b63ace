"""Finding the processes and threads a call may have left behind."""

from __future__ import annotations

import os
import threading
import time

import psutil

# multiprocessing's own long-lived helpers, started once per session: not workers.
HELPER_PROCESSES = ("multiprocessing.forkserver", "multiprocessing.resource_tracker")
# How long processes and threads may take to exit before they count as left behind.
GRACE_SECONDS = 3.0
POLL_SECONDS = 0.02


def _is_helper_process(process: psutil.Process) -> bool:
    """The forkserver or the resource tracker itself, not a worker."""
    # Forkserver workers share the forkserver's command line: they are its children, not ours.
    try:
        command = " ".join(process.cmdline())
        parent = process.ppid()
    except psutil.Error:
        return False
    return parent == os.getpid() and any(helper in command for helper in HELPER_PROCESSES)


def live_children() -> list[psutil.Process]:
    """Descendants of this process (zombies included), except multiprocessing's helpers."""
    children = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE or not _is_helper_process(child):
                children.append(child)
        except psutil.NoSuchProcess:
            continue
    return children


def wait_for_no_children(timeout: float = GRACE_SECONDS) -> list[psutil.Process]:
    """Poll until no child is left; return those still there after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while (children := live_children()) and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    return children


def parallelize_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("parallelize") and t.is_alive()]


def extra_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    """Threads started since `before` still running: parallelize's, or any non-daemon one."""
    return [
        thread
        for thread in threading.enumerate()
        if thread not in before
        and thread.is_alive()
        and (thread.name.startswith("parallelize") or not thread.daemon)
    ]


def wait_for_no_extra_threads(
    before: set[threading.Thread], timeout: float = GRACE_SECONDS
) -> list[threading.Thread]:
    """Poll until no extra thread is left; return those still running after `timeout`."""
    deadline = time.monotonic() + timeout
    while (threads := extra_threads(before)) and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    return threads


def describe(process: psutil.Process) -> str:
    try:
        return f"pid {process.pid} ({process.status()}): {' '.join(process.cmdline())[:120]}"
    except psutil.Error:
        return f"pid {process.pid}"

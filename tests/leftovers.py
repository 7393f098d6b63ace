"""Finding the processes and threads a call may have left behind."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable

import psutil

# multiprocessing's own long-lived helpers, started once per session: not workers.
HELPER_PROCESSES = ("multiprocessing.forkserver", "multiprocessing.resource_tracker")
# How long processes and threads may take to exit before they count as left behind.
GRACE_SECONDS = 3.0
POLL_SECONDS = 0.02

# The session's test clusters (conftest.py starts them once, for every Dask and Ray
# test) outlive each test. Each source gives the current pids of one cluster's
# long-lived processes; they and their descendants are not left behind by a test.
# Dask's nanny replaces a killed worker and Ray its worker pool, so the pids change:
# every pid a source ever gave is remembered, to cover a killed one not yet reaped.
_cluster_sources: list[Callable[[], Iterable[int]]] = []
_cluster_pids: set[int] = set()


def add_cluster(pids: Callable[[], Iterable[int]]) -> None:
    """Count the processes `pids()` names, and their descendants, as a session cluster."""
    _cluster_sources.append(pids)
    cluster_pids()


def remove_cluster(pids: Callable[[], Iterable[int]]) -> None:
    _cluster_sources.remove(pids)


def cluster_pids() -> set[int]:
    """Every pid of a session cluster's long-lived processes seen so far."""
    for source in _cluster_sources:
        _cluster_pids.update(source())
    return set(_cluster_pids)


def _is_cluster_process(process: psutil.Process, cluster: set[int]) -> bool:
    try:
        return process.pid in cluster or any(parent.pid in cluster for parent in process.parents())
    except psutil.Error:
        return False


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
    """Descendants of this process (zombies included), except multiprocessing's helpers
    and the session's clusters."""
    cluster = cluster_pids() if _cluster_sources else set()
    children = []
    for child in psutil.Process().children(recursive=True):
        try:
            if _is_cluster_process(child, cluster):
                continue
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

"""Shared fixtures: the backends every contract test runs on, and the leftover check."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
from leftovers import GRACE_SECONDS, describe, wait_for_no_children, wait_for_no_extra_threads

# The contract suite runs once per entry; the serial backend is the reference answer.
BACKEND_SETTINGS: dict[str, dict[str, Any]] = {
    "serial": {"backend": "serial"},
    "thread": {"backend": "thread", "workers": 2},
    "process-fork": {"backend": "process", "start_method": "fork", "workers": 2},
    "process-spawn": {"backend": "process", "start_method": "spawn", "workers": 2},
    "process-forkserver": {"backend": "process", "start_method": "forkserver", "workers": 2},
}
CONCURRENT = [name for name in BACKEND_SETTINGS if name != "serial"]
PROCESS = [name for name in BACKEND_SETTINGS if name.startswith("process")]


@pytest.fixture(params=list(BACKEND_SETTINGS))
def settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings for `parallel(**settings)`: every backend and start method."""
    return dict(BACKEND_SETTINGS[request.param])


@pytest.fixture(params=CONCURRENT)
def concurrent_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings of the backends that run two items at once (all but serial)."""
    return dict(BACKEND_SETTINGS[request.param])


@pytest.fixture(params=PROCESS)
def process_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings of the process backend under each start method."""
    return dict(BACKEND_SETTINGS[request.param])


@pytest.fixture(autouse=True)
def no_leftovers() -> Iterator[None]:
    """Fail a test that leaves a child process or a parallelize thread behind."""
    threads_before = set(threading.enumerate())
    yield
    children = wait_for_no_children()
    problems = [f"child process left behind: {describe(child)}" for child in children]
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    psutil.wait_procs(children, timeout=GRACE_SECONDS)
    threads = wait_for_no_extra_threads(threads_before)
    problems += [f"thread left running: {thread!r}" for thread in threads]
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)

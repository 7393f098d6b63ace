"""A worker that dies of a fatal signal says where (API.md section 8, "Crashes").

The `WorkerLostError` of the item it was running carries the worker's Python
traceback at the moment of the crash (faulthandler, written to a file the caller
reads), naming the item's function; deaths by other signals carry none. Under fork,
spawn and forkserver.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest

from parallelize import WorkerLostError, parallel

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not hasattr(signal, "SIGBUS"), reason="POSIX signals"),
]

CRASHING_ITEM = 2


def no_core_file() -> None:
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def crash_in_native_code(x: int) -> int:
    """Item 2 reads address 0 through ctypes: a real segfault in native code."""
    if x == CRASHING_ITEM:
        no_core_file()
        ctypes.string_at(0)
    return x


def die_of_signal(x: int, signum: int) -> int:
    """Item 2 sends its own worker `signum`."""
    if x == CRASHING_ITEM:
        no_core_file()
        os.kill(os.getpid(), signum)
    return x


def crash_file_fds() -> list[str]:
    """This process's descriptors for the workers' crash files."""
    links = []
    for entry in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            links.append(os.readlink(entry))
    return [link for link in links if "parallelize-crash" in link]


def test_a_segfault_reports_the_workers_traceback(process_settings: dict[str, Any]) -> None:
    results = parallel(**process_settings, errors="return")(crash_in_native_code)(range(6))
    assert [r for r in results if not isinstance(r, BaseException)] == [0, 1, 3, 4, 5]
    error = results[CRASHING_ITEM]
    assert isinstance(error, WorkerLostError)
    message = str(error)
    assert "killed by SIGSEGV" in message
    assert "Fatal Python error: Segmentation fault" in message
    assert "in crash_in_native_code" in message  # the item's function, in the traceback


# faulthandler's words for each signal ("Floating-point" from Python 3.12 on).
FATAL = {
    "SIGABRT": "Aborted",
    "SIGBUS": "Bus error",
    "SIGFPE": "Floating.point exception",
    "SIGILL": "Illegal instruction",
}


@pytest.mark.parametrize("name", sorted(FATAL))
def test_every_fatal_signal_reports_the_traceback(
    process_settings: dict[str, Any], name: str
) -> None:
    signum = getattr(signal, name).value
    results = parallel(**process_settings, errors="return")(die_of_signal)(range(4), signum)
    error = results[CRASHING_ITEM]
    assert isinstance(error, WorkerLostError)
    assert f"killed by {name}" in str(error)
    assert re.search(f"Fatal Python error: {FATAL[name]}", str(error))
    assert "in die_of_signal" in str(error)


@pytest.mark.parametrize("name", ["SIGKILL", "SIGTERM"])
def test_other_deaths_carry_no_traceback(process_settings: dict[str, Any], name: str) -> None:
    signum = getattr(signal, name).value
    results = parallel(**process_settings, errors="return")(die_of_signal)(range(4), signum)
    error = results[CRASHING_ITEM]
    assert isinstance(error, WorkerLostError)
    assert f"killed by {name}" in str(error)
    assert "traceback" not in str(error)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="lists /proc/self/fd")
def test_crash_files_are_closed_with_their_workers(process_settings: dict[str, Any]) -> None:
    function = parallel(**process_settings, keep_alive=True, errors="return")(crash_in_native_code)
    try:
        function(range(6))
        assert len(crash_file_fds()) == process_settings["workers"]  # the kept workers'
    finally:
        function.close()
    assert crash_file_fds() == []

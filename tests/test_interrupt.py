"""Ctrl-C in the caller (API.md section 5), with a real SIGINT to a real program.

`fault_scripts/interrupt.py` starts a parallel call of long items and prints "ready"
once they run (the items leave files; no sleep decides it). The test then sends
SIGINT, as a terminal's Ctrl-C does, to the program's whole process group (or to the
program alone), and checks that every worker is gone within 2 s, that the program
ends with `KeyboardInterrupt`, promptly, and that stderr holds one traceback at most.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import psutil
import pytest
from helpers import running

SCRIPT = Path(__file__).parent / "fault_scripts" / "interrupt.py"
# multiprocessing's own helpers, started by the program: not workers. Forkserver
# workers share the forkserver's command line, so a helper is also a direct child.
HELPER_WORDS = ("forkserver", "resource_tracker")
# The contract: every worker ends within this long after Ctrl-C.
WORKERS_END_SECONDS = 2.0
# The program itself may take a little longer (threads get a short grace to finish).
PROGRAM_END_SECONDS = 5.0
TRACEBACK = "Traceback (most recent call last)"

CASES = [
    # backend, start method, how the call is made, who gets the SIGINT
    ("thread", "-", "list", "group"),
    ("process", "fork", "list", "group"),
    ("process", "spawn", "list", "group"),
    ("process", "forkserver", "list", "group"),
    ("process", "fork", "iter", "group"),
    ("process", "forkserver", "unordered", "group"),
    ("process", "spawn", "iter", "program"),
    ("process", "fork", "unordered", "program"),
]


def is_gone(process: psutil.Process) -> bool:
    """Ended, or a zombie its parent (or init) will reap."""
    try:
        return bool(process.status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def wait_until_gone(processes: Iterable[psutil.Process], deadline: float) -> list[psutil.Process]:
    """Poll until every process has ended; return those still running at `deadline`."""
    while (alive := [p for p in processes if not is_gone(p)]) and time.monotonic() < deadline:
        time.sleep(0.02)
    return alive


def split_descendants(
    program: psutil.Process,
) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """The program's descendants: (workers, multiprocessing's helper processes)."""
    workers: list[psutil.Process] = []
    helpers: list[psutil.Process] = []
    for process in program.children(recursive=True):
        try:
            command = " ".join(process.cmdline())
            parent = process.ppid()
        except psutil.Error:
            continue
        helper = parent == program.pid and any(word in command for word in HELPER_WORDS)
        (helpers if helper else workers).append(process)
    return workers, helpers


def started_pids(directory: Path) -> set[int]:
    """The pids that ran items, from the files the items leave: `started-<x>-<pid>`."""
    return {int(path.name.split("-")[2]) for path in directory.iterdir()}


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("backend", "start_method", "mode", "target"),
    [pytest.param(*case, id="-".join(case)) for case in CASES],
)
def test_ctrl_c_ends_every_worker(
    backend: str, start_method: str, mode: str, target: str, tmp_path: Path
) -> None:
    command = [sys.executable, str(SCRIPT), backend, start_method, mode, str(tmp_path)]
    left: list[psutil.Process] = []
    helpers: list[psutil.Process] = []
    with running(command) as program:
        assert program.stdout is not None
        assert program.stdout.readline().strip() == "ready"
        workers, helpers = split_descendants(psutil.Process(program.pid))
        if backend == "process":
            assert started_pids(tmp_path) <= {w.pid for w in workers}
            assert len(workers) == 2, workers
        else:
            assert not workers  # threads: no process at all
        sent = time.monotonic()
        if target == "group":  # a terminal's Ctrl-C: the whole foreground group
            os.killpg(program.pid, signal.SIGINT)
        else:  # the program alone (a debugger or an IDE's stop button)
            os.kill(program.pid, signal.SIGINT)
        left = wait_until_gone(workers, sent + WORKERS_END_SECONDS)
        try:
            stdout, stderr = program.communicate(timeout=PROGRAM_END_SECONDS)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the program still ran {PROGRAM_END_SECONDS} s after Ctrl-C")
        ended = time.monotonic() - sent
    for process in [*left, *helpers]:  # do not leave them to the next test
        with contextlib.suppress(psutil.Error):
            process.kill()
    assert not left, f"workers still running {WORKERS_END_SECONDS} s after Ctrl-C: {left}"
    assert program.returncode in (-signal.SIGINT, 1), (program.returncode, stderr)
    assert "KeyboardInterrupt" in stderr or program.returncode == -signal.SIGINT
    assert stderr.count(TRACEBACK) <= 1, f"a traceback storm:\n{stderr}"
    assert ended < PROGRAM_END_SECONDS
    assert stdout == ""  # no item finished, nothing was printed after "ready"

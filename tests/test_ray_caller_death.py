"""The Ray a call starts for itself ends with its caller, however the caller ends.

A caller killed by SIGKILL runs no cleanup of its own: the reaper that `_local_ray`
starts beside Ray ends every process of that Ray session within the contract's 2 s of
the caller's death and removes the session directory, sparing what is not that
session's (a fork child of the caller, a process naming a look-alike directory). On
SIGTERM, Ray's driver handler exits through Python's cleanup, which takes its time (Ray's
shutdown, ~2.5 s on two cores); the contract counts from the caller's death. A call that
ends normally, or `keep_alive` and `close()`, leaves no reaper behind. Each caller is
a fresh interpreter (no Ray connected there), synchronised with the test through files.
Every test's name says `ray`, so `pytest -k ray` selects them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helpers
import psutil
import pytest

import parallelize

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason='needs the "ray" extra'),
    # The reaper finds a session's processes in /proc; elsewhere it only removes the
    # session directory.
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sweep reads /proc"),
    # Starting Ray takes ~10 s on two loaded cores.
    pytest.mark.timeout(120),
]

PACKAGE_ROOT = str(Path(parallelize.__file__).resolve().parent.parent)
TESTS_DIR = str(Path(__file__).resolve().parent)
# The suite's settings for its own Ray (conftest.py), which the callers must not see.
SUITE_RAY_VARIABLES = ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS")
# The contract: everything a dead caller started ends within 2 s; 1 s of slack for a
# loaded machine.
DEATH_SECONDS = 2 + 1
# How long a caller may take to start Ray and run its items, or to end normally.
CALLER_SECONDS = 90

CALLER_SCRIPT = """
    import json, os, sys, time
    from pathlib import Path
    import helpers
    import psutil
    from parallelize import parallel
    from parallelize.backends._ray_reaper import REAPER_CODE

    def touch_then_sleep(x, directory, seconds):
        Path(directory, f"running-{x}").touch()
        time.sleep(seconds)
        return x

    def reapers(caller):
        '''[pid, session directory] of each reaper that `caller` started.'''
        found = []
        for child in psutil.Process(caller).children():
            command = child.cmdline()
            if REAPER_CODE in command:
                found.append([child.pid, command[command.index(REAPER_CODE) + 1]])
        return found

    def reapers_seen(caller):
        return reapers(caller)

    def fork_a_child(directory):
        '''A child of the caller's own, which outlives it until the test lets it go.'''
        pid = os.fork()
        if pid == 0:
            helpers.wait_for_path(Path(directory, "gate"), timeout=60)
            os._exit(0)
        Path(directory, "forked").write_text(str(pid))

    if __name__ == "__main__":
        mode, directory = sys.argv[1:]
        caller = os.getpid()
        if mode == "held":
            parallel(backend="ray", workers=2)(touch_then_sleep)([1, 2], directory, 60)
        elif mode == "held_after_fork":
            kept = parallel(backend="ray", workers=2, keep_alive=True)(touch_then_sleep)
            kept([0], directory, 0)  # Ray, and its reaper, start before the fork
            fork_a_child(directory)
            kept([1, 2], directory, 60)
        elif mode == "call":
            during = parallel(backend="ray", workers=2)(reapers_seen)([caller])[0]
            print(json.dumps({"during": during, "after": reapers(caller)}))
        elif mode == "keep_alive":
            kept = parallel(backend="ray", workers=2, keep_alive=True)(reapers_seen)
            first, second = kept([caller])[0], kept([caller])[0]
            between = reapers(caller)
            kept.close()
            print(json.dumps({
                "first": first, "second": second, "between": between,
                "after": reapers(caller),
            }))
"""


def caller_environment() -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in SUITE_RAY_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join([PACKAGE_ROOT, TESTS_DIR])
    return env


def start_caller(tmp_path: Path, mode: str) -> tuple[subprocess.Popen[bytes], Path]:
    """Start CALLER_SCRIPT in `mode`; its output goes to files, read with `output`."""
    script = tmp_path / "caller.py"
    script.write_text(textwrap.dedent(CALLER_SCRIPT))
    directory = tmp_path / "gates"
    directory.mkdir()
    with open(tmp_path / "stdout", "wb") as out, open(tmp_path / "stderr", "wb") as err:
        process = subprocess.Popen(
            [sys.executable, str(script), mode, str(directory)],
            cwd=tmp_path,
            env=caller_environment(),
            stdout=out,
            stderr=err,
        )
    return process, directory


def output(tmp_path: Path, name: str = "stderr") -> str:
    return (tmp_path / name).read_text(errors="replace")


def run_caller(tmp_path: Path, mode: str) -> Any:
    """Run CALLER_SCRIPT in `mode` to its end; return the JSON it prints last."""
    process, _ = start_caller(tmp_path, mode)
    try:
        process.wait(CALLER_SECONDS)
    except subprocess.TimeoutExpired:
        kill_all(tree_of(process.pid))
        process.wait()
        raise AssertionError(f"the caller did not end: {output(tmp_path)[-4000:]}") from None
    assert process.returncode == 0, output(tmp_path)[-4000:]
    return json.loads(output(tmp_path, "stdout").splitlines()[-1])


def wait_for_files(process: subprocess.Popen[bytes], paths: list[Path], tmp_path: Path) -> None:
    deadline = time.monotonic() + CALLER_SECONDS
    while not all(path.exists() for path in paths):
        if process.poll() is not None or time.monotonic() > deadline:
            kill_all(tree_of(process.pid))
            raise AssertionError(f"the items never ran: {output(tmp_path)[-4000:]}")
        time.sleep(helpers.POLL_SECONDS)


def tree_of(pid: int) -> list[psutil.Process]:
    with contextlib.suppress(psutil.NoSuchProcess):
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    return []


def is_alive(process: psutil.Process) -> bool:
    """Runs code still: not ended, not a zombie waiting to be reaped."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def kill_all(processes: list[psutil.Process]) -> None:
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(processes, timeout=10)


def describe(process: psutil.Process) -> str:
    try:
        return f"pid {process.pid} {process.name()}: {' '.join(process.cmdline())[:100]}"
    except psutil.Error:
        return f"pid {process.pid}"


def session_of(tree: list[psutil.Process]) -> str:
    """The session directory that the caller's reaper was given."""
    from parallelize.backends._ray_reaper import REAPER_CODE

    for process in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            command = process.cmdline()
            if REAPER_CODE in command:
                return command[command.index(REAPER_CODE) + 1]
    raise AssertionError("the caller started no reaper: " + "; ".join(map(describe, tree)))


@contextlib.contextmanager
def bystander(session: str, tmp_path: Path) -> Iterator[psutil.Process]:
    """A process that looks like another session's Ray: titled "ray::...", with a file
    open in a directory whose name starts with our session's, which it also names on its
    command line. The sweep must leave it alone."""
    look_alike = Path(session + "-bystander")
    look_alike.mkdir()
    ready = tmp_path / "bystander-ready"
    code = (
        "import pathlib, sys, time\n"
        "log = open(pathlib.Path(sys.argv[1], 'log'), 'w')\n"
        "pathlib.Path(sys.argv[2]).touch()\n"
        "time.sleep(60)\n"
    )
    process = subprocess.Popen(
        ["ray::Bystander", "-I", "-c", code, str(look_alike), str(ready)],
        executable=sys.executable,
    )
    try:
        assert helpers.wait_for_path(ready), "the bystander never started"
        yield psutil.Process(process.pid)
    finally:
        process.kill()
        process.wait()
        shutil.rmtree(look_alike, ignore_errors=True)


def assert_all_end(tree: list[psutil.Process], session: str, died_at: float) -> None:
    """Every process of `tree` ends, and `session` is removed, within DEATH_SECONDS of
    the caller's death."""
    deadline = died_at + DEATH_SECONDS
    while (alive := [p for p in tree if is_alive(p)]) or os.path.exists(session):
        if time.monotonic() > deadline:
            break
        time.sleep(helpers.POLL_SECONDS)
    ended_after = time.monotonic() - died_at
    assert not alive, f"alive {ended_after:.1f} s after: " + "; ".join(map(describe, alive))
    assert not os.path.exists(session), f"{session} left behind"


@pytest.mark.parametrize("signal_number", [signal.SIGKILL, signal.SIGTERM], ids=["KILL", "TERM"])
def test_ray_of_a_killed_caller_ends_within_2_s(tmp_path: Path, signal_number: int) -> None:
    caller, directory = start_caller(tmp_path, "held")
    tree: list[psutil.Process] = []
    try:
        wait_for_files(caller, [directory / "running-1", directory / "running-2"], tmp_path)
        tree = tree_of(caller.pid)[1:]
        session = session_of(tree)
        names = {process.name() for process in tree}
        assert {"gcs_server", "raylet"} <= names, names  # not a vacuous pass
        assert os.path.isdir(session)
        with bystander(session, tmp_path) as other:
            caller.send_signal(signal_number)
            caller.wait()
            assert_all_end(tree, session, time.monotonic())
            assert is_alive(other)
    finally:
        kill_all([caller, *tree])


def test_ray_of_a_killed_caller_ends_while_its_fork_child_lives(tmp_path: Path) -> None:
    """A fork child of the caller holds no write end of the lifeline (the reaper starts
    at the caller's death, not the child's), and is not swept with Ray's processes."""
    caller, directory = start_caller(tmp_path, "held_after_fork")
    tree: list[psutil.Process] = []
    try:
        paths = [directory / "forked", directory / "running-1", directory / "running-2"]
        wait_for_files(caller, paths, tmp_path)
        tree = tree_of(caller.pid)[1:]
        session = session_of(tree)
        child = psutil.Process(int((directory / "forked").read_text()))
        assert child in tree
        caller.kill()
        caller.wait()
        assert_all_end([process for process in tree if process != child], session, time.monotonic())
        assert is_alive(child)
    finally:
        (directory / "gate").touch()
        kill_all([caller, *tree])


def test_ray_call_leaves_no_reaper(tmp_path: Path) -> None:
    report = run_caller(tmp_path, "call")
    [[pid, session]] = report["during"]  # one reaper while the call ran
    assert report["after"] == []
    assert not psutil.pid_exists(pid)  # ended and reaped, not a zombie
    assert not os.path.exists(session)


def test_ray_keep_alive_keeps_one_reaper_until_close(tmp_path: Path) -> None:
    report = run_caller(tmp_path, "keep_alive")
    [[pid, session]] = report["first"]
    assert report["second"] == report["between"] == [[pid, session]]
    assert report["after"] == []
    assert not psutil.pid_exists(pid)
    assert not os.path.exists(session)

"""Worker processes stand apart from the caller (API.md section 5), under every start method.

The processes an item starts end with its worker and do not inherit an ignored
SIGINT; a death or timeout is seen while such processes still run; the workers end
when the caller is killed, idle or busy; the caller's SIGCHLD setting and one-page
pipes break nothing. Items that must stay stuck wait on files the test writes, never on a sleep.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import faults
import psutil
import pytest
from helpers import wait_for_path

from parallelize import TaskTimeoutError, WorkerLostError, parallel
from parallelize.backends import _process_lifecycle

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(sys.platform == "win32", reason="process groups and signals are POSIX"),
]

TIMEOUT = 0.5
# Well under how long the items' children would live on their own (CHILD_SECONDS).
BOUND_SECONDS = 10.0
CHILD_SECONDS = 60
# The contract's 2 s for the workers of a killed caller, plus slack for a loaded machine.
CALLER_DEATH_SECONDS = 2.0 + 1.0


def _gone(pid: int) -> bool:
    """Whether `pid` has ended (a zombie waiting for init to reap it has ended too)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _all_gone(pids: list[int], within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if all(_gone(pid) for pid in pids):
            return True
        time.sleep(0.02)
    return all(_gone(pid) for pid in pids)


def start_children(x: int, directory: str, then: str) -> int:
    """Item 0 starts a `sleep` (exec) and a forked child, notes their pids, then does
    `then`: "hang" (past the timeout), "exit" (os._exit) or "return"."""
    if x != 0:
        return x
    sleeper = subprocess.Popen(["sleep", str(CHILD_SECONDS)])
    forked = os.fork()
    if forked == 0:  # holds every file descriptor the worker had, its pipes included
        time.sleep(CHILD_SECONDS)
        os._exit(0)
    Path(directory, "pids").write_text(f"{sleeper.pid} {forked}")
    if then == "hang":
        time.sleep(CHILD_SECONDS)
    elif then == "exit":
        os._exit(faults.EXIT_CODE)
    return x


def child_pids(directory: Path) -> list[int]:
    assert wait_for_path(directory / "pids")
    return [int(pid) for pid in (directory / "pids").read_text().split()]


@pytest.mark.parametrize("then", ["hang", "exit"])
def test_a_timeout_or_death_is_seen_while_the_items_children_run(
    process_settings: dict[str, Any], tmp_path: Path, then: str
) -> None:
    """The item's forked child holds the worker's pipes, and both children would
    outlive the worker by a minute: the failure comes at once, and they end with it."""
    function = parallel(**process_settings, timeout=TIMEOUT, errors="return")(start_children)
    began = time.monotonic()
    results = function(range(4), str(tmp_path), then)
    assert time.monotonic() - began < BOUND_SECONDS
    kind = TaskTimeoutError if then == "hang" else WorkerLostError
    assert type(results[0]) is kind, results
    assert results[1:] == [1, 2, 3]
    assert _all_gone(child_pids(tmp_path), within=BOUND_SECONDS)


def test_close_ends_the_processes_items_left_running(
    process_settings: dict[str, Any], tmp_path: Path
) -> None:
    """An item returns and leaves its children running: `close()` ends them with the workers."""
    function = parallel(**process_settings, keep_alive=True)(start_children)
    try:
        assert function(range(3), str(tmp_path), "return") == [0, 1, 2]
        pids = child_pids(tmp_path)
        assert not any(_gone(pid) for pid in pids)
    finally:
        function.close()
    assert _all_gone(pids, within=BOUND_SECONDS)


def signals_seen(x: int) -> tuple[str, str, str]:
    """SIGINT's and SIGCHLD's handlers in the worker, and SIGINT's in a new Python it starts."""
    probe = "import signal; print(signal.getsignal(signal.SIGINT))"
    child = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    return (
        str(signal.getsignal(signal.SIGINT)),
        str(signal.getsignal(signal.SIGCHLD)),
        child.stdout.strip(),
    )


def test_the_items_children_do_not_inherit_an_ignored_sigint(
    process_settings: dict[str, Any],
) -> None:
    worker_sigint, worker_sigchld, child_sigint = parallel(**{**process_settings, "workers": 1})(
        signals_seen
    )([0])[0]
    assert "default_int_handler" in worker_sigint
    assert "SIG_IGN" not in worker_sigchld
    assert "default_int_handler" in child_sigint, child_sigint


def run_a_child(x: int, bad: int) -> int:
    """Waits for a child process of its own (which an ignored SIGCHLD would break); item
    `bad` ends its worker."""
    if x == bad:
        os._exit(faults.EXIT_CODE)
    return subprocess.run(["true"]).returncode + faults.expected(x)


def test_calls_work_while_the_caller_ignores_sigchld(process_settings: dict[str, Any]) -> None:
    """With SIGCHLD ignored the system reaps the workers itself; deaths, timeouts and
    the items' own children still work, and so does the next call."""
    saved = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        function = parallel(**process_settings, errors="return")(run_a_child)
        results = function(range(6), 2)
        assert type(results[2]) is WorkerLostError
        assert [r for i, r in enumerate(results) if i != 2] == [
            faults.expected(i) for i in range(6) if i != 2
        ]
        hung = parallel(**process_settings, timeout=TIMEOUT, errors="return")(faults.fault_at)
        fault = faults.Fault(faults.RUN, faults.HANG, 1, os.getpid())
        outcome = hung(faults.make_items(4, fault), fault)
        assert type(outcome[1]) is TaskTimeoutError
        assert function(range(4), -1) == [faults.expected(i) for i in range(4)]
    finally:
        signal.signal(signal.SIGCHLD, saved)


def big_result(item: bytes) -> bytes:
    return b"r" * 300_000


def test_one_page_pipes_never_deadlock(
    process_settings: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pipes of one page (what a user over the kernel's pipe quota gets): small chunks
    queued on busy workers and large results going back must not block each other."""

    def one_page(connection: Any) -> None:
        fcntl.fcntl(connection.fileno(), fcntl.F_SETPIPE_SZ, 4096)

    if sys.platform != "linux":
        pytest.skip("pipe sizes are set only on Linux")
    monkeypatch.setattr(_process_lifecycle, "widen", one_page)
    function = parallel(**process_settings)(big_result)
    results = function([b"i" * 6000] * 200)
    assert results == [b"r" * 300_000] * 200


CALLER = textwrap.dedent(
    """
    import sys
    from parallelize import parallel
    from test_process_isolation import note_and_wait

    if __name__ == "__main__":
        directory, method = sys.argv[1], sys.argv[2]
        function = parallel(workers=3, start_method=method, keep_alive=True)(note_and_wait)
        function([-1, -2, -3], directory)  # all three started; then two of them busy
        function([1, 2], directory)
    """
)


def note_and_wait(x: int, directory: str) -> int:
    """Items >= 0 note their worker's pid and wait (for the caller to be killed)."""
    if x >= 0:
        Path(directory, f"busy-{os.getpid()}").touch()
        time.sleep(CHILD_SECONDS)
    return x


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_workers_end_when_the_caller_is_killed(
    process_settings: dict[str, Any], tmp_path: Path, how: signal.Signals
) -> None:
    """Two workers busy in an item, one idle: they, and every other process the caller
    started for them (fork server, resource tracker), end within 2 s of its death."""
    script = tmp_path / "caller.py"
    script.write_text(CALLER)
    method = process_settings["start_method"]
    caller = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path), method],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])},
    )
    try:
        deadline = time.monotonic() + BOUND_SECONDS * 3
        while len(list(tmp_path.glob("busy-*"))) < 2 and time.monotonic() < deadline:
            assert caller.poll() is None, "the caller ended by itself"
            time.sleep(0.02)
        busy = [int(path.name.split("-")[1]) for path in tmp_path.glob("busy-*")]
        descendants = [p.pid for p in psutil.Process(caller.pid).children(recursive=True)]
        assert len(busy) == 2
        assert set(busy) <= set(descendants), (busy, descendants)
        os.kill(caller.pid, how)
        caller.wait(BOUND_SECONDS)
        assert _all_gone(descendants, within=CALLER_DEATH_SECONDS), [
            pid for pid in descendants if not _gone(pid)
        ]
    finally:
        if caller.poll() is None:
            caller.kill()
            caller.wait()

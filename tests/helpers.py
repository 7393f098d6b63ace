"""Functions the tests run on workers, defined at module level so that spawn and
forkserver workers can import them by name (the tests folder is on `sys.path`).

Gates are files: a worker waits for a path to exist, and the test (or a progress
bar in the parent) creates it. Files work the same for threads, forked, spawned and
forkserver processes, where a `multiprocessing.Event` could only be inherited.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from parallelize import parallel

# How long a gated item waits before giving up: far longer than any correct test
# needs, far shorter than the per-test timeout, so a broken gate fails with a clear
# assertion (the item reports that the gate never opened) instead of a hang.
GATE_SECONDS = 20.0
POLL_SECONDS = 0.005

# Set by a test in its own process; a worker sees the value only if it was forked from it.
MARK: object = None
# Set by `remember` when a worker runs the `initializer`; read by `remembered`.
REMEMBERED: object = None


def wait_for_path(path: str | os.PathLike[str], timeout: float = GATE_SECONDS) -> bool:
    """Wait until `path` exists; False if it did not appear within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    target = Path(path)
    while not target.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True


def count_files(directory: str | os.PathLike[str], prefix: str) -> int:
    return sum(1 for path in Path(directory).iterdir() if path.name.startswith(prefix))


# -- plain item functions ---------------------------------------------------------------


def square(x: int) -> int:
    return x * x


def double(x: Any) -> Any:
    return x * 2


def add(x: int, y: int, *, scale: int = 1) -> int:
    return (x + y) * scale


def documented(x: int, factor: int = 2, *, offset: int = 0) -> int:
    """Scale one number."""
    return x * factor + offset


def must_not_run(x: object) -> object:
    raise AssertionError(f"the function ran on {x!r}, but the input was empty")


def current_pid(x: object) -> int:
    return os.getpid()


def where(x: object) -> tuple[int, int]:
    """The (process id, thread id) that ran the item."""
    return os.getpid(), threading.get_ident()


def where_after(x: object, seconds: float) -> tuple[int, int]:
    time.sleep(seconds)  # the item's work: lets other workers take the next items
    return os.getpid(), threading.get_ident()


def how_started(x: object) -> tuple[object, int]:
    """`MARK` as the worker sees it (set in the parent: only a forked copy has it), and
    the worker's parent process id."""
    return MARK, os.getppid()


def slept(x: int, seconds: float) -> int:
    time.sleep(seconds)
    return x


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def countdown(x: int, count: int) -> int:
    """Square `x`, taking longer the earlier the item: items finish out of input order."""
    time.sleep((count - x) * 0.01)
    return x * x


def record_order(x: int, log: list[int]) -> int:
    """Append `x` to `log` (only meaningful where `log` is shared: the serial backend)."""
    log.append(x)
    return x


# -- failures -----------------------------------------------------------------------------


def fail_on(x: Any, bad: Any) -> Any:
    if x == bad:
        raise ValueError(f"bad item {x!r}")
    return x


def exit_at(x: int, bad: int) -> int:
    """Item `bad` ends its worker process with exit code 3."""
    if x == bad:
        os._exit(3)
    return x


def fail_if_in(x: Any, bad: tuple[Any, ...]) -> Any:
    if x in bad:
        raise ValueError(f"bad item {x!r}")
    return x


def sleep_then_fail_on(x: int, bad: int, seconds: float) -> int:
    time.sleep(seconds)
    if x == bad:
        raise ValueError(f"bad item {x!r}")
    return x


class SlowToFreeError(ValueError):
    """An exception whose `__del__` takes a while.

    A worker frees the exception of a failed item after reporting the failure, so
    anything it sends next (such as the end of the chunk) arrives well after it.
    """

    def __del__(self) -> None:
        time.sleep(0.3)


def fail_slow_to_free(x: object) -> object:
    raise SlowToFreeError(f"bad item {x!r}")


def fail_first_attempt(x: int, directory: str, error: type[BaseException] = ValueError) -> int:
    """Raise `error` the first time an item runs, succeed on later attempts (a marker
    file remembers)."""
    marker = Path(directory, f"tried-{x}")
    if not marker.exists():
        marker.touch()
        raise error(f"first attempt at {x!r}")
    return x


# -- gates and high-water marks ---------------------------------------------------------


def gated_first(x: int, gate: str) -> tuple[int, bool]:
    """Item 0 waits for `gate` to exist; the others return at once. Returns (x, gate seen)."""
    if x == 0:
        return x, wait_for_path(gate)
    return x, True


def gated_after_first(x: int, gate: str) -> tuple[int, bool]:
    """Every item but 0 waits for `gate`. Returns (x, gate seen)."""
    if x == 0:
        return x, True
    return x, wait_for_path(gate)


def gated_all(x: int, gate: str) -> tuple[int, bool]:
    return x, wait_for_path(gate)


def gated_first_slow_rest(x: int, gate: str, seconds: float) -> tuple[int, bool]:
    """Item 0 waits for `gate`; the others take `seconds` each (too slow to batch up)."""
    if x == 0:
        return x, wait_for_path(gate)
    time.sleep(seconds)
    return x, True


def rendezvous(x: int, directory: str, parties: int) -> tuple[bool, int]:
    """Wait until `parties` items have started; report (whether they did, items running).

    The first `parties` items can only pass if that many run at once; later items pass
    at once. The count of running items is a high-water mark: it must never exceed
    the number of workers.
    """
    Path(directory, f"arrived-{x}").touch()
    deadline = time.monotonic() + GATE_SECONDS
    passed = True
    while count_files(directory, "arrived-") < parties:
        if time.monotonic() > deadline:
            passed = False
            break
        time.sleep(POLL_SECONDS)
    running = count_files(directory, "arrived-") - count_files(directory, "left-")
    time.sleep(0.02)  # the item's work: time for an over-eager backend to start more
    Path(directory, f"left-{x}").touch()
    return passed, running


# -- initializer --------------------------------------------------------------------------


def remember(value: object, directory: str) -> None:
    """An initializer: keep `value` for the items, and leave one file per worker."""
    global REMEMBERED
    REMEMBERED = value
    Path(directory, f"init-{os.getpid()}-{threading.get_ident()}").touch()


def remembered(x: object) -> tuple[object, int, int]:
    return REMEMBERED, os.getpid(), threading.get_ident()


# -- decorated at module level: the module's name is the parallel function -----------------


@parallel
def bare_square(x: int) -> int:
    return x * x


@parallel(workers=2)
def decorated_square(x: int) -> int:
    """Square one number."""
    return x * x


# -- cluster workers that fail or die -----------------------------------------------------


class ItemFailedError(LookupError):
    """An exception class of the tests' own, to check that its type survives the trip."""


def fail_with_own_type_on(x: Any, bad: Any) -> Any:
    if x == bad:
        raise ItemFailedError(f"bad item {x!r}")
    return x


def hold_first_attempt(x: int, directory: str, seconds: float) -> int:
    """Item 0, on its first attempt, writes its process id to `directory/running` and
    waits for `directory/gate` (the test kills that process meanwhile); other items,
    and item 0 run again, take `seconds`."""
    marker = Path(directory, "attempted")
    if x == 0 and not marker.exists():
        marker.touch()
        Path(directory, "running.tmp").write_text(str(os.getpid()))
        os.replace(Path(directory, "running.tmp"), Path(directory, "running"))  # whole or absent
        wait_for_path(Path(directory, "gate"))
        return x
    time.sleep(seconds)
    return x


def exit_on(x: int, bad: int, times: int, directory: str, seconds: float) -> int:
    """End the worker process (`os._exit`) on the first `times` attempts at item `bad`
    (files in `directory` count them); other items, and later attempts, take `seconds`."""
    if x == bad:
        attempt = count_files(directory, "exited-")
        if attempt < times:
            Path(directory, f"exited-{attempt}").touch()
            os._exit(1)
    time.sleep(seconds)
    return x


def scaled_in_place(array: Any, factor: float) -> Any:
    """Writes into the array it was given (it must arrive writable) and returns it."""
    array *= factor
    return array


def first_starts_at_once(directory: str) -> None:
    """Initializer: the first worker to start goes on; the others wait for a gate file."""
    try:
        os.close(os.open(os.path.join(directory, "first"), os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        wait_for_path(os.path.join(directory, "gate"))


def seen_limits(x: object) -> tuple[dict[str, str | None], list[int]]:
    """The worker's thread variables, and the thread count of each loaded pool."""
    import numpy  # noqa: F401  (loads OpenBLAS here, if the caller had not)
    from threadpoolctl import ThreadpoolController

    from parallelize.backends._thread_limits import VARIABLES

    variables = {name: os.environ.get(name) for name in VARIABLES}
    return variables, [pool["num_threads"] for pool in ThreadpoolController().info()]


def restore_sigint() -> None:
    """In the child before exec: a program started in the background may inherit
    SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextlib.contextmanager
def running(command: list[str]) -> Iterator[subprocess.Popen[str]]:
    """Start `command` in a session of its own; kill what is left of it afterwards."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    program = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
        preexec_fn=restore_sigint,
    )
    try:
        yield program
    finally:
        if program.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(program.pid, signal.SIGKILL)
        program.communicate()  # reaps it and closes its pipes, however it ended

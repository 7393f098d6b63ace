"""Tiny objects and functions that fail on purpose, for `test_faults.py`.

Each one fails in one place an item passes through on its way to a worker and back:
the function or the item being pickled in the caller or unpickled in the worker, the
item being run, its result or exception being pickled in the worker or rebuilt in
the caller. *How* it fails is one of `HOWS`. They live at module level so that spawn
and forkserver workers import them by name (the tests folder is on `sys.path`).

A fault that ends its process (`os._exit`, SIGKILL, a segfault) must never run in
the test process itself: `do` refuses to, and raises instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import faulthandler
import multiprocessing
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# What a fault does.
RAISE = "raise"  # raise FaultError
BASE_EXCEPTION = "base_exception"  # raise Abort, a BaseException but not an Exception
SYS_EXIT = "sys_exit"  # sys.exit(EXIT_CODE)
OS_EXIT = "os_exit"  # os._exit(EXIT_CODE): no cleanup, no exception
SIGKILL = "sigkill"  # the process kills itself, as the OOM killer would
SEGFAULT = "segfault"  # reads address 0 through ctypes
HANG = "hang"  # an endless loop (or a bounded sleep where a timeout cannot kill)
UNPICKLABLE = "unpicklable"  # holds a lock, which neither pickle nor cloudpickle sends
HOWS = (RAISE, BASE_EXCEPTION, SYS_EXIT, OS_EXIT, SIGKILL, SEGFAULT, HANG, UNPICKLABLE)
# The hows that end the process they run in.
DEADLY = (OS_EXIT, SIGKILL, SEGFAULT)

EXIT_CODE = 3
# How long a gated item waits for its gate before giving up: far more than a correct
# test needs, far less than the per-test timeout.
GATE_SECONDS = 20.0
POLL_SECONDS = 0.005


class FaultError(Exception):
    """What a "raise" fault raises."""


class Abort(BaseException):
    """What a "base_exception" fault raises: like `KeyboardInterrupt`, `GeneratorExit`
    or a framework's cancellation, it is not an `Exception`."""


class RefusedFaultError(AssertionError):
    """A deadly fault was about to run in the test process: a bug in the test."""


def in_worker_process() -> bool:
    """Whether this is a multiprocessing child (fork, spawn or forkserver worker)."""
    return multiprocessing.parent_process() is not None


def do(how: str, hang_seconds: float | None = None) -> None:
    """Fail as `how` says. `hang_seconds=None` hangs forever (only for a worker that a
    timeout kills); otherwise the "hang" is a sleep that long."""
    if how == RAISE:
        raise FaultError(f"fault {how!r} in process {os.getpid()}")
    if how == BASE_EXCEPTION:
        raise Abort(f"fault {how!r} in process {os.getpid()}")
    if how == SYS_EXIT:
        sys.exit(EXIT_CODE)
    if how == HANG:
        if hang_seconds is not None:
            time.sleep(hang_seconds)
            return
        if not in_worker_process():
            raise RefusedFaultError("an endless loop in the test process would hang it")
        while True:
            time.sleep(0.01)
    if how not in DEADLY:
        raise ValueError(f"unknown fault {how!r}")
    if not in_worker_process():
        raise RefusedFaultError(f"fault {how!r} would end the test process")
    if how == OS_EXIT:
        os._exit(EXIT_CODE)
    if how == SIGKILL:
        os.kill(os.getpid(), signal.SIGKILL)
        while True:  # SIGKILL is delivered at once; never return meanwhile
            time.sleep(1)
    # A segfault: keep it quiet and small (no faulthandler dump inherited from pytest,
    # no core file), then read address 0.
    faulthandler.disable()
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    ctypes.string_at(0)


# -- objects that fail while being pickled or unpickled -----------------------------------


class ReduceFault:
    """Fails (as `how`) when it is pickled: in the caller when sent as an item, in the
    worker when sent back as a result. Its `value` stands for the item's value."""

    def __init__(self, how: str, value: int) -> None:
        self.how = how
        self.value = value

    def __reduce__(self) -> tuple[Any, ...]:
        do(self.how)
        return (ReduceFault, (self.how, self.value))

    def __repr__(self) -> str:
        return f"ReduceFault({self.how!r}, {self.value!r})"


class Unpicklable:
    """Cannot be pickled by pickle or cloudpickle: it holds a lock."""

    def __init__(self, value: int) -> None:
        self.value = value
        self.lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Unpicklable({self.value!r})"


class RebuildFault:
    """Fails (as `how`) when it is unpickled, in process `only_in_pid` or, if None, in
    any process: as an item, in the worker; as a result, in the caller."""

    def __init__(self, how: str, value: int, only_in_pid: int | None = None) -> None:
        self.how = how
        self.value = value
        self.only_in_pid = only_in_pid

    def __reduce__(self) -> tuple[Any, ...]:
        return (rebuild, (self.how, self.value, self.only_in_pid))

    def __repr__(self) -> str:
        return f"RebuildFault({self.how!r}, {self.value!r})"


def rebuild(how: str, value: int, only_in_pid: int | None) -> RebuildFault:
    """The reconstructor of `RebuildFault`: the fault happens here."""
    if only_in_pid is None or only_in_pid == os.getpid():
        do(how)
    return RebuildFault(how, value, only_in_pid)


class ReduceFaultError(Exception):
    """An exception that fails (as `how`) when it is pickled to be sent back."""

    def __init__(self, how: str) -> None:
        super().__init__(how)
        self.how = how

    def __reduce__(self) -> tuple[Any, ...]:
        do(self.how)
        return (ReduceFaultError, (self.how,))


class UnpicklableError(Exception):
    """An exception that cannot be pickled: it holds a lock."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


class RebuildFaultError(Exception):
    """An exception that fails (as `how`) when rebuilt in process `only_in_pid`: it
    crosses the worker's own round-trip check and fails only in the caller."""

    def __init__(self, how: str, only_in_pid: int) -> None:
        super().__init__(how, only_in_pid)
        self.how = how
        self.only_in_pid = only_in_pid

    def __reduce__(self) -> tuple[Any, ...]:
        return (rebuild_error, (self.how, self.only_in_pid))


def rebuild_error(how: str, only_in_pid: int) -> RebuildFaultError:
    if only_in_pid == os.getpid():
        do(how)
    return RebuildFaultError(how, only_in_pid)


class TwoArgError(Exception):
    """The classic exception that cannot be rebuilt from its pickle: its `__init__`
    takes two required arguments but passes one message to `Exception`."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"error {code}: {detail}")
        self.code = code
        self.detail = detail


# -- the fault plan and the item function of the matrix -----------------------------------

# Where a fault happens.
SEND_FUNCTION = "send_function"  # pickling the function in the caller
LOAD_FUNCTION = "load_function"  # unpickling the function in the worker
SEND_ITEM = "send_item"  # pickling the item in the caller
LOAD_ITEM = "load_item"  # unpickling the item in the worker
RUN = "run"  # running the item
SEND_RESULT = "send_result"  # pickling the result in the worker
REBUILD_RESULT = "rebuild_result"  # unpickling the result in the caller
SEND_ERROR = "send_error"  # pickling the item's exception in the worker
REBUILD_ERROR = "rebuild_error"  # unpickling the item's exception in the caller


@dataclasses.dataclass(frozen=True)
class Fault:
    """Item `index` fails at `where`, as `how`; `caller_pid` is the test process."""

    where: str
    how: str
    index: int
    caller_pid: int
    hang_seconds: float | None = None


def value_of(item: Any) -> int:
    """The number an item stands for (fault objects carry it as `value`)."""
    return item if isinstance(item, int) else int(item.value)


def expected(value: int) -> int:
    """The result of `fault_at` for an item that does not fail."""
    return value * 10


def make_items(count: int, fault: Fault | None) -> list[Any]:
    """`0 .. count-1`, with the faulty item in place when the fault is in sending it."""
    items: list[Any] = list(range(count))
    if fault is not None and fault.where == SEND_ITEM:
        if fault.how == UNPICKLABLE:
            items[fault.index] = Unpicklable(fault.index)
        else:
            items[fault.index] = ReduceFault(fault.how, fault.index)
    elif fault is not None and fault.where == LOAD_ITEM:
        items[fault.index] = RebuildFault(fault.how, fault.index)
    return items


def fault_at(item: Any, fault: Fault | None, slow: tuple[int, float] | None = None) -> Any:
    """`value * 10`, except that the item `fault` names fails where and how it says.

    `slow=(index, seconds)` makes that item take `seconds`: work that a cancelled
    call must not wait for.
    """
    value = value_of(item)
    if fault is not None and value == fault.index:
        where, how = fault.where, fault.how
        if where == RUN:
            do(how, fault.hang_seconds)
        elif where == SEND_RESULT:
            return Unpicklable(value) if how == UNPICKLABLE else ReduceFault(how, value)
        elif where == REBUILD_RESULT:
            return RebuildFault(how, value, fault.caller_pid)
        elif where == SEND_ERROR:
            if how == UNPICKLABLE:
                raise UnpicklableError(f"unpicklable error on item {value}")
            raise ReduceFaultError(how)
        elif where == REBUILD_ERROR:
            if how == UNPICKLABLE:
                raise TwoArgError(value, "two required arguments")
            raise RebuildFaultError(how, fault.caller_pid)
    if slow is not None and value == slow[0]:
        time.sleep(slow[1])
    return expected(value)


def faulty_function(where: str, how: str) -> tuple[Callable[[int], int], list[Any]]:
    """A closure that fails while being sent (pickled in the caller) or loaded (in the
    worker), and the one-element list holding its trap: set it to None to disarm."""
    trap: Any
    if where == SEND_FUNCTION:
        trap = Unpicklable(0) if how == UNPICKLABLE else ReduceFault(how, 0)
    elif where == LOAD_FUNCTION:
        trap = RebuildFault(how, 0)
    else:
        raise ValueError(f"not a fault in sending the function: {where!r}")
    box = [trap]

    def times_ten(x: int) -> int:
        _ = box  # the trap travels with the function, inside its closure
        return x * 10

    return times_ten, box


def fault_on(x: int, index: int, how: str) -> int:
    """`x * 10`; item `index` fails as `how`."""
    if x == index:
        do(how)
    return expected(x)


# -- retries: faults on the first or on every attempt -------------------------------------


def attempts(directory: str | os.PathLike[str], index: int) -> int:
    return sum(1 for path in Path(directory).iterdir() if path.name.startswith(f"try-{index}-"))


def fault_on_first_attempt(
    x: int, index: int, how: str, directory: str, hang_seconds: float | None = None
) -> int:
    """Item `index` fails as `how` on its first attempt only (a marker file remembers)."""
    if x == index:
        fd, _ = tempfile.mkstemp(prefix=f"try-{index}-", dir=directory)
        os.close(fd)
        if attempts(directory, index) == 1:
            do(how, hang_seconds)
    return expected(x)


def fault_on_every_attempt(
    x: int, index: int, how: str, directory: str, hang_seconds: float | None = None
) -> int:
    """Item `index` fails as `how` on every attempt; a "raise" names the attempt."""
    if x == index:
        fd, _ = tempfile.mkstemp(prefix=f"try-{index}-", dir=directory)
        os.close(fd)
        if how == RAISE:
            raise FaultError(f"attempt {attempts(directory, index)}")
        do(how, hang_seconds)
    return expected(x)


# -- timeouts, pools and workers ----------------------------------------------------------


def sleep_then_ten(x: int, seconds: float) -> int:
    time.sleep(seconds)
    return expected(x)


def wait_for_path(path: str | os.PathLike[str], timeout: float = GATE_SECONDS) -> bool:
    deadline = time.monotonic() + timeout
    while not Path(path).exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True


def meet(x: int, directory: str, parties: int) -> int:
    """Wait until `parties` items run at once (so each runs on its own worker); return
    the pid of this worker. A party that never comes fails the item."""
    Path(directory, f"arrived-{x}").touch()
    deadline = time.monotonic() + GATE_SECONDS
    while sum(1 for p in Path(directory).iterdir() if p.name.startswith("arrived-")) < parties:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only some of {parties} items ran at once")
        time.sleep(POLL_SECONDS)
    return os.getpid()


def pid_of(x: object) -> int:
    return os.getpid()


def crash_on(x: int, index: int, how: str) -> int:
    """The pid that ran the item; item `index` fails as `how` first."""
    if x == index:
        do(how)
    return os.getpid()


def note_init(directory: str) -> None:
    """An initializer that leaves one file per run, named after the worker's pid."""
    fd, _ = tempfile.mkstemp(prefix=f"init-{os.getpid()}-", dir=directory)
    os.close(fd)


def init_pids(directory: str | os.PathLike[str]) -> list[int]:
    """The pid of each initializer run, one entry per run."""
    return sorted(
        int(path.name.split("-")[1])
        for path in Path(directory).iterdir()
        if path.name.startswith("init-")
    )


def stuck_on(x: int, index: int, directory: str) -> int:
    """The pid that ran the item; item `index` leaves its pid in a file and hangs."""
    if x == index:
        Path(directory, f"stuck-{os.getpid()}").touch()
        do(HANG)
    return os.getpid()


def stuck_pids(directory: str | os.PathLike[str]) -> list[int]:
    return [
        int(path.name.split("-")[1])
        for path in Path(directory).iterdir()
        if path.name.startswith("stuck-")
    ]


def fault_plan(x: int, plan: dict[int, str], hang_seconds: float | None = None) -> int:
    """`x * 10`, except that each item named in `plan` fails as its entry says."""
    if x in plan:
        do(plan[x], hang_seconds)
    return expected(x)


def init_fault(how: str, armed: str) -> None:
    """An initializer that fails as `how` while the file `armed` exists."""
    if Path(armed).exists():
        do(how)


def started_then_sleep(x: int, directory: str, seconds: float) -> int:
    """Leave a file saying the item started, then work for `seconds`."""
    Path(directory, f"started-{x}-{os.getpid()}").touch()
    time.sleep(seconds)
    return expected(x)


def count_started(directory: str | os.PathLike[str]) -> int:
    return sum(1 for path in Path(directory).iterdir() if path.name.startswith("started-"))


def wait_for_path_count(directory: str | os.PathLike[str], count: int) -> bool:
    """Wait until `count` items have started (left their file); False after the gate time."""
    deadline = time.monotonic() + GATE_SECONDS
    while count_started(directory) < count:
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True


async def async_fault_at(x: int, index: int, how: str) -> int:
    """`fault_at` for `async def`: item `index` fails as `how`; a "hang" awaits forever
    (a coroutine can be cancelled, so the endless loop is real here)."""
    import asyncio

    if x == index:
        if how == HANG:
            while True:
                await asyncio.sleep(0.01)
        do(how)
    await asyncio.sleep(0)
    return expected(x)

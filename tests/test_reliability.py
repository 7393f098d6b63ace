"""Reliability on every local backend (API.md section 5).

An item's own `BaseException` (`SystemExit`, an `asyncio.CancelledError` it raises)
fails that item and never hangs or ends the call; timeouts fire within 1 s of their
deadline while other items finish steadily or the input is slow; and `.iter()` over
a slow input yields each result within 0.5 s of its item finishing. On the process
backend, besides: `close()` during a call lets it complete, each call sizes its
chunks afresh, a half-written chunk (Ctrl-C mid-send) does not break the next call,
and a timeout racing a failure reports the item once. The stuck items wait on a
gate (an event, or a file for worker processes) that the test opens, never on a
fixed sleep.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faults
import psutil
import pytest

from parallelize import TaskTimeoutError, parallel
from parallelize._run import REORDER_CHUNKS_PER_WORKER
from parallelize.backends import _process_dispatch, _wire
from parallelize.backends._chunking import UNKNOWN_LENGTH_CHUNK_CAP

# Each case is a few seconds of work; anything near this is a hang.
pytestmark = pytest.mark.timeout(30)

COUNT = 6
BAD = 2  # neither first nor last, so results wait on both sides
# What an item raises, by name: none of them is an `Exception`.
ITEM_EXCEPTIONS: dict[str, type[BaseException]] = {
    "system_exit": SystemExit,
    "abort": faults.Abort,
    "keyboard_interrupt": KeyboardInterrupt,
    "cancelled": asyncio.CancelledError,
}
# Timing bounds are the contract's plus this, for a loaded 2-core machine.
SLACK_SECONDS = 0.5
TIMEOUT = 0.5
TIMEOUT_BOUND = 1.0  # a timeout fires within this of its deadline
LATENCY_BOUND = 0.5  # `.iter()` yields a result within this of its item finishing
INPUT_PERIOD = 0.005  # a slow input yields an item this often
SLOW_INPUT_ITEMS = 400
# Enough workers that filling all their room from a slow input took about a second.
MANY_WORKERS = {"thread": 100, "async": 200}
PROCESS_BACKENDS = ["process-fork", "process-spawn", "process-forkserver"]

# Where an item that never ends on its own waits; the test opens it when done.
GATE = threading.Event()
# When the stuck item began, by the clock the test reads.
STARTED: dict[str, float] = {}


def raise_on(x: int, index: int, name: str) -> int:
    """`x * 10`; item `index` raises the exception named `name`."""
    if x == index:
        raise ITEM_EXCEPTIONS[name](f"item {x} raised it")
    return faults.expected(x)


async def async_raise_on(x: int, index: int, name: str) -> int:
    """`raise_on` for `async def`."""
    await asyncio.sleep(0)
    return raise_on(x, index, name)


def stuck_on_first(x: int, seconds: float, note: str) -> float:
    """Item 0 waits on `GATE` (a timeout abandons or kills it); the others work for
    `seconds`. Item 0 notes when it started in `STARTED` and, for when it runs in a
    worker process, in the file `note`."""
    if x == 0:
        STARTED["stuck"] = time.monotonic()
        Path(note).write_text(repr(STARTED["stuck"]))
        GATE.wait(faults.GATE_SECONDS)
    else:
        time.sleep(seconds)
    return x


async def async_stuck_on_first(x: int, seconds: float, note: str) -> float:
    """`stuck_on_first` for `async def`: the timeout cancels item 0's await."""
    if x == 0:
        STARTED["stuck"] = time.monotonic()
        await asyncio.sleep(faults.GATE_SECONDS)
    else:
        await asyncio.sleep(seconds)
    return x


def finished_at(x: int) -> float:
    """When the item finished, by the system-wide monotonic clock."""
    return time.monotonic()


async def async_finished_at(x: int) -> float:
    return time.monotonic()


def slow_input(count: int, period: float) -> Iterator[int]:
    """`range(count)`, one item every `period` seconds."""
    for x in range(count):
        time.sleep(period)
        yield x


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """`GATE`, closed during the test and opened after it, so no item stays stuck."""
    GATE.clear()
    STARTED.clear()
    yield GATE
    GATE.set()


def settings_for(backend: str, **more: Any) -> dict[str, Any]:
    """`parallel()` settings for "thread", "async" (an `async def` function on threads),
    "serial" or "process-<start method>"."""
    if backend.startswith("process-"):
        return {"backend": "process", "start_method": backend.split("-", 1)[1], **more}
    return {"backend": "thread" if backend == "async" else backend, **more}


def assert_failed_item(error: BaseException, kind: type[BaseException]) -> None:
    assert type(error) is kind, f"{error!r} is not a {kind.__name__}"
    notes = getattr(error, "__notes__", [])
    assert any(f"failed on item {BAD}:" in note for note in notes), notes


def check_item_exception(function: Any, name: str) -> None:
    """Item `BAD` raising `name` fails that item only, under each `errors=`."""
    kind = ITEM_EXCEPTIONS[name]
    results = function.options(errors="return")(range(COUNT), BAD, name)
    assert_failed_item(results[BAD], kind)
    assert results[:BAD] + results[BAD + 1 :] == [
        faults.expected(i) for i in range(COUNT) if i != BAD
    ]
    with pytest.raises(kind) as caught:
        function.options(errors="raise")(range(COUNT), BAD, name)
    assert_failed_item(caught.value, kind)
    assert function(range(COUNT), -1, name) == [faults.expected(i) for i in range(COUNT)]


# -- an item's own BaseException ------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "name"),
    [
        *[("thread", name) for name in ("system_exit", "abort", "keyboard_interrupt")],
        *[("serial", name) for name in ("system_exit", "abort")],
    ],
    indirect=["settings"],
)
def test_base_exception_of_an_item_fails_that_item(settings: dict[str, Any], name: str) -> None:
    check_item_exception(parallel(**settings)(raise_on), name)


@pytest.mark.parametrize("settings", ["thread", "serial", "process-fork"], indirect=True)
@pytest.mark.parametrize("name", ["cancelled", "system_exit", "keyboard_interrupt", "abort"])
def test_base_exception_of_an_async_item_fails_that_item(
    settings: dict[str, Any], name: str
) -> None:
    """An `async def` item's own `CancelledError` used to leave the call waiting forever."""
    check_item_exception(parallel(**settings)(async_raise_on), name)


def test_keyboard_interrupt_in_a_serial_item_stops_the_call() -> None:
    """The serial backend runs items on the caller's thread, where Ctrl-C lands: it
    cannot be told from an item's own, and must stop the call."""
    work = parallel(backend="serial", errors="return")(raise_on)
    with pytest.raises(KeyboardInterrupt):
        work(range(COUNT), BAD, "keyboard_interrupt")
    assert work(range(COUNT), -1, "keyboard_interrupt") == [
        faults.expected(i) for i in range(COUNT)
    ]


# -- timeouts while the call is busy --------------------------------------------------------


def first_timeout_delay(results: Iterator[Any], note: Path) -> float:
    """Seconds from the stuck item's deadline to its `TaskTimeoutError`, consuming all."""
    delay = None
    for result in results:
        if isinstance(result, TaskTimeoutError) and delay is None:
            started = STARTED.get("stuck") or float(note.read_text())
            delay = time.monotonic() - (started + TIMEOUT)
            GATE.set()
    assert delay is not None, "no item timed out"
    return delay


def timeout_delay(backend: str, workers: int, items: Any, seconds: float, note: Path) -> float:
    """`first_timeout_delay` of a call of `stuck_on_first` over `items`."""
    function = async_stuck_on_first if backend == "async" else stuck_on_first
    work = parallel(
        **settings_for(backend, workers=workers, timeout=TIMEOUT, errors="return", ordered=False)
    )(function)
    return first_timeout_delay(work.iter(items, seconds, str(note)), note)


@pytest.mark.parametrize("backend", ["thread", "async", *PROCESS_BACKENDS])
def test_timeout_fires_while_other_items_finish(
    backend: str, gate: threading.Event, tmp_path: Path
) -> None:
    """Two workers finish an item every 10 ms for 3 s while item 0 overruns its timeout."""
    delay = timeout_delay(backend, 3, range(300), 0.02, tmp_path / "started")
    assert delay < TIMEOUT_BOUND + SLACK_SECONDS


@pytest.mark.parametrize("backend", ["thread", "async", *PROCESS_BACKENDS])
def test_timeout_fires_while_the_input_is_slow(
    backend: str, gate: threading.Event, tmp_path: Path
) -> None:
    """The input yields an item every 5 ms for 2 s while item 0 overruns its timeout."""
    slow = slow_input(SLOW_INPUT_ITEMS, INPUT_PERIOD)
    delay = timeout_delay(backend, 2, slow, 0.0, tmp_path / "started")
    assert delay < TIMEOUT_BOUND + SLACK_SECONDS


# -- .iter() over a slow input --------------------------------------------------------------


@pytest.mark.parametrize("backend", ["thread", "async", "serial", *PROCESS_BACKENDS])
@pytest.mark.parametrize("ordered", [True, False], ids=["ordered", "unordered"])
def test_iter_over_a_slow_input_yields_each_result_promptly(backend: str, ordered: bool) -> None:
    function = async_finished_at if backend == "async" else finished_at
    workers = MANY_WORKERS.get(backend, 2 if backend in PROCESS_BACKENDS else 1)
    work = parallel(**settings_for(backend, workers=workers, ordered=ordered))(function)
    worst = 0.0
    for finished in work.iter(slow_input(SLOW_INPUT_ITEMS, INPUT_PERIOD)):
        worst = max(worst, time.monotonic() - finished)
    assert worst < LATENCY_BOUND + SLACK_SECONDS / 2, f"a result waited {worst:.2f} s"


# -- the process backend's explicit worker and chunk states -----------------------------------


def wait_for_file(x: int, folder: str) -> int:
    """Note that item `x` started, then wait until the test creates `folder/go`."""
    Path(folder, f"started-{x}").touch()
    go = Path(folder, "go")
    deadline = time.monotonic() + faults.GATE_SECONDS
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(faults.POLL_SECONDS)
    return x


def wait_until_started(folder: Path) -> None:
    deadline = time.monotonic() + faults.GATE_SECONDS
    while not list(folder.glob("started-*")):
        assert time.monotonic() < deadline, "no item started"
        time.sleep(faults.POLL_SECONDS)


@pytest.mark.parametrize("backend", ["thread", *PROCESS_BACKENDS])
def test_close_from_another_thread_lets_the_running_call_complete(
    backend: str, tmp_path: Path
) -> None:
    work = parallel(**settings_for(backend, workers=2, keep_alive=True))(wait_for_file)
    results: list[Any] = []
    caller = threading.Thread(target=lambda: results.extend(work(range(6), str(tmp_path))))
    caller.start()
    try:
        wait_until_started(tmp_path)
        work.close()  # returns at once; the workers end when the call is done
    finally:
        (tmp_path / "go").touch()
        caller.join(faults.GATE_SECONDS)
    assert results == list(range(6))
    assert work(range(3), str(tmp_path)) == [0, 1, 2]  # and the function works again
    work.close()


@pytest.mark.parametrize("backend", ["thread", *PROCESS_BACKENDS])
def test_close_between_the_steps_of_a_suspended_iter(backend: str, tmp_path: Path) -> None:
    (tmp_path / "go").touch()
    work = parallel(**settings_for(backend, workers=2, keep_alive=True))(wait_for_file)
    results = work.iter(range(20), str(tmp_path))
    first = next(results)
    work.close()
    assert [first, *results] == list(range(20))


def pid_after(x: int, seconds: float) -> int:
    if seconds:
        time.sleep(seconds)
    return os.getpid()


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_each_call_sizes_its_chunks_afresh(backend: str) -> None:
    """After 200,000 fast items, four slow ones still spread over both workers, and an
    endless input is not read far ahead of its first result."""
    work = parallel(**settings_for(backend, workers=2, keep_alive=True))(pid_after)
    try:
        work(range(200_000), 0.0)
        assert len(set(work(range(4), 0.3))) == 2
        work(range(200_000), 0.0)
        drawn = itertools.count()
        results = work.iter((next(drawn) for _ in itertools.repeat(None)), 0.0)
        next(results)
        results.close()
        # At most 2 chunks a worker in flight, and in ordered `.iter()` as many again
        # waiting behind item 0 if its worker lags (a loaded machine): the documented
        # read-ahead, 8 chunks of at most 512 items; unbounded, it was 27,082.
        in_flight_and_waiting = (2 + REORDER_CHUNKS_PER_WORKER) * 2 * UNKNOWN_LENGTH_CHUNK_CAP
        assert next(drawn) < in_flight_and_waiting
    finally:
        work.close()


def byte_count(data: bytes) -> int:
    return len(data)


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_an_interrupted_send_leaves_a_kept_function_working(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while a large chunk is half written to a worker: the next call works, on
    a worker that does not read its messages as the rest of the half-written one."""
    real_send = _process_dispatch.send

    def interrupted(end: Any, envelope: bytes, buffers: Any = ()) -> None:
        if not buffers:  # not a chunk
            real_send(end, envelope, buffers)
            return
        # Everything but the buffers (the pickled items), then Ctrl-C.
        views = [memoryview(buffer).cast("B") for buffer in buffers]
        sizes = b"".join(_wire._SIZE.pack(view.nbytes) for view in views)
        rest = len(sizes) + len(envelope) + sum(view.nbytes for view in views)
        os.write(end.fileno(), _wire._HEAD.pack(rest, len(envelope), len(views)) + sizes)
        raise KeyboardInterrupt

    big = [b"x" * (1 << 20)] * 2
    work = parallel(**settings_for(backend, workers=2, keep_alive=True))(byte_count)
    try:
        assert work(big) == [1 << 20] * 2
        monkeypatch.setattr(_process_dispatch, "send", interrupted)
        with pytest.raises(KeyboardInterrupt):
            work(big)
        monkeypatch.setattr(_process_dispatch, "send", real_send)
        assert work([b"ab"] * 40) == [2] * 40
    finally:
        work.close()


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_ctrl_c_ends_the_kept_workers_too(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C during a `keep_alive` call ends every worker, the idle ones included
    ("no worker process is left behind"); the next call starts new ones."""
    real_send = _process_dispatch.send

    def interrupted(end: Any, envelope: bytes, buffers: Any = ()) -> None:
        if buffers:  # the call's first chunk: the other worker is idle, holding nothing
            raise KeyboardInterrupt
        real_send(end, envelope, buffers)

    work = parallel(**settings_for(backend, workers=2, keep_alive=True))(current_pid)
    try:
        first = set(work(range(8)))
        assert len(first) == 2
        monkeypatch.setattr(_process_dispatch, "send", interrupted)
        with pytest.raises(KeyboardInterrupt):
            work(range(8))
        monkeypatch.setattr(_process_dispatch, "send", real_send)
        assert wait_until_gone(first), "a kept worker outlived Ctrl-C"
        assert not set(work(range(8))) & first
    finally:
        work.close()


def current_pid(x: int) -> int:
    return os.getpid()


def wait_until_gone(pids: set[int], seconds: float = 2.0 + SLACK_SECONDS) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(_alive(pid) for pid in pids):
            return True
        time.sleep(0.02)
    return False


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def fail_near(x: int, seconds: float) -> int:
    """Item 0 raises after about `seconds`, racing its own timeout."""
    if x == 0:
        time.sleep(seconds)
        raise faults.FaultError(x)
    return x


@pytest.mark.parametrize("backend", ["process-fork"])
def test_a_timeout_racing_a_failure_reports_the_item_once(backend: str) -> None:
    """Whichever wins, item 0 gets one outcome: its error or its timeout, never both."""
    timeout = 0.2
    work = parallel(
        **settings_for(backend, workers=2, timeout=timeout, errors="return", chunksize=2)
    )(fail_near)
    for step in range(12):
        seconds = timeout + (step - 6) * 0.005
        results = work(range(4), seconds)
        assert len(results) == 4
        assert isinstance(results[0], (faults.FaultError, TaskTimeoutError)), results[0]
        assert results[1:] == [1, 2, 3]

"""Fault injection: API.md section 5 under every fault we can make on purpose.

The matrix crosses *where* a fault happens (pickling the function or an item in the
caller, unpickling them in the worker, running the item, pickling its result or its
exception in the worker, rebuilding them in the caller) with *what* happens (an
exception, `sys.exit`, `os._exit`, SIGKILL, a segfault, an endless loop under
`timeout`, an unpicklable object), for each backend and for ordered, unordered and
`.iter()` calls. Every case checks the error type and the failed item's index under
`errors="return"` (every other result intact) and `errors="raise"` (the note, a
prompt return), that no child process is left, and that the next call works. The
faults themselves are tiny named helpers in `faults.py`. A hang is a failure through
the per-test timeout, or, where a hang would strand a thread in pytest, through a
watchdog in a program of its own (`fault_scripts/`).

Around the matrix: faults inside chunks of several items, functions and initializers
that cannot be sent or run, `async def` items, retries, timeouts, kept-alive pools,
replaced workers, and the caller's own input failing or being interrupted. Ctrl-C
with a real SIGINT is in `test_interrupt.py`.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import faults
import psutil
import pytest
from faults import (
    BASE_EXCEPTION,
    DEADLY,
    HANG,
    LOAD_FUNCTION,
    LOAD_ITEM,
    OS_EXIT,
    RAISE,
    REBUILD_ERROR,
    REBUILD_RESULT,
    RUN,
    SEGFAULT,
    SEND_ERROR,
    SEND_FUNCTION,
    SEND_ITEM,
    SEND_RESULT,
    SIGKILL,
    SYS_EXIT,
    UNPICKLABLE,
    Fault,
)
from leftovers import live_children, wait_for_no_children

from parallelize import ParallelError, TaskTimeoutError, WorkerLostError, parallel

# A case is a few calls of a second or less; anything near this is a hang.
pytestmark = pytest.mark.timeout(30)

COUNT = 8  # items per call
BAD = 5  # the faulty item: neither first nor last, so results wait on both sides
MODES = ("ordered", "unordered", "iter")
# Timeouts: short enough to keep the suite fast, long enough that an item that only
# returns a number never overruns one on a loaded 2-core machine.
PROCESS_TIMEOUT = 0.5
LOCAL_TIMEOUT = 0.3
# Threads cannot be killed and the serial backend checks the timeout once the item
# returns: there a "hang" is a bounded sleep past the timeout, not an endless loop
# (an endless thread would outlive the test).
LOCAL_HANG_SECONDS = {"thread": 1.0, "serial": 0.5}
# Under errors="raise", the last item takes this long on the backends that can stop
# it (processes are killed, the serial backend never reaches it): the call must
# return long before.
SLOW_SECONDS = 20.0
PROMPT_SECONDS = 8.0

# Programs run in a process of their own (a hang there cannot stall pytest).
SCRIPTS = Path(__file__).parent / "fault_scripts"

PROCESS_BACKENDS = ("process-fork", "process-spawn", "process-forkserver")
LOCAL_BACKENDS = ("thread", "serial")

# What an item's failure must be, for each fault, on the process backend. Where more
# than one answer is honest (rebuilding in the caller), each is accepted; the index
# must be right in every case. A `sys.exit()` while pickling fails the pickling.
PICKLING_ERRORS = (pickle.PicklingError, TypeError)
PROCESS_EXPECTED: dict[tuple[str, str], tuple[type[BaseException], ...]] = {
    (SEND_ITEM, RAISE): PICKLING_ERRORS,
    (SEND_ITEM, SYS_EXIT): PICKLING_ERRORS,
    (SEND_ITEM, UNPICKLABLE): PICKLING_ERRORS,
    (LOAD_ITEM, RAISE): (faults.FaultError,),
    (LOAD_ITEM, SYS_EXIT): (SystemExit,),
    **{(LOAD_ITEM, how): (WorkerLostError,) for how in DEADLY},
    (RUN, RAISE): (faults.FaultError,),
    # Not an Exception, yet it fails the item like any other (API.md section 5).
    (RUN, BASE_EXCEPTION): (faults.Abort,),
    (RUN, SYS_EXIT): (SystemExit,),
    **{(RUN, how): (WorkerLostError,) for how in DEADLY},
    (RUN, HANG): (TaskTimeoutError,),
    (SEND_RESULT, RAISE): PICKLING_ERRORS,
    (SEND_RESULT, SYS_EXIT): (pickle.PicklingError,),
    **{(SEND_RESULT, how): (WorkerLostError,) for how in DEADLY},
    (SEND_RESULT, UNPICKLABLE): PICKLING_ERRORS,
    (SEND_ERROR, RAISE): (ParallelError, pickle.PicklingError),
    (SEND_ERROR, SYS_EXIT): (ParallelError,),
    **{(SEND_ERROR, how): (WorkerLostError,) for how in DEADLY},
    (SEND_ERROR, UNPICKLABLE): (ParallelError, pickle.PicklingError),
    # Rebuilding in the caller: any clear error will do, in the item's place.
    (REBUILD_RESULT, RAISE): (ParallelError, pickle.UnpicklingError, faults.FaultError),
    (REBUILD_ERROR, RAISE): (ParallelError, pickle.UnpicklingError, faults.FaultError),
    (REBUILD_ERROR, UNPICKLABLE): (ParallelError, pickle.UnpicklingError, TypeError),
}
# Words the error message must hold: what failed to cross, named for the user.
PROCESS_MESSAGES: dict[tuple[str, str], str] = {
    (SEND_ITEM, RAISE): "cannot be pickled",
    (SEND_ITEM, UNPICKLABLE): "cannot be pickled",
    (SEND_RESULT, RAISE): "cannot be pickled",
    (SEND_RESULT, UNPICKLABLE): "cannot be pickled",
    (SEND_ERROR, RAISE): "ReduceFaultError",
    (SEND_ERROR, UNPICKLABLE): "UnpicklableError",
    (REBUILD_ERROR, UNPICKLABLE): "TwoArgError",
}
# Threads and the serial backend pickle nothing: only faults of the item's own run
# apply to them, and only those that leave the test process alive.
LOCAL_EXPECTED: dict[tuple[str, str], tuple[type[BaseException], ...]] = {
    (RUN, RAISE): (faults.FaultError,),
    (RUN, SYS_EXIT): (SystemExit,),
    (RUN, HANG): (TaskTimeoutError,),
}


def matrix_cases() -> list[Any]:
    """Every fault on every mode under fork. Spawn and forkserver workers cost ~0.3 s
    each to start, so there every fault runs once, on one of the two start methods
    in turn, the modes taking turns too (ordering is the shared runner's, the same
    for every start method)."""
    cases = []
    for position, (where, how) in enumerate(PROCESS_EXPECTED):
        for mode in MODES:
            cases.append(("process-fork", where, how, mode))
        other = PROCESS_BACKENDS[1 + position % 2]
        cases.append((other, where, how, MODES[position % len(MODES)]))
    for backend in LOCAL_BACKENDS:
        for where, how in LOCAL_EXPECTED:
            for mode in MODES:
                cases.append((backend, where, how, mode))
    return [pytest.param(*case, id="-".join(case)) for case in cases]


# -- helpers ----------------------------------------------------------------------------


def backend_kind(settings: dict[str, Any]) -> str:
    return str(settings["backend"])


def call(function: Any, mode: str, items: Iterable[Any], *args: Any) -> list[Any]:
    """Run a parallel function as `mode` says; `.iter()` is consumed to a list."""
    if mode == "iter":
        return list(function.iter(items, *args))
    return list(function(items, *args))


def with_mode(settings: dict[str, Any], mode: str, **more: Any) -> dict[str, Any]:
    return {**settings, "ordered": mode != "unordered", **more}


def notes(exc: BaseException) -> list[str]:
    return list(getattr(exc, "__notes__", []))


def assert_names_item(exc: BaseException, index: int) -> None:
    assert any(f"failed on item {index}:" in note for note in notes(exc)), (
        f"no note names item {index}: {notes(exc)!r} on {exc!r}"
    )


def assert_one_failure(
    results: list[Any],
    mode: str,
    index: int,
    count: int,
    expected: tuple[type[BaseException], ...],
) -> BaseException:
    """Exactly item `index` failed, with an `expected` error; every other result is right."""
    assert len(results) == count, results
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1, f"expected one failed item, got {results!r}"
    (error,) = errors
    assert isinstance(error, expected), f"{error!r} is not one of {expected}"
    assert_names_item(error, index)
    wanted = [faults.expected(i) for i in range(count) if i != index]
    if mode == "unordered":
        assert sorted(r for r in results if r is not error) == wanted
    else:
        assert results.index(error) == index
        assert [r for r in results if r is not error] == wanted
    return error


def outcome_of(thunk: Callable[[], list[Any]]) -> list[Any] | BaseException:
    """What `thunk()` returned, or the exception it raised (a call that may fail either way)."""
    try:
        return thunk()
    except (Exception, SystemExit) as exc:  # a worker's sys.exit may come back as itself
        return exc


def assert_no_children_left() -> None:
    left = wait_for_no_children()
    assert not left, f"processes left after the call returned: {left}"


def is_gone(pid: int) -> bool:
    """Whether process `pid` has ended (a zombie waiting to be reaped counts as ended)."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def wait_until_gone(pids: Iterable[int], timeout: float = 2.0) -> list[int]:
    """Poll until every pid has ended; return those still running after `timeout`."""
    deadline = time.monotonic() + timeout
    while (alive := [pid for pid in pids if not is_gone(pid)]) and time.monotonic() < deadline:
        time.sleep(0.02)
    return alive


def running_children() -> set[int]:
    """The pids of this process's descendants still running (multiprocessing's
    helpers and zombies aside): the workers of a kept pool."""
    return {child.pid for child in live_children() if not is_gone(child.pid)}


def hang_settings(settings: dict[str, Any], how: str) -> tuple[dict[str, Any], float | None]:
    """The `timeout` setting a "hang" needs, and how long a bounded hang sleeps."""
    if how != HANG:
        return {}, None
    kind = backend_kind(settings)
    if kind == "process":
        return {"timeout": PROCESS_TIMEOUT}, None
    return {"timeout": LOCAL_TIMEOUT}, LOCAL_HANG_SECONDS[kind]


# -- the matrix --------------------------------------------------------------------------


def two_arg_error_round_trips() -> bool:
    """Whether `TwoArgError` pickles both ways here: once Ray has been initialised in
    the test process it patches exception pickling, and fork children inherit that."""
    try:
        pickle.loads(pickle.dumps(faults.TwoArgError(1, "probe")))
    except TypeError:
        return False
    return True


@pytest.mark.parametrize(
    ("settings", "where", "how", "mode"), matrix_cases(), indirect=["settings"]
)
def test_fault_fails_only_its_item(
    settings: dict[str, Any], where: str, how: str, mode: str
) -> None:
    kind = backend_kind(settings)
    expected = (PROCESS_EXPECTED if kind == "process" else LOCAL_EXPECTED)[where, how]
    if (where, how) == (REBUILD_ERROR, UNPICKLABLE) and two_arg_error_round_trips():
        pytest.skip("an earlier test patched exception pickling in this process (ray.init)")
    extra, hang_seconds = hang_settings(settings, how)
    fault = Fault(where, how, BAD, os.getpid(), hang_seconds)
    items = faults.make_items(COUNT, fault)

    # errors="return": the failure takes the item's place; every other result is there.
    returning = parallel(**with_mode(settings, mode, errors="return", **extra))(faults.fault_at)
    error = assert_one_failure(call(returning, mode, items, fault), mode, BAD, COUNT, expected)
    if kind == "process" and (where, how) in PROCESS_MESSAGES:
        assert PROCESS_MESSAGES[where, how] in str(error)
    assert_no_children_left()

    # errors="raise": the same failure is raised, promptly, without waiting for a slow
    # last item (a "hang" has no slow item: the timeout would fail it too).
    raising = returning.options(errors="raise")
    slow = (COUNT - 1, SLOW_SECONDS) if kind != "thread" and how != HANG else None
    began = time.monotonic()
    with pytest.raises(expected) as caught:
        call(raising, mode, items, fault, slow)
    assert time.monotonic() - began < PROMPT_SECONDS
    assert_names_item(caught.value, BAD)
    assert_no_children_left()

    # The same function works on its next call.
    results = call(raising, mode, range(COUNT), None)
    wanted = [faults.expected(i) for i in range(COUNT)]
    assert (sorted(results) if mode == "unordered" else results) == wanted


# Where a fault in a chunk of several items must blame only the item that was running.
CHUNK_FAULTS = [
    *[(RUN, how) for how in (RAISE, SYS_EXIT, OS_EXIT, SIGKILL, SEGFAULT, HANG)],
    *[(LOAD_ITEM, how) for how in (RAISE, SYS_EXIT, OS_EXIT, SIGKILL, SEGFAULT)],
    *[(SEND_RESULT, how) for how in (RAISE, SYS_EXIT, SIGKILL, UNPICKLABLE)],
    *[(SEND_ERROR, how) for how in (RAISE, SYS_EXIT, SEGFAULT)],
]


def chunk_cases() -> list[Any]:
    cases = [
        pytest.param("process-fork", where, how, id=f"process-fork-{where}-{how}")
        for where, how in CHUNK_FAULTS
    ]
    for backend, how in (("process-spawn", OS_EXIT), ("process-forkserver", HANG)):
        cases.append(pytest.param(backend, RUN, how, id=f"{backend}-run-{how}"))
    for backend in LOCAL_BACKENDS:
        for how in (RAISE, SYS_EXIT, HANG):
            cases.append(pytest.param(backend, RUN, how, id=f"{backend}-run-{how}"))
    return cases


@pytest.mark.parametrize(("settings", "where", "how"), chunk_cases(), indirect=["settings"])
def test_fault_in_a_chunk_reruns_the_others(settings: dict[str, Any], where: str, how: str) -> None:
    """chunksize=4 over 12 items, item 5 faulty: items 4, 6 and 7 came in its chunk; they
    run again (no result lost) and are never blamed."""
    count, bad = 12, 5
    extra, hang_seconds = hang_settings(settings, how)
    kind = backend_kind(settings)
    expected = (PROCESS_EXPECTED if kind == "process" else LOCAL_EXPECTED)[where, how]
    fault = Fault(where, how, bad, os.getpid(), hang_seconds)
    work = parallel(chunksize=4, errors="return", **settings, **extra)(faults.fault_at)
    results = work(faults.make_items(count, fault), fault)
    assert_one_failure(results, "ordered", bad, count, expected)
    assert_no_children_left()
    assert work(range(count), None) == [faults.expected(i) for i in range(count)]


@pytest.mark.parametrize(
    ("settings", "where", "how"),
    [
        *[("process-fork", RUN, how) for how in (SYS_EXIT, OS_EXIT, SIGKILL, SEGFAULT)],
        *[("process-fork", SEND_RESULT, how) for how in (SYS_EXIT, OS_EXIT)],
        ("process-fork", LOAD_ITEM, SIGKILL),
        ("process-spawn", RUN, OS_EXIT),
        ("process-forkserver", RUN, SIGKILL),
    ],
    indirect=["settings"],
)
def test_fault_in_an_untracked_chunk(settings: dict[str, Any], where: str, how: str) -> None:
    """Chunks of items measured fast run without naming the running item; when their
    worker dies, the unanswered items run again one by one, and only the one that
    kills its worker again is blamed."""
    count, bad = 64, 53
    fault = Fault(where, how, bad, os.getpid())
    work = parallel(chunksize=4, errors="return", **settings)(faults.fault_at)
    results = work(faults.make_items(count, fault), fault)
    assert_one_failure(results, "ordered", bad, count, PROCESS_EXPECTED[where, how])
    assert work(range(count), None) == [faults.expected(i) for i in range(count)]


# -- the function cannot be sent or loaded -------------------------------------------------

FUNCTION_FAULTS: dict[tuple[str, str], tuple[type[BaseException], ...]] = {
    (SEND_FUNCTION, RAISE): PICKLING_ERRORS,
    (SEND_FUNCTION, UNPICKLABLE): PICKLING_ERRORS,
    (LOAD_FUNCTION, RAISE): (faults.FaultError, ParallelError),
    (LOAD_FUNCTION, SYS_EXIT): (SystemExit, ParallelError, WorkerLostError),
    **{(LOAD_FUNCTION, how): (WorkerLostError,) for how in DEADLY},
}


def function_cases() -> list[Any]:
    """Every fault on every mode under fork; under spawn and forkserver, the faults
    that do not end workers (a deadly one makes each new worker die until the pool
    gives up: seven worker starts per call, cheap only under fork)."""
    cases = []
    for where, how in FUNCTION_FAULTS:
        for mode in MODES:
            cases.append(("process-fork", where, how, mode))
        if how not in DEADLY:
            cases += [(backend, where, how, "ordered") for backend in PROCESS_BACKENDS[1:]]
    return [pytest.param(*case, id="-".join(case)) for case in cases]


@pytest.mark.parametrize(
    ("settings", "where", "how", "mode"), function_cases(), indirect=["settings"]
)
def test_function_fault(settings: dict[str, Any], where: str, how: str, mode: str) -> None:
    """A function that cannot be sent, or that kills the worker loading it, fails the
    call (no item can run) under either `errors`; disarmed, it works again."""
    expected = FUNCTION_FAULTS[where, how]
    function, trap = faults.faulty_function(where, how)
    returning = parallel(**with_mode(settings, mode, errors="return"))(function)
    outcome = outcome_of(lambda: call(returning, mode, range(COUNT)))
    if isinstance(outcome, BaseException):  # the call failed as a whole
        assert isinstance(outcome, expected), repr(outcome)
        if where == SEND_FUNCTION:
            assert "times_ten()" in str(outcome)  # names what could not be sent
    else:  # or every item failed on its own, and none ran
        assert len(outcome) == COUNT
        assert all(isinstance(result, expected) for result in outcome), outcome
    assert_no_children_left()

    raising = returning.options(errors="raise")
    with pytest.raises(expected):
        call(raising, mode, range(COUNT))
    assert_no_children_left()

    trap[0] = None
    results = call(raising, mode, range(COUNT))
    assert sorted(results) == [faults.expected(i) for i in range(COUNT)]


@pytest.mark.parametrize("settings", list(LOCAL_BACKENDS), indirect=True)
def test_local_backends_send_nothing(settings: dict[str, Any]) -> None:
    """Threads and the serial backend pickle nothing: what cannot cross a process
    boundary (unpicklable items, results, exceptions, functions) just works."""
    caller = os.getpid()
    items = [
        faults.Unpicklable(0),
        faults.ReduceFault(RAISE, 1),
        faults.RebuildFault(RAISE, 2, caller),
        3,
    ]
    fault = Fault(SEND_RESULT, UNPICKLABLE, 3, caller)
    work = parallel(errors="return", **settings)(faults.fault_at)
    results = work(items, fault)
    assert results[:3] == [0, 10, 20]
    assert isinstance(results[3], faults.Unpicklable)
    fault = Fault(REBUILD_ERROR, UNPICKLABLE, 1, caller)
    results = work(range(3), fault)
    assert isinstance(results[1], faults.TwoArgError)
    assert results[1].code == 1
    function, _ = faults.faulty_function(SEND_FUNCTION, UNPICKLABLE)
    assert parallel(**settings)(function)(range(3)) == [0, 10, 20]


# An `async def` function runs on an event loop (on a thread, or on the caller's thread
# under the serial backend): exceptions, `sys.exit` and a truly endless await.
ASYNC_FAULTS: dict[str, type[BaseException]] = {
    RAISE: faults.FaultError,
    SYS_EXIT: SystemExit,
    HANG: TaskTimeoutError,
}


def async_cases() -> list[Any]:
    cases = [("process-fork", how, mode) for how in (RAISE, HANG) for mode in MODES]
    cases += [("serial", how, "ordered") for how in (RAISE, HANG)]
    return [pytest.param(*case, id="-".join(case)) for case in cases]


@pytest.mark.parametrize(("settings", "how", "mode"), async_cases(), indirect=["settings"])
def test_async_item_fault(settings: dict[str, Any], how: str, mode: str) -> None:
    expected = (ASYNC_FAULTS[how],)
    returning = parallel(**with_mode(settings, mode, errors="return", timeout=LOCAL_TIMEOUT))(
        faults.async_fault_at
    )
    results = call(returning, mode, range(COUNT), BAD, how)
    assert_one_failure(results, mode, BAD, COUNT, expected)
    raising = returning.options(errors="raise")
    with pytest.raises(expected) as caught:
        call(raising, mode, range(COUNT), BAD, how)
    assert_names_item(caught.value, BAD)
    results = call(raising, mode, range(COUNT), -1, how)
    wanted = [faults.expected(i) for i in range(COUNT)]
    assert (sorted(results) if mode == "unordered" else results) == wanted


# Faults that may make a call hang on threads or an event loop: run in a program of
# their own (`fault_scripts/contained_call.py`), which reports a hung call and ends,
# so a hang fails the case without stalling pytest. `sys.exit` in an item fails that
# item; a BaseException that is not an Exception (an `Abort`, as `KeyboardInterrupt`
# or a framework's cancellation) may fail the item or be raised by the call, but
# never hang it.
CONTAINED_CASES = [
    ("process", "ordered", "async", SYS_EXIT, ("SystemExit",)),
    ("serial", "unordered", "async", SYS_EXIT, ("SystemExit",)),
    ("process", "iter", "async", BASE_EXCEPTION, ("Abort",)),
    ("thread", "ordered", "sync", BASE_EXCEPTION, ("Abort", "WorkerLostError")),
    ("serial", "ordered", "sync", BASE_EXCEPTION, ("Abort",)),
]


@pytest.mark.parametrize(
    ("backend", "mode", "kind", "how", "expected"),
    [pytest.param(*case, id="-".join(case[:4])) for case in CONTAINED_CASES],
)
def test_fault_that_may_hang_a_thread(
    backend: str, mode: str, kind: str, how: str, expected: tuple[str, ...]
) -> None:
    try:
        done = subprocess.run(
            [sys.executable, str(SCRIPTS / "contained_call.py"), backend, mode, kind, how],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            check=False,
        )
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"the program hung; it had reported: {expired.stdout!r}")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    hung = [call for call, outcome in report.items() if outcome == "hung"]
    assert not hung, f"the {hung[0]!r} call hung; before it: {report}"

    returned = report["return"]
    if isinstance(returned, dict):  # raised by the call as a whole, even under "return"
        assert how == BASE_EXCEPTION, returned
        assert returned["raised"]["type"] in expected, returned
    else:
        failed = [r for r in returned if isinstance(r, dict)]
        assert [r["type"] for r in failed] in [[name] for name in expected], returned
        assert any(f"failed on item {BAD}:" in note for note in failed[0]["notes"]), failed
        others = [r for r in returned if not isinstance(r, dict)]
        assert sorted(others) == [faults.expected(i) for i in range(COUNT) if i != BAD]
    assert report["raise"]["raised"]["type"] in expected, report["raise"]
    assert sorted(report["next"]) == [faults.expected(i) for i in range(COUNT)]


# -- retries --------------------------------------------------------------------------------

# Every fault under fork; under spawn and forkserver, one that ends the worker and one
# that times out (counting attempts is the shared runner's, the same everywhere).
RETRY_HOWS = {
    "process-fork": (RAISE, SYS_EXIT, OS_EXIT, SIGKILL, SEGFAULT, HANG),
    "process-spawn": (OS_EXIT, HANG),
    "process-forkserver": (SIGKILL, HANG),
    **{name: (RAISE, SYS_EXIT, HANG) for name in LOCAL_BACKENDS},
}
FINAL_FAILURE: dict[str, type[BaseException]] = {
    RAISE: faults.FaultError,
    SYS_EXIT: SystemExit,
    OS_EXIT: WorkerLostError,
    SIGKILL: WorkerLostError,
    SEGFAULT: WorkerLostError,
    HANG: TaskTimeoutError,
}


def retry_on_for(how: str) -> dict[str, Any]:
    """`SystemExit` is not an `Exception`: only `retry_on=BaseException` retries it."""
    return {"retry_on": BaseException} if how == SYS_EXIT else {}


@pytest.mark.parametrize(
    ("settings", "how"),
    [(name, how) for name, hows in RETRY_HOWS.items() for how in hows],
    indirect=["settings"],
)
def test_retry_recovers_from_a_first_attempt_fault(
    settings: dict[str, Any], how: str, tmp_path: Path
) -> None:
    extra, hang_seconds = hang_settings(settings, how)
    extra.update(retry_on_for(how))
    work = parallel(retries=1, **settings, **extra)(faults.fault_on_first_attempt)
    results = work(range(6), 2, how, str(tmp_path), hang_seconds)
    assert results == [faults.expected(i) for i in range(6)]
    assert faults.attempts(tmp_path, 2) == 2
    assert_no_children_left()


@pytest.mark.parametrize(
    ("settings", "how"),
    [
        *[("process-fork", how) for how in (RAISE, SYS_EXIT, OS_EXIT, SIGKILL, SEGFAULT, HANG)],
        ("process-spawn", OS_EXIT),
        ("process-forkserver", HANG),
        *[(name, how) for name in LOCAL_BACKENDS for how in (RAISE, HANG)],
    ],
    indirect=["settings"],
)
def test_retries_report_the_final_failure(
    settings: dict[str, Any], how: str, tmp_path: Path
) -> None:
    """A fault on every attempt: retries=2 runs the item 3 times, reports the last failure."""
    extra, hang_seconds = hang_settings(settings, how)
    extra.update(retry_on_for(how))
    work = parallel(retries=2, errors="return", **settings, **extra)(faults.fault_on_every_attempt)
    directory = tmp_path / "return"
    directory.mkdir()
    results = work(range(6), 2, how, str(directory), hang_seconds)
    error = assert_one_failure(results, "ordered", 2, 6, (FINAL_FAILURE[how],))
    assert faults.attempts(directory, 2) == 3
    if how == RAISE:
        assert str(error) == "attempt 3"

    if how not in (RAISE, OS_EXIT):
        return  # errors="raise" reports the same; checked for two faults, to save time
    directory = tmp_path / "raise"
    directory.mkdir()
    with pytest.raises(FINAL_FAILURE[how]) as caught:
        work.options(errors="raise")(range(6), 2, how, str(directory), hang_seconds)
    assert_names_item(caught.value, 2)
    assert faults.attempts(directory, 2) == 3
    if how == RAISE:
        assert str(caught.value) == "attempt 3"
    assert_no_children_left()


def test_retries_count_attempts_in_a_chunk(
    process_settings: dict[str, Any], tmp_path: Path
) -> None:
    """An item that kills its worker in a chunk of 4 runs exactly 1 + retries times:
    the items sent with it run again but never count against it."""
    work = parallel(chunksize=4, retries=1, errors="return", **process_settings)(
        faults.fault_on_every_attempt
    )
    results = work(range(12), 5, OS_EXIT, str(tmp_path))
    assert_one_failure(results, "ordered", 5, 12, (WorkerLostError,))
    assert faults.attempts(tmp_path, 5) == 2


# -- timeouts ------------------------------------------------------------------------------


@pytest.mark.parametrize("chunksize", [1, 3])
def test_timeout_measures_the_run_not_the_queue(settings: dict[str, Any], chunksize: int) -> None:
    """One worker, three items of 0.3 s, timeout 0.5 s: the last waits 0.6 s in the queue
    (or in its chunk) and must still succeed."""
    work = parallel(**{**settings, "workers": 1}, timeout=0.5, chunksize=chunksize)(
        faults.sleep_then_ten
    )
    assert work(range(3), 0.3) == [0, 10, 20]


def test_timeout_ends_and_replaces_the_stuck_worker(
    process_settings: dict[str, Any], tmp_path: Path
) -> None:
    """The worker running the stuck item is ended and replaced; the other items finish."""
    work = parallel(timeout=PROCESS_TIMEOUT, errors="return", keep_alive=True, **process_settings)(
        faults.stuck_on
    )
    try:
        results = work(range(6), 3, str(tmp_path))
        assert isinstance(results[3], TaskTimeoutError)
        assert_names_item(results[3], 3)
        assert all(isinstance(pid, int) for i, pid in enumerate(results) if i != 3), results
        (stuck,) = faults.stuck_pids(tmp_path)
        assert is_gone(stuck)
        pool = running_children()
        assert len(pool) == 2, "the kept pool was not brought back to 2 workers"
        assert set(work(range(4), -1, str(tmp_path))) <= pool
    finally:
        work.close()


# -- kept-alive pools, replaced workers, initializer ----------------------------------------


def pool_pids(work: Any, directory: Path, workers: int = 2) -> set[int]:
    """The pids of all `workers` workers: `workers` items that wait for one another."""
    directory.mkdir()
    pids = set(work(range(workers), str(directory), workers))
    assert len(pids) == workers
    return pids


def test_keep_alive_keeps_workers_until_close(
    process_settings: dict[str, Any], tmp_path: Path
) -> None:
    work = parallel(keep_alive=True, **process_settings)(faults.meet)
    try:
        first = pool_pids(work, tmp_path / "first")
        assert not any(map(is_gone, first))  # still running between calls
        second = pool_pids(work, tmp_path / "second")
        assert second == first
    finally:
        work.close()
    assert not wait_until_gone(first), "close() left workers running"


def test_keep_alive_replaces_a_worker_killed_between_calls(
    process_settings: dict[str, Any], tmp_path: Path
) -> None:
    """A kept worker SIGKILLed while idle is replaced on the next call; the initializer
    runs once in each worker, the new one included."""
    inits = tmp_path / "inits"
    inits.mkdir()
    work = parallel(
        keep_alive=True, initializer=faults.note_init, initargs=(str(inits),), **process_settings
    )(faults.meet)
    try:
        first = pool_pids(work, tmp_path / "first")
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        assert not wait_until_gone([victim])
        second = pool_pids(work, tmp_path / "second")
        assert victim not in second
        assert first - {victim} <= second
        assert faults.init_pids(inits) == sorted(first | second)  # once per worker
    finally:
        work.close()
    assert not wait_until_gone(first | second)


@pytest.mark.parametrize(
    ("settings", "how"),
    [
        *[("process-fork", how) for how in (OS_EXIT, SIGKILL, HANG)],
        ("process-spawn", SIGKILL),
        ("process-forkserver", HANG),
    ],
    indirect=["settings"],
)
def test_keep_alive_pool_works_after_a_crash_mid_call(settings: dict[str, Any], how: str) -> None:
    """A kept pool that lost a worker mid-call is whole again for the next call."""
    work = parallel(keep_alive=True, errors="return", timeout=PROCESS_TIMEOUT, **settings)(
        faults.crash_on
    )
    try:
        results = work(range(6), 2, how)
        assert isinstance(results[2], FINAL_FAILURE[how])
        assert all(isinstance(pid, int) for i, pid in enumerate(results) if i != 2)
        again = set(work(range(6), -1, RAISE))
        assert again <= running_children()
        assert len(running_children()) == 2
        raising = work.options(errors="raise")  # a second kept pool
        try:
            with pytest.raises(FINAL_FAILURE[how]):
                raising(range(6), 4, how)
            assert len(raising(range(4), -1, RAISE)) == 4
        finally:
            raising.close()
    finally:
        work.close()


def test_initializer_runs_once_per_worker_after_crashes(
    process_settings: dict[str, Any], tmp_path: Path
) -> None:
    work = parallel(
        errors="return", initializer=faults.note_init, initargs=(str(tmp_path),), **process_settings
    )(faults.crash_on)
    results = work(range(8), 1, OS_EXIT)
    assert isinstance(results[1], WorkerLostError)
    ran = {pid for i, pid in enumerate(results) if i != 1}
    runs = faults.init_pids(tmp_path)
    assert len(runs) == len(set(runs)), "the initializer ran twice in one worker"
    assert ran <= set(runs), "a worker ran items without its initializer"


def test_max_tasks_per_worker_replaces_workers(
    process_settings: dict[str, Any], tmp_path: Path
) -> None:
    work = parallel(
        max_tasks_per_worker=2,
        initializer=faults.note_init,
        initargs=(str(tmp_path),),
        **process_settings,
    )(faults.pid_of)
    pids = work(range(8))
    per_worker = collections.Counter(pids)
    assert max(per_worker.values()) <= 2, per_worker
    assert len(per_worker) >= 4
    runs = faults.init_pids(tmp_path)
    assert len(runs) == len(set(runs))
    assert set(per_worker) <= set(runs)
    assert_no_children_left()


@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
def test_keep_alive_workers_end_at_interpreter_exit(start_method: str, tmp_path: Path) -> None:
    """A program that never calls `close()` leaves no worker behind when it exits."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "keep_alive_exit.py"), start_method, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=20,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    pids = [int(word) for word in done.stdout.split()]
    assert len(pids) == 2, done.stdout
    assert not wait_until_gone(pids), "kept workers outlived the program"


# -- several faults at once, the initializer, the caller's own input ------------------------


@pytest.mark.parametrize("settings", [*PROCESS_BACKENDS, *LOCAL_BACKENDS], indirect=True)
def test_several_faults_in_one_call(settings: dict[str, Any]) -> None:
    """Six different faults in chunks of 3 over 12 items: each failed item gets its own
    error, every other item its result."""
    kind = backend_kind(settings)
    if kind == "process":
        plan = {2: OS_EXIT, 4: HANG, 5: RAISE, 7: SIGKILL, 9: SYS_EXIT, 11: SEGFAULT}
    else:
        plan = {2: RAISE, 5: HANG, 9: SYS_EXIT}
    extra, hang_seconds = hang_settings(settings, HANG)
    work = parallel(chunksize=3, errors="return", **settings, **extra)(faults.fault_plan)
    results = work(range(12), plan, hang_seconds)
    for index, result in enumerate(results):
        if index in plan:
            assert isinstance(result, FINAL_FAILURE[plan[index]]), (index, result)
            assert_names_item(result, index)
        else:
            assert result == faults.expected(index)
    assert_no_children_left()
    assert work(range(12), {}) == [faults.expected(i) for i in range(12)]


INIT_FAULTS = [
    *[("process-fork", how) for how in (RAISE, SYS_EXIT, OS_EXIT, SIGKILL, SEGFAULT)],
    # A deadly initializer makes workers die over and over until the pool gives up:
    # slow with spawned workers, so only under fork.
    ("process-spawn", SYS_EXIT),
    ("process-forkserver", RAISE),
    *[(name, how) for name in LOCAL_BACKENDS for how in (RAISE, SYS_EXIT)],
]


@pytest.mark.parametrize(("settings", "how"), INIT_FAULTS, indirect=["settings"])
def test_initializer_fault(settings: dict[str, Any], how: str, tmp_path: Path) -> None:
    """An initializer that fails means no item can run: the call fails (or every item
    does), promptly, under either `errors`; disarmed, the same function works."""
    expected = (FINAL_FAILURE[how], ParallelError)
    armed = tmp_path / "armed"
    armed.touch()
    work = parallel(
        errors="return", initializer=faults.init_fault, initargs=(how, str(armed)), **settings
    )(faults.fault_at)
    outcome = outcome_of(lambda: work(range(COUNT), None))
    if isinstance(outcome, BaseException):
        assert isinstance(outcome, expected), repr(outcome)
    else:
        assert all(isinstance(result, expected) for result in outcome), outcome
    assert_no_children_left()
    with pytest.raises(expected):
        work.options(errors="raise")(range(COUNT), None)
    assert_no_children_left()
    armed.unlink()
    assert work(range(COUNT), None) == [faults.expected(i) for i in range(COUNT)]


class InputError(Exception):
    """Raised by the caller's own input iterator."""


def failing_input(count: int) -> Iterator[int]:
    yield from range(count)
    raise InputError(f"the input broke after {count} items")


def mode_cases() -> list[Any]:
    """Every backend in ordered mode; the other modes where they cost little."""
    cases = [(name, "ordered") for name in (*PROCESS_BACKENDS, *LOCAL_BACKENDS)]
    cases += [(name, mode) for name in ("process-fork", "thread") for mode in MODES[1:]]
    return [pytest.param(*case, id="-".join(case)) for case in cases]


@pytest.mark.parametrize(("settings", "mode"), mode_cases(), indirect=["settings"])
def test_input_that_raises_stops_the_call(settings: dict[str, Any], mode: str) -> None:
    """The caller's own iterator raising is the caller's error: it propagates as is,
    even under errors="return", and the work stops."""
    work = parallel(**with_mode(settings, mode, errors="return"))(faults.fault_at)
    with pytest.raises(InputError):
        call(work, mode, failing_input(5), None)
    assert_no_children_left()
    assert sorted(call(work, mode, range(5), None)) == [faults.expected(i) for i in range(5)]


# How long each item works in `test_caller_interrupted`: processes are killed, threads
# are abandoned after a short grace, the serial backend runs items one at a time.
INTERRUPTED_ITEM_SECONDS = {"process": 30.0, "thread": 1.0, "serial": 0.0}


def interrupting_input(directory: Path, parties: int, raised: list[float]) -> Iterator[int]:
    """Yields items until `parties` of them run at once, then "Ctrl-C": raises
    KeyboardInterrupt where the caller's thread is (drawing the next item), and notes
    when in `raised`."""
    for x in itertools.count():
        if x > 0 and not faults.wait_for_path_count(directory, min(x, parties)):
            raise AssertionError("the items never started")
        if x == parties:
            raised.append(time.monotonic())
            raise KeyboardInterrupt
        yield x


@pytest.mark.parametrize(("settings", "mode"), mode_cases(), indirect=["settings"])
def test_caller_interrupted(settings: dict[str, Any], mode: str, tmp_path: Path) -> None:
    """KeyboardInterrupt in the caller while items run: it propagates, every worker
    ends at once, and the next call works. (A real SIGINT: `test_interrupt.py`.)"""
    kind = backend_kind(settings)
    parties = 1 if kind == "serial" else 2
    seconds = INTERRUPTED_ITEM_SECONDS[kind]
    work = parallel(**with_mode(settings, mode))(faults.started_then_sleep)
    raised: list[float] = []
    with pytest.raises(KeyboardInterrupt):
        call(work, mode, interrupting_input(tmp_path, parties, raised), str(tmp_path), seconds)
    assert time.monotonic() - raised[0] < 2.0  # threads: their items end within it
    assert not running_children(), "workers still running when the call returned"
    assert_no_children_left()
    assert sorted(call(work, mode, range(3), str(tmp_path), 0.0)) == [0, 10, 20]

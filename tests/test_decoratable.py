"""API.md section 3: what can be decorated, under every start method of the process backend.

A matrix: callable kind x start method x call mode, each compared with the answer of a
plain loop; the autouse `no_leftovers` fixture fails any case that leaves a process or
thread behind. Then the fast path (importable functions never go through cloudpickle),
real scripts and notebook-like `__main__` modules run in subprocesses, nested parallel
calls, and `async def` functions.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import pickle
import subprocess
import sys
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import decoratable
import pytest
from bars import RecordingBar
from decoratable import Flight, Scaler, SubScaler

import parallelize
from parallelize import TaskTimeoutError, parallel
from parallelize._decorator import is_parallel_function
from parallelize._sending import dumps, loads

START_METHODS = ["fork", "spawn", "forkserver"]
MODES = ["ordered", "unordered", "iter"]
ITEMS = [1, 2, 3, 4]

TESTS_DIR = Path(__file__).resolve().parent
SCRIPTS_DIR = TESTS_DIR / "scripts"
PACKAGE_ROOT = Path(parallelize.__file__).resolve().parent.parent
# A script that hangs fails its tests after this long instead of reaching the test timeout.
SCRIPT_SECONDS = 50

# A call: the parallel callable as the user reaches it, and the arguments it is called with.
Call = tuple[Any, tuple[Any, ...]]


def call_in_mode(target: Any, args: tuple[Any, ...], mode: str, **settings: Any) -> list[Any]:
    """Call `target(*args)` with `settings`: as a list in input or completion order, or
    through `.iter()`. `target` may be a bound method: `.options` keeps the binding."""
    function = target.options(ordered=mode != "unordered", **settings)
    if mode == "iter":
        return list(function.iter(*args))
    results: list[Any] = function(*args)
    return results


def assert_same_results(results: list[Any], expected: list[Any], mode: str) -> None:
    if mode == "unordered":
        assert sorted(results) == sorted(expected)
    else:
        assert results == expected


# -- the matrix: kind x start method x mode -----------------------------------------------

# kind -> (a factory of the call, the answer of a plain loop over ITEMS)
KINDS: dict[str, tuple[Callable[[], Call], list[Any]]] = {
    "module-function": (lambda: (decoratable.square, (ITEMS,)), [x * x for x in ITEMS]),
    "bare-decorated-module-function": (
        lambda: (decoratable.bare_cube, (ITEMS,)),
        [x**3 for x in ITEMS],
    ),
    "method-through-instance": (lambda: (Scaler(3).scale, (ITEMS,)), [3 * x for x in ITEMS]),
    "method-through-class": (lambda: (Scaler.scale, (Scaler(3), ITEMS)), [3 * x for x in ITEMS]),
    "classmethod-through-class": (
        lambda: (Scaler.tagged, (ITEMS,)),
        [("Scaler", x) for x in ITEMS],
    ),
    "classmethod-through-instance": (
        lambda: (Scaler(3).tagged, (ITEMS,)),
        [("Scaler", x) for x in ITEMS],
    ),
    "classmethod-through-subclass": (
        lambda: (SubScaler.tagged, (ITEMS,)),
        [("SubScaler", x) for x in ITEMS],
    ),
    "staticmethod-through-class": (lambda: (Scaler.negate, (ITEMS,)), [-x for x in ITEMS]),
    "staticmethod-through-instance": (lambda: (Scaler(3).negate, (ITEMS,)), [-x for x in ITEMS]),
    "lambda": (lambda: (decoratable.make_lambda(10), (ITEMS,)), [x + 10 for x in ITEMS]),
    "lambda-defined-in-the-test": (
        lambda: (parallel(workers=2)(lambda x: (x, "in the test")), (ITEMS,)),
        [(x, "in the test") for x in ITEMS],
    ),
    "closure-capturing-variables": (
        lambda: (decoratable.make_closure(2, {1: "a", 2: "b"}), (ITEMS,)),
        ["a:2", "b:4", "?:6", "?:8"],
    ),
    "nested-function": (lambda: (decoratable.make_nested(), (ITEMS,)), [x**3 for x in ITEMS]),
    "method-of-a-local-class": (
        lambda: (decoratable.make_local_object(5).scale, (ITEMS,)),
        [5 * x for x in ITEMS],
    ),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_serial_backend_gives_the_reference_answer(kind: str) -> None:
    """The expected lists below are what the serial backend answers, too."""
    make, expected = KINDS[kind]
    target, args = make()
    assert target.options(backend="serial")(*args) == expected


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("start_method", START_METHODS)
@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_on_every_start_method(kind: str, start_method: str, mode: str) -> None:
    make, expected = KINDS[kind]
    target, args = make()
    # workers=2 for the bare-decorated kind too: its default is one worker per CPU.
    results = call_in_mode(target, args, mode, start_method=start_method, workers=2)
    assert_same_results(results, expected, mode)


# -- calling methods as users write it (default start method, no `.options`) ------------

SCALER = Scaler(3)

# how the user writes the call -> (the call, the answer of a plain loop)
DIRECT_CALLS: dict[str, tuple[Callable[[], list[Any]], list[Any]]] = {
    "obj.m(items)": (lambda: SCALER.scale(ITEMS), [3, 6, 9, 12]),
    "Cls.m(obj, items)": (lambda: Scaler.scale(SCALER, ITEMS), [3, 6, 9, 12]),
    "Cls.cm(items)": (lambda: Scaler.tagged(ITEMS), [("Scaler", x) for x in ITEMS]),
    "obj.cm(items)": (lambda: SCALER.tagged(ITEMS), [("Scaler", x) for x in ITEMS]),
    "Sub.cm(items)": (lambda: SubScaler.tagged(ITEMS), [("SubScaler", x) for x in ITEMS]),
    "Cls.sm(items)": (lambda: Scaler.negate(ITEMS), [-1, -2, -3, -4]),
    "obj.sm(items)": (lambda: SCALER.negate(ITEMS), [-1, -2, -3, -4]),
    "obj.m.iter(items)": (lambda: list(SCALER.scale.iter(ITEMS)), [3, 6, 9, 12]),
    "Cls.m.iter(obj, items)": (lambda: list(Scaler.scale.iter(SCALER, ITEMS)), [3, 6, 9, 12]),
    "Cls.cm.iter(items)": (lambda: list(Scaler.tagged.iter(ITEMS)), [("Scaler", x) for x in ITEMS]),
    "obj.m.options(ordered=False)(items)": (
        lambda: sorted(SCALER.scale.options(ordered=False)(ITEMS)),
        [3, 6, 9, 12],
    ),
    "Cls.m.options(ordered=False)(obj, items)": (
        lambda: sorted(Scaler.scale.options(ordered=False)(SCALER, ITEMS)),
        [3, 6, 9, 12],
    ),
    "obj.cm.options(ordered=False)(items)": (
        lambda: sorted(SCALER.tagged.options(ordered=False)(ITEMS)),
        [("Scaler", x) for x in ITEMS],
    ),
}


@pytest.mark.parametrize("written", list(DIRECT_CALLS))
def test_methods_called_as_written(written: str) -> None:
    call, expected = DIRECT_CALLS[written]
    assert call() == expected


def test_func_is_the_single_item_method() -> None:
    assert SCALER.scale.func(4) == 12
    assert Scaler.scale.func(SCALER, 4) == 12
    assert Scaler.tagged.func(4) == ("Scaler", 4)
    assert SCALER.tagged.func(4) == ("Scaler", 4)
    assert SubScaler.tagged.func(4) == ("SubScaler", 4)
    assert Scaler.negate.func(4) == -4
    assert SCALER.negate.func(4) == -4
    assert decoratable.square.func(5) == 25
    assert decoratable.make_lambda(1).func(1) == 2
    assert decoratable.make_closure(3, {2: "b"}).func(2) == "b:6"


def test_methods_keep_their_metadata() -> None:
    assert Scaler.scale.__name__ == "scale"
    assert Scaler.scale.__qualname__ == "Scaler.scale"
    assert Scaler.scale.__doc__ == "Multiply one number by this scaler's factor."
    assert SCALER.scale.__module__ == "decoratable"
    assert Scaler.tagged.__qualname__ == "Scaler.tagged"
    assert Scaler.negate.__name__ == "negate"


def test_the_object_is_sent_with_its_current_state() -> None:
    """`obj` reaches the workers as it is at call time, not as it was when decorated."""
    scaler = Scaler(2)
    assert scaler.scale.options(start_method="spawn")([1, 2]) == [2, 4]
    scaler.factor = 7
    assert scaler.scale.options(start_method="spawn")([1, 2]) == [7, 14]


# -- the fast path: by reference when possible, by value (cloudpickle) only if not ----------


@pytest.fixture
def cloudpickled(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every object this process pickles through cloudpickle while the test runs."""
    seen: list[object] = []
    original = cloudpickle.Pickler.dump

    def spy(self: Any, obj: object) -> Any:
        seen.append(obj)
        return original(self, obj)

    monkeypatch.setattr(cloudpickle.Pickler, "dump", spy)
    return seen


# what is sent for each importable kind -> the single-item answer it must give for 2
BY_REFERENCE: dict[str, tuple[Callable[[], Any], Any]] = {
    "module-function": (lambda: decoratable.square.func, 4),
    "staticmethod": (lambda: Scaler.negate.func, -2),
    "method-through-class": (lambda: functools.partial(Scaler.scale.func, Scaler(3)), 6),
}
BY_VALUE: dict[str, tuple[Callable[[], Any], Any]] = {
    "lambda": (lambda: decoratable.make_lambda(10).func, 12),
    "closure": (lambda: decoratable.make_closure(2, {2: "b"}).func, "b:4"),
    "nested-function": (lambda: decoratable.make_nested().func, 8),
}


@pytest.mark.parametrize("kind", list(BY_REFERENCE))
def test_importable_functions_are_sent_by_reference(kind: str, cloudpickled: list[object]) -> None:
    make, answer = BY_REFERENCE[kind]
    sent = make()
    payload = dumps(sent)
    assert cloudpickled == []
    assert b"cloudpickle" not in payload
    received = loads(payload)
    if isinstance(sent, types.FunctionType):
        assert received is sent  # the very same function: it was looked up, not rebuilt
    assert received(2) == answer


@pytest.mark.parametrize("kind", list(BY_VALUE))
def test_functions_that_cannot_be_imported_go_by_value(
    kind: str, cloudpickled: list[object]
) -> None:
    make, answer = BY_VALUE[kind]
    sent = make()
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        pickle.dumps(sent)  # why they need cloudpickle
    payload = dumps(sent)
    assert cloudpickled
    received = loads(payload)
    assert received is not sent
    assert received(2) == answer


# what `obj.m`, `Cls.cm`... hand to the workers -> the single-item answer for 2
BOUND_METHODS: dict[str, tuple[Callable[[], Any], Any]] = {
    "obj.m": (lambda: Scaler(3).scale.func, 6),
    "Cls.cm": (lambda: Scaler.tagged.func, ("Scaler", 2)),
    "obj.cm": (lambda: Scaler(3).tagged.func, ("Scaler", 2)),
    "Sub.cm": (lambda: SubScaler.tagged.func, ("SubScaler", 2)),
}


@pytest.mark.parametrize("method", list(BOUND_METHODS))
def test_a_bound_method_is_sent_as_the_undecorated_method(
    method: str, cloudpickled: list[object]
) -> None:
    """A worker must get the single-item method back, not the parallel wrapper that now
    stands under its name (calling that on one item would treat the item as a list)."""
    make, answer = BOUND_METHODS[method]
    received = loads(dumps(make()))
    assert cloudpickled == []
    assert not is_parallel_function(received), type(received)
    assert received(2) == answer


@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_a_call_of_an_importable_function_never_uses_cloudpickle(
    start_method: str, cloudpickled: list[object]
) -> None:
    square = decoratable.square.options(start_method=start_method)
    assert square(ITEMS) == [1, 4, 9, 16]
    negate = Scaler.negate.options(start_method=start_method, ordered=False)
    assert sorted(negate(ITEMS)) == [-4, -3, -2, -1]
    assert cloudpickled == []
    lam = decoratable.make_lambda(1).options(start_method=start_method)
    assert lam(ITEMS) == [2, 3, 4, 5]
    assert cloudpickled, "a lambda can only travel by value"


# -- real scripts, run as `python script.py` ------------------------------------------------


def subprocess_env() -> dict[str, str]:
    """The environment of a script: this parallelize and the tests' helpers importable."""
    paths = [str(PACKAGE_ROOT), str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def run_python(args: list[str], stdin: str | None = None) -> dict[str, Any]:
    """Run `python *args` in a fresh directory; return the JSON object it prints."""
    done = subprocess.run(
        [sys.executable, *args],
        input=stdin,
        env=subprocess_env(),
        cwd=SCRIPTS_DIR,
        capture_output=True,
        text=True,
        timeout=SCRIPT_SECONDS,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip(), done.stderr[-3000:]
    printed: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return printed


@functools.cache
def user_script_output(start_method: str) -> dict[str, Any]:
    """One run of `scripts/user_script.py` per start method, shared by its cases."""
    return run_python([str(SCRIPTS_DIR / "user_script.py"), start_method])


USER_SCRIPT_EXPECTED: dict[str, Any] = {
    "function": [1, 4, 9],
    "function-explicit-start-method": [16, 25],
    "function-unordered": [1, 4, 9],
    "function-iter": [1, 4, 9],
    "instance-method": ["hi, ann", "hi, bob"],
    "method-through-class": ["hi, ann"],
    "classmethod": [["Greeter", 1], ["Greeter", 2]],
    "classmethod-through-instance": [["Greeter", 3]],
    "staticmethod": [-1, -2],
    "module-level-lambda": [2, 4, 6],
    "lambda-capturing": [101, 102],
    "nested-function": [1, 2],
    "ran-in-workers": True,
    "function-sent-by-reference": True,
    "leftovers": [],
}


@pytest.mark.parametrize("case", list(USER_SCRIPT_EXPECTED))
@pytest.mark.parametrize("start_method", START_METHODS)
def test_script_main_guarded(start_method: str, case: str) -> None:
    """`python user_script.py <method>`: functions, a class and lambdas in `__main__`,
    with the start method as the platform default (macOS: spawn; 3.14: forkserver)."""
    assert user_script_output(start_method)[case] == USER_SCRIPT_EXPECTED[case]


NOTEBOOK = SCRIPTS_DIR / "notebook_cells.py"


@functools.cache
def notebook_output_from_c(start_method: str) -> dict[str, Any]:
    """`python -c <cells> <method>`: a `__main__` without a file, as in Jupyter."""
    return run_python(["-c", NOTEBOOK.read_text(), start_method])


NOTEBOOK_EXPECTED: dict[str, Any] = {
    "function": [1, 4, 9],
    "function-unordered": [1, 4, 9],
    "function-iter": [1, 4, 9],
    "instance-method": [101, 102],
    "classmethod": [["Counter", 1]],
    "staticmethod": [-1, -2],
    "lambda-capturing-a-global": [8, 9],
    "closure": [3, 6],
    "ran-in-workers": True,
    "nested-parallel": [[1, True, [10, 20]], [5, True, [50, 60]]],
    "function-sent-by-value": True,
    "leftovers": [],
}


@pytest.mark.parametrize("case", list(NOTEBOOK_EXPECTED))
@pytest.mark.parametrize("start_method", START_METHODS)
def test_notebook_main_without_a_file(start_method: str, case: str) -> None:
    assert notebook_output_from_c(start_method)[case] == NOTEBOOK_EXPECTED[case]


@pytest.mark.parametrize("start_method", START_METHODS)
def test_notebook_source_fed_on_stdin(start_method: str) -> None:
    """`python - <method>` with the cells on stdin: `__main__.__file__` is '<stdin>', a
    file no spawned worker can import either. (How a function is sent is not checked
    here: under fork, by reference to the inherited `__main__` is possible.)"""
    output = run_python(["-", start_method], stdin=NOTEBOOK.read_text())
    expected = {k: v for k, v in NOTEBOOK_EXPECTED.items() if k != "function-sent-by-value"}
    wrong = {case: output.get(case) for case, want in expected.items() if output.get(case) != want}
    assert wrong == {}


# -- nested parallelism ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("start_method", START_METHODS)
def test_nested_call_runs_serially_in_the_outer_worker(start_method: str, mode: str) -> None:
    """No 'daemonic processes are not allowed to have children', no deadlock, and no
    workers x workers processes: the inner items run in the outer worker's own process."""
    outer = decoratable.outer_calls_inner.options(start_method=start_method)
    results = outer([0, 10], start_method, mode)
    for x, result in zip([0, 10], results, strict=True):
        assert [inner["value"] for inner in result["inner"]] == [10 * x, 10 * x + 10, 10 * x + 20]
        assert {inner["pid"] for inner in result["inner"]} == {result["pid"]}
        assert [inner["children"] for inner in result["inner"]] == [0, 0, 0]
        assert result["children"] == 0
    pids = {result["pid"] for result in results}
    assert os.getpid() not in pids
    assert len(pids) <= 2  # the outer workers, and no other process ran an item


@pytest.mark.parametrize("start_method", START_METHODS)
def test_nested_closures_go_by_value(start_method: str) -> None:
    """An outer closure whose items call an inner decorated closure it captured."""
    outer = decoratable.make_nested_closure(1).options(start_method=start_method)
    results = outer([0, 10])
    assert [[value for _, value in inner] for _, inner in results] == [[1, 2], [11, 12]]
    for pid, inner in results:
        assert pid != os.getpid()
        assert {inner_pid for inner_pid, _ in inner} == {pid}


@pytest.mark.parametrize("start_method", START_METHODS)
def test_async_function_called_inside_a_process_worker(start_method: str) -> None:
    outer = decoratable.outer_calls_async.options(start_method=start_method)
    results = outer([1, 5])
    assert [squares for _, squares in results] == [[1, 4], [25, 36]]
    assert os.getpid() not in {pid for pid, _ in results}


# -- async def -------------------------------------------------------------------------------

# kind -> (a factory of the call, the answer of a plain loop over ITEMS)
ASYNC_KINDS: dict[str, tuple[Callable[[], Call], list[int]]] = {
    "module-function": (lambda: (decoratable.async_square, (ITEMS,)), [x * x for x in ITEMS]),
    "closure": (lambda: (decoratable.make_async_closure(5), (ITEMS,)), [x + 5 for x in ITEMS]),
    "method-through-instance": (
        lambda: (decoratable.AsyncScaler(2).scale, (ITEMS,)),
        [2 * x for x in ITEMS],
    ),
    "method-through-class": (
        lambda: (decoratable.AsyncScaler.scale, (decoratable.AsyncScaler(2), ITEMS)),
        [2 * x for x in ITEMS],
    ),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", list(ASYNC_KINDS))
def test_async_results(kind: str, mode: str) -> None:
    """Sync `f(items)` from plain code: the coroutines run on an event loop of their own."""
    make, expected = ASYNC_KINDS[kind]
    target, args = make()
    results = call_in_mode(target, args, mode)
    assert_same_results(results, expected, mode)


@pytest.mark.parametrize("mode", MODES)
def test_async_items_in_flight_never_exceed_workers(mode: str) -> None:
    """12 items, workers=3: the first three can only pass their gate together (so three
    do run at once), and the high-water mark shows that a fourth never joined them."""
    flight = Flight(parties=3)
    function = parallel(workers=3)(decoratable.rendezvous)
    results = call_in_mode(function, (range(12), flight), mode)
    assert sorted(results) == [(x, True) for x in range(12)]
    assert flight.high == 3
    assert flight.running == 0


def test_async_default_concurrency_is_32() -> None:
    flight = Flight(parties=32)
    results = parallel(decoratable.rendezvous)(range(40), flight)
    assert results == [(x, True) for x in range(40)]
    assert flight.high == 32


def test_async_aio_inside_a_running_loop() -> None:
    async def main() -> tuple[list[int], list[int], int]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        ticker = asyncio.ensure_future(tick())
        first, second = await asyncio.gather(
            decoratable.async_square.aio(ITEMS), decoratable.make_async_closure(5).aio(ITEMS)
        )
        ticker.cancel()
        return first, second, ticks

    first, second, ticks = asyncio.run(main())
    assert first == [1, 4, 9, 16]
    assert second == [6, 7, 8, 9]
    assert ticks > 0


def test_async_sync_call_from_inside_a_running_loop() -> None:
    async def main() -> list[int]:
        return decoratable.async_square(ITEMS)

    assert asyncio.run(main()) == [1, 4, 9, 16]


def test_async_errors_raise_the_original_exception_with_a_note() -> None:
    function = parallel(workers=2)(decoratable.async_fail_on)
    with pytest.raises(ValueError, match="bad item 3") as caught:
        function(range(6), 3)
    notes = getattr(caught.value, "__notes__", [])
    assert any("item 3" in note for note in notes), notes
    assert function(range(3), 99) == [0, 1, 2]  # the next call works


def test_async_errors_return_puts_the_exception_in_place() -> None:
    function = parallel(workers=2, errors="return")(decoratable.async_fail_on)
    results = function(range(5), 2)
    assert results[:2] == [0, 1]
    assert results[3:] == [3, 4]
    assert isinstance(results[2], ValueError)
    assert "bad item 2" in str(results[2])


def test_async_timeout_cancels_the_slow_coroutine() -> None:
    flight = Flight(parties=1)
    function = parallel(workers=2, timeout=0.3, errors="return")(decoratable.async_stuck_on)
    began = time.monotonic()
    results = function(range(4), 1, flight)
    assert time.monotonic() - began < 10  # far less than the stuck item's 60 s
    assert [results[0], *results[2:]] == [0, 2, 3]
    assert isinstance(results[1], TaskTimeoutError)
    assert isinstance(results[1], TimeoutError)
    assert flight.cancelled == [1]


def test_async_timeout_raises_task_timeout_error() -> None:
    flight = Flight(parties=1)
    function = parallel(workers=2, timeout=0.3)(decoratable.async_stuck_on)
    began = time.monotonic()
    with pytest.raises(TaskTimeoutError) as caught:
        function(range(4), 2, flight)
    assert time.monotonic() - began < 10
    notes = getattr(caught.value, "__notes__", [])
    assert any("item 2" in note for note in notes), notes


@pytest.fixture
def owned_bar() -> Iterator[RecordingBar]:
    bar = RecordingBar(total=len(ITEMS) * 2)
    yield bar
    bar.close()


@pytest.mark.parametrize("mode", MODES)
def test_async_progress_advances_a_caller_owned_bar(mode: str, owned_bar: RecordingBar) -> None:
    items = ITEMS * 2
    function = decoratable.async_square.options(progress=owned_bar)
    results = call_in_mode(function, (items,), mode)
    assert_same_results(results, [x * x for x in items], mode)
    assert owned_bar.n == len(items)
    assert owned_bar.steps == [1] * len(items)
    assert not owned_bar.disable  # the caller's bar is left open

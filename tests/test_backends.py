"""API.md section 6: the process, thread and serial backends, and PARALLELIZE_BACKEND."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import helpers
import pytest
from leftovers import wait_for_no_extra_threads

import parallelize
from parallelize import TaskTimeoutError, parallel

PACKAGE_ROOT = str(Path(parallelize.__file__).resolve().parent.parent)


def test_process_backend_is_the_default_and_runs_items_in_worker_processes() -> None:
    pids = parallel(workers=2)(helpers.current_pid)(range(6))
    assert os.getpid() not in pids
    assert 1 <= len(set(pids)) <= 2


def test_thread_backend_runs_items_on_threads_of_this_process() -> None:
    results = parallel(backend="thread", workers=2)(helpers.where)(range(6))
    assert {pid for pid, _ in results} == {os.getpid()}
    assert threading.get_ident() not in {ident for _, ident in results}
    assert 1 <= len({ident for _, ident in results}) <= 2


def test_thread_timeout_fails_the_item_and_abandons_its_thread(tmp_path: Path) -> None:
    """The stuck item waits for a gate opened only after the call has returned."""
    threads_before = set(threading.enumerate())
    gate = tmp_path / "gate"
    gated = parallel(backend="thread", workers=2, timeout=0.3, errors="return")(helpers.gated_first)
    began = time.monotonic()
    stuck, *others = gated(range(4), str(gate))
    assert time.monotonic() - began < 10
    assert isinstance(stuck, TaskTimeoutError)
    assert others == [(1, True), (2, True), (3, True)]
    gate.touch()  # the abandoned thread finishes its item and must then exit
    assert wait_for_no_extra_threads(threads_before) == []


def test_serial_backend_runs_items_one_by_one_on_the_calling_thread() -> None:
    for ordered in (True, False):
        log: list[int] = []
        recorded = parallel(backend="serial", ordered=ordered)(helpers.record_order)
        assert recorded(range(5), log) == [0, 1, 2, 3, 4]
        assert log == [0, 1, 2, 3, 4]
    where = parallel(backend="serial")(helpers.where)
    assert where(range(3)) == [(os.getpid(), threading.get_ident())] * 3


def test_serial_backend_runs_one_item_at_a_time(tmp_path: Path) -> None:
    rendezvous = parallel(backend="serial", workers=4)(helpers.rendezvous)
    assert rendezvous(range(4), str(tmp_path), 1) == [(True, 1)] * 4


def test_environment_variable_overrides_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    on_processes = parallel(backend="process", workers=2)(helpers.where)
    monkeypatch.setenv("PARALLELIZE_BACKEND", "serial")
    me = (os.getpid(), threading.get_ident())
    assert on_processes(range(3)) == [me] * 3
    assert list(on_processes.iter(range(2))) == [me] * 2
    assert on_processes.options(backend="thread")(range(2)) == [me] * 2
    monkeypatch.setenv("PARALLELIZE_BACKEND", "thread")
    results = on_processes(range(4))
    assert {pid for pid, _ in results} == {os.getpid()}
    assert threading.get_ident() not in {ident for _, ident in results}


def test_invalid_environment_variable_is_a_value_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARALLELIZE_BACKEND", "gpu")
    square = parallel(workers=2)(helpers.square)
    with pytest.raises(ValueError, match=r"PARALLELIZE_BACKEND.*'gpu'"):
        square([1, 2])
    with pytest.raises(ValueError, match="PARALLELIZE_BACKEND"):
        square.iter([1, 2])


def test_module_level_decorated_function_is_sent_to_workers(
    process_settings: dict[str, Any],
) -> None:
    """helpers.decorated_square is the parallel function; workers must still find the original."""
    assert helpers.decorated_square.options(**process_settings)(range(5)) == [0, 1, 4, 9, 16]
    assert helpers.bare_square.options(**process_settings)(range(3)) == [0, 1, 4]


def test_module_level_decorated_function_with_its_own_settings() -> None:
    assert helpers.decorated_square(range(4)) == [0, 1, 4, 9]
    assert list(helpers.decorated_square.iter(range(3))) == [0, 1, 4]


def test_a_worker_still_starting_does_not_hold_up_the_call(
    process_settings: dict[str, Any], tmp_path: Path
) -> None:
    """One worker is stuck in its initializer until after the call: the other runs
    every item, and the stuck one is ended with the call, never given work."""
    square = parallel(
        **process_settings, initializer=helpers.first_starts_at_once, initargs=(str(tmp_path),)
    )(helpers.square)
    began = time.monotonic()
    assert square(range(6)) == [0, 1, 4, 9, 16, 25]
    assert time.monotonic() - began < helpers.GATE_SECONDS / 2
    (tmp_path / "gate").touch()


def _run_script(script: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=script.parent,
        env={**os.environ, "PYTHONPATH": PACKAGE_ROOT},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_decorated_function_in_a_script(tmp_path: Path, method: str) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os
            from parallelize import parallel

            @parallel(workers=2, start_method={method!r})
            def square(x):
                return x * x, os.getpid()

            if __name__ == "__main__":
                results = square(range(5))
                print([value for value, _ in results])
                print(os.getpid() in {{pid for _, pid in results}})
            """
        )
    )
    done = _run_script(script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["[0, 1, 4, 9, 16]", "False"]


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_new_worker_process_imports_only_what_running_items_needs(
    tmp_path: Path, method: str
) -> None:
    """Start-up is paid per worker: the decorator (wrapt, asyncio), `traceback` (needed
    only when an item fails) and, on Linux, `ctypes` (for the shared slots) stay out."""
    (tmp_path / "probe.py").write_text(
        textwrap.dedent(
            """
            import sys

            HEAVY = ("wrapt", "asyncio", "traceback", "ctypes", "parallelize._decorator")

            def loaded(_):
                return sorted(name for name in HEAVY if name in sys.modules)
            """
        )
    )
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import probe

            if __name__ == "__main__":
                from parallelize import parallel

                print(parallel(workers=1, start_method={method!r})(probe.loaded)([0])[0])
            """
        )
    )
    done = _run_script(script)
    assert done.returncode == 0, done.stderr
    expected = [] if sys.platform == "linux" else ["ctypes"]
    assert done.stdout.strip() == repr(expected)


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_workers_run_only_their_own_exit_handlers(tmp_path: Path, method: str) -> None:
    """No worker runs the exit handlers it inherited (the caller's: think of a cluster
    client shutting down); every worker, on every Python, runs those it registered
    itself (3.13's rule for fork and forkserver), and prints what it printed."""
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import atexit, os, sys
            from parallelize import parallel

            def note(who):
                with open(os.path.join({str(tmp_path)!r}, who + "-" + str(os.getpid())), "w"):
                    pass

            def register_in_worker():
                atexit.register(note, "worker")
                print("worker output", flush=False)

            def square(x):
                return x * x

            if __name__ == "__main__":
                atexit.register(note, "caller")
                run = parallel(workers=1, start_method={method!r}, initializer=register_in_worker)
                print(run(square)(range(5)))
            """
        )
    )
    done = _run_script(script)
    assert done.returncode == 0, done.stderr
    assert "[0, 1, 4, 9, 16]" in done.stdout
    assert done.stdout.count("worker output") == 1
    notes = [path.name.split("-")[0] for path in tmp_path.iterdir() if "-" in path.name]
    assert sorted(notes) == ["caller", "worker"]

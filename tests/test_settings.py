"""API.md section 1, the settings table: what each setting does, on every backend."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import helpers
import pytest

from parallelize import ParallelError, TaskTimeoutError, parallel


def usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def test_workers_is_how_many_items_run_at_once(
    any_concurrent_settings: dict[str, Any], tmp_path: Path
) -> None:
    rendezvous = parallel(**any_concurrent_settings)(helpers.rendezvous)
    results = rendezvous(range(6), str(tmp_path), 2)
    assert all(passed for passed, _ in results), "two items never ran at the same time"
    assert max(running for _, running in results) <= 2


def test_process_workers_default_to_the_usable_cpus(tmp_path: Path) -> None:
    cpus = usable_cpus()
    rendezvous = parallel(backend="process")(helpers.rendezvous)
    results = rendezvous(range(2 * cpus), str(tmp_path), cpus)
    assert all(passed for passed, _ in results), f"{cpus} items never ran at the same time"
    assert max(running for _, running in results) <= cpus


def test_defaults() -> None:
    """Process backend, ordered, errors raised, items not unpacked, no bar."""
    square = parallel(helpers.current_pid)
    assert os.getpid() not in square(range(3))
    assert parallel(helpers.add)([1, 2], 1) == [2, 3]
    with pytest.raises(ValueError):
        parallel(helpers.fail_on)([1, 2], 2)


def test_chunksize_sends_items_together(any_settings: dict[str, Any]) -> None:
    where = parallel(chunksize=3, **any_settings)(helpers.where_after)
    results = where(range(6), 0.01)
    assert len(set(results[:3])) == 1
    assert len(set(results[3:])) == 1


def test_timeout_fails_only_the_slow_item(any_settings: dict[str, Any]) -> None:
    nap = parallel(timeout=0.5, errors="return", **any_settings)(helpers.nap)
    first, slow, last = nap([0.0, 1.5, 0.01])
    assert (first, last) == (0.0, 0.01)
    assert isinstance(slow, TaskTimeoutError)
    assert isinstance(slow, TimeoutError)
    assert isinstance(slow, ParallelError)


@pytest.mark.timeout(15)  # a hang here is a failure, not a minute lost
def test_retries_run_a_failed_item_again(any_settings: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "retried").mkdir()
    (tmp_path / "once").mkdir()
    retried = parallel(retries=1, **any_settings)(helpers.fail_first_attempt)
    assert retried(range(4), str(tmp_path / "retried")) == [0, 1, 2, 3]
    once = retried.options(retries=0, errors="return")
    results = once(range(4), str(tmp_path / "once"))
    assert [str(error) for error in results] == [f"first attempt at {x}" for x in range(4)]


def test_initializer_runs_once_in_each_worker_before_its_items(
    settings: dict[str, Any], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    token = f"initialized for {request.node.name}"
    remembered = parallel(
        initializer=helpers.remember, initargs=(token, str(tmp_path)), **settings
    )(helpers.remembered)
    results = remembered(range(6))
    assert [value for value, _, _ in results] == [token] * 6
    initialized = sorted(path.name for path in tmp_path.iterdir())
    used = {f"init-{pid}-{ident}" for _, pid, ident in results}
    assert used <= set(initialized)
    assert 1 <= len(initialized) <= settings.get("workers", 1)


def test_max_tasks_per_worker_replaces_the_worker(process_settings: dict[str, Any]) -> None:
    process_settings["workers"] = 1
    pids = parallel(max_tasks_per_worker=2, **process_settings)(helpers.current_pid)(range(6))
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4] == pids[5]
    assert len(set(pids)) == 3


def test_start_method_is_used(
    process_settings: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    method = process_settings["start_method"]
    monkeypatch.setattr(helpers, "MARK", "set in the parent")
    ((mark, parent),) = parallel(**process_settings)(helpers.how_started)([0])
    assert (mark == "set in the parent") == (method == "fork")
    assert (parent == os.getpid()) == (method != "forkserver")  # forkserver forks them


def test_retry_on_limits_what_retries_run_again(
    any_settings: dict[str, Any], tmp_path: Path
) -> None:
    """Only failures that are instances of `retry_on` run again; the default,
    `Exception`, leaves out `SystemExit` and other `BaseException`s."""
    for name in "abc":
        (tmp_path / name).mkdir()
    matching = parallel(retries=1, retry_on=(KeyError, ValueError), **any_settings)
    assert matching(helpers.fail_first_attempt)([1, 2], str(tmp_path / "a")) == [1, 2]
    other = parallel(retries=1, retry_on=KeyError, errors="return", **any_settings)
    results = other(helpers.fail_first_attempt)([1, 2], str(tmp_path / "b"))
    assert all(isinstance(result, ValueError) for result in results)
    exits = parallel(retries=2, errors="return", **any_settings)(helpers.fail_first_attempt)
    assert isinstance(exits([1], str(tmp_path / "c"), SystemExit)[0], SystemExit)


@pytest.mark.parametrize("bad", [ValueError(), int, (), (KeyError, "x")])
def test_retry_on_must_be_exception_classes(bad: object) -> None:
    with pytest.raises(TypeError, match="retry_on"):
        parallel(retry_on=bad)  # type: ignore[call-overload]

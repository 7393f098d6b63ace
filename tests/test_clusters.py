"""API.md section 6: the Dask and Ray backends, on real local clusters.

The contract suite (results, order, `.iter()`, progress, errors, retries, timeout)
runs on both through `any_settings`. Here is what only a cluster has: which
cluster a call uses, the cluster a call starts for itself, and workers that die.
Every test's name says `dask` or `ray`, so `pytest -k "dask or ray"` selects them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import helpers
import psutil
import pytest

import parallelize
from parallelize import WorkerLostError, parallel

PACKAGE_ROOT = str(Path(parallelize.__file__).resolve().parent.parent)
TESTS_DIR = str(Path(__file__).resolve().parent)

# How long a call may take to notice a dead worker before the test calls it a hang,
# and how long a Dask nanny may take to restart a worker (spawn, imports) on a loaded
# machine; a test that kills a worker is given time for both.
NO_HANG_SECONDS = 30
KILL_TEST_SECONDS = 3 * NO_HANG_SECONDS
# Makes `helpers.exit_on` end the worker on every attempt at the item.
ALWAYS = 1_000


def run_script(tmp_path: Path, script: str, *args: str, timeout: float = 60) -> Any:
    """Run `script` in a fresh interpreter, where no Dask client is active and no Ray
    connected; return the JSON it prints last."""
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(script))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([PACKAGE_ROOT, TESTS_DIR])}
    done = subprocess.run(
        [sys.executable, str(path), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def dask_worker_pids(client: Any) -> set[int]:
    return set(client.run(os.getpid).values())


def is_ray_worker(pid: int) -> bool:
    """A worker process of the Ray connected here: started by its raylet, our child."""
    try:
        parent = psutil.Process(pid).parent()
        return parent is not None and parent.name() == "raylet" and parent.ppid() == os.getpid()
    except psutil.NoSuchProcess:
        return False


def wait_until_dead(pid: int) -> None:
    """Return once the process runs no more code (exited, or a zombie not yet reaped)."""
    deadline = time.monotonic() + NO_HANG_SECONDS
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} still runs {NO_HANG_SECONDS} s after SIGKILL")


# -- which cluster a call uses -------------------------------------------------------------


def test_dask_backend_uses_the_active_client(dask_client: Any) -> None:
    pids = parallel(backend="dask")(helpers.current_pid)(range(8))
    assert set(pids) <= dask_worker_pids(dask_client)
    assert os.getpid() not in pids


def test_dask_client_passed_as_backend_is_used_as_is(dask_client: Any) -> None:
    """Another client than the active one: its cluster's one worker is a thread of
    this process, where the active client's workers are other processes."""
    import distributed

    cluster = distributed.LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
    )
    try:
        with distributed.Client(cluster, set_as_default=False) as other:
            results = parallel(backend=other)(helpers.where)(range(4))
            assert {pid for pid, _ in results} == {os.getpid()}
            assert distributed.get_client() is dask_client  # still the active client
    finally:
        cluster.close()
    pids = parallel(backend=dask_client)(helpers.current_pid)(range(4))
    assert set(pids) <= dask_worker_pids(dask_client)


def test_ray_backend_uses_the_connected_cluster(ray_cluster: None) -> None:
    import ray

    pids = parallel(backend="ray")(helpers.current_pid)(range(8))
    assert all(is_ray_worker(pid) for pid in pids)
    assert ray.is_initialized()  # the call did not start Ray, so it leaves it connected


@pytest.mark.parametrize(
    ("name", "fixture"), [("dask", "dask_client"), ("ray", "ray_cluster")], ids=["dask", "ray"]
)
def test_environment_variable_selects_dask_or_ray(
    name: str, fixture: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = request.getfixturevalue(fixture)
    monkeypatch.setenv("PARALLELIZE_BACKEND", name)
    on_processes = parallel(backend="process", workers=2)(helpers.current_pid)
    pids = on_processes(range(6)) + list(on_processes.iter(range(2)))
    if name == "dask":
        assert set(pids) <= dask_worker_pids(cluster)
    else:
        assert all(is_ray_worker(pid) for pid in pids)


@pytest.mark.parametrize(
    "setting",
    [
        {"initializer": helpers.remember, "initargs": ("token", "/nonexistent")},
        {"max_tasks_per_worker": 2},
    ],
    ids=["initializer", "max_tasks_per_worker"],
)
def test_process_only_settings_are_refused_on_dask_or_ray(
    cluster_settings: dict[str, Any], setting: dict[str, Any]
) -> None:
    name = next(iter(setting))
    refused = parallel(**cluster_settings, **setting)(helpers.square)
    with pytest.raises(ValueError, match=f"{name} is not supported on a cluster backend"):
        refused([1, 2])
    ignored = parallel(start_method="spawn", **cluster_settings)(helpers.square)
    assert ignored([1, 2]) == [1, 4]


# -- the cluster a call starts for itself --------------------------------------------------

DASK_SCRIPT = """
    import json, os, sys, time
    import distributed, psutil
    import helpers
    from parallelize import parallel

    def children():
        # The resource tracker of multiprocessing's spawn is a helper that lives until
        # this interpreter exits; a closed cluster leaves nothing else.
        deadline = time.monotonic() + 5
        while True:
            left = [
                child.pid
                for child in psutil.Process().children(recursive=True)
                if "resource_tracker" not in " ".join(child.cmdline())
            ]
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.02)

    def has_active_client():
        try:
            distributed.get_client()
        except ValueError:
            return False
        return True

    if __name__ == "__main__":
        started = []  # n_workers of each LocalCluster the backend starts
        real_cluster = distributed.LocalCluster

        def recording_cluster(*args, **kwargs):
            started.append(kwargs.get("n_workers"))
            return real_cluster(*args, **kwargs)

        distributed.LocalCluster = recording_cluster
        report = {}
        if sys.argv[1] == "call":
            pids = parallel(backend="dask", workers=2)(helpers.current_pid)(range(8))
            report["ran_here"] = os.getpid() in pids
            report["left"] = children()
            report["client_left"] = has_active_client()
        elif sys.argv[1] == "keep_alive":
            kept = parallel(backend="dask", workers=1, keep_alive=True)(helpers.current_pid)
            pids = kept(range(3))
            alive = children()
            pids += kept(range(3))
            report["ran_on_kept"] = set(pids) <= set(alive)
            report["kept"] = len(alive)
            kept.close()
            report["left"] = children()
        elif sys.argv[1] == "empty":
            report["results"] = parallel(backend="dask", workers=2)(helpers.square)([])
        report["started"] = started
        print(json.dumps(report))
"""


def test_dask_without_a_client_starts_and_ends_its_own_cluster(tmp_path: Path) -> None:
    report = run_script(tmp_path, DASK_SCRIPT, "call")
    assert report == {"ran_here": False, "left": [], "client_left": False, "started": [2]}


def test_dask_keep_alive_keeps_its_own_cluster_until_close(tmp_path: Path) -> None:
    report = run_script(tmp_path, DASK_SCRIPT, "keep_alive")
    assert report == {"ran_on_kept": True, "kept": 1, "left": [], "started": [1]}


def test_dask_without_a_client_starts_no_cluster_for_empty_input(tmp_path: Path) -> None:
    """API.md section 2: an empty iterable returns [] and starts no worker."""
    report = run_script(tmp_path, DASK_SCRIPT, "empty")
    assert report == {"results": [], "started": []}


RAY_SCRIPT = """
    import json, os, sys, time
    import psutil, ray
    import helpers
    from parallelize import parallel

    def children():
        deadline = time.monotonic() + 10
        while True:
            left = [child.pid for child in psutil.Process().children(recursive=True)]
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.05)

    if __name__ == "__main__":
        inits = []  # num_cpus of each ray.init the backend calls
        real_init = ray.init

        def recording_init(*args, **kwargs):
            inits.append(kwargs.get("num_cpus"))
            if sys.argv[1] == "empty":
                raise RuntimeError("ray.init() called for an empty input")
            return real_init(*args, **kwargs)

        ray.init = recording_init
        report = {}
        if sys.argv[1] == "empty":
            report["results"] = parallel(backend="ray", workers=2)(helpers.square)([])
        else:
            pids = parallel(backend="ray", workers=2)(helpers.current_pid)(range(4))
            report["ran_here"] = os.getpid() in pids
            report["connected_after_call"] = ray.is_initialized()
            report["left_after_call"] = children()
            kept = parallel(backend="ray", workers=1, keep_alive=True)(helpers.current_pid)
            kept(range(2))
            report["connected_while_kept"] = ray.is_initialized()
            kept(range(2))
            kept.close()
            report["connected_after_close"] = ray.is_initialized()
            report["left_after_close"] = children()
        report["inits"] = inits
        print(json.dumps(report))
"""


@pytest.mark.timeout(150)  # starts Ray twice: ~10 s each on two cores
def test_ray_not_initialised_starts_and_ends_its_own_ray(tmp_path: Path) -> None:
    report = run_script(tmp_path, RAY_SCRIPT, "call", timeout=120)
    assert report == {
        "ran_here": False,
        "connected_after_call": False,
        "left_after_call": [],
        "connected_while_kept": True,
        "connected_after_close": False,
        "left_after_close": [],
        "inits": [2, 1],
    }


def test_ray_not_initialised_is_not_started_for_empty_input(tmp_path: Path) -> None:
    """API.md section 2: an empty iterable returns [] and starts no worker."""
    report = run_script(tmp_path, RAY_SCRIPT, "empty")
    assert report == {"results": [], "inits": []}


# -- items that fail, workers that die -----------------------------------------------------


def test_item_exception_keeps_its_type_on_dask_or_ray(cluster_settings: dict[str, Any]) -> None:
    """Not a `RayTaskError` or any wrapper: the item's own class, the worker's
    traceback as the cause, and the note naming the item."""
    failing = parallel(**cluster_settings)(helpers.fail_with_own_type_on)
    with pytest.raises(helpers.ItemFailedError) as caught:
        failing(range(4), 2)
    assert type(caught.value) is helpers.ItemFailedError
    assert str(caught.value) == "bad item 2"
    assert "item 2" in caught.value.__notes__[0]
    cause = str(caught.value.__cause__)
    assert "in fail_with_own_type_on" in cause
    assert "ItemFailedError: bad item 2" in cause
    results = failing.options(errors="return")(range(4), 2)
    assert type(results[2]) is helpers.ItemFailedError
    assert results[:2] + results[3:] == [0, 1, 3]


@pytest.mark.timeout(KILL_TEST_SECONDS)
@pytest.mark.parametrize(
    ("chunksize", "exits", "retries"),
    [(1, ALWAYS, 0), (3, ALWAYS, 0), (1, 1, 1)],
    ids=["lost", "lost-in-a-chunk", "retried"],
)
def test_worker_exit_on_dask_or_ray(
    cluster_settings: dict[str, Any], tmp_path: Path, chunksize: int, exits: int, retries: int
) -> None:
    """Item 2 ends its worker process. It alone fails with `WorkerLostError` (items of
    its chunk run again), or succeeds when retried; the call does not hang."""
    work = parallel(chunksize=chunksize, errors="return", retries=retries, **cluster_settings)(
        helpers.exit_on
    )
    try:
        results = work(range(6), 2, exits, str(tmp_path), 0.2)
        if retries:
            assert results == [0, 1, 2, 3, 4, 5]
        else:
            assert isinstance(results[2], WorkerLostError)
            assert any("item 2" in note for note in results[2].__notes__)
            assert results[:2] + results[3:] == [0, 1, 3, 4, 5]
        assert work.options(errors="raise")(range(3), 2, 0, str(tmp_path), 0) == [0, 1, 2]
    finally:
        wait_for_full_cluster(cluster_settings)


def wait_for_full_cluster(settings: dict[str, Any]) -> None:
    """Until a Dask nanny has replaced the worker that died, for the tests after this one
    (Ray starts workers on demand)."""
    if settings["backend"] == "dask":
        import distributed

        client = distributed.get_client()
        client.wait_for_workers(len(client.cluster.workers), timeout=NO_HANG_SECONDS)


@pytest.mark.timeout(KILL_TEST_SECONDS)
@pytest.mark.parametrize("retries", [0, 1], ids=["lost", "retried"])
def test_dask_worker_killed_mid_item(dask_client: Any, tmp_path: Path, retries: int) -> None:
    """SIGKILL from outside to the worker running item 0 while item 0 waits on a gate.

    Item 0 fails with `WorkerLostError`, or succeeds when retried; the other items
    are not affected, and the call returns.
    """
    work = parallel(backend="dask", workers=2, chunksize=1, errors="return", retries=retries)(
        helpers.hold_first_attempt
    )
    running, gate = tmp_path / "running", tmp_path / "gate"
    with ThreadPoolExecutor(1, thread_name_prefix="caller") as caller:
        call = caller.submit(work, range(6), str(tmp_path), 0.2)
        assert helpers.wait_for_path(running), "item 0 never started"
        pid = int(running.read_text())
        assert pid in dask_worker_pids(dask_client)
        os.kill(pid, signal.SIGKILL)
        wait_until_dead(pid)
        gate.touch()  # from here on, item 0 would pass: it must not have run on
        results = call.result(timeout=NO_HANG_SECONDS)
    try:
        if retries:
            assert results == [0, 1, 2, 3, 4, 5]
        else:
            assert isinstance(results[0], WorkerLostError)
            assert any("item 0" in note for note in results[0].__notes__)
            assert results[1:] == [1, 2, 3, 4, 5]
        assert work.options(errors="raise")(range(3), str(tmp_path), 0) == [0, 1, 2]
    finally:
        wait_for_full_cluster({"backend": "dask"})

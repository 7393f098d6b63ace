"""Shared fixtures: the backends every contract test runs on, and the leftover check."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from leftovers import (
    GRACE_SECONDS,
    add_cluster,
    cluster_pids,
    describe,
    remove_cluster,
    wait_for_no_children,
    wait_for_no_extra_threads,
)

import parallelize

# The contract suite runs once per entry; the serial backend is the reference answer.
BACKEND_SETTINGS: dict[str, dict[str, Any]] = {
    "serial": {"backend": "serial"},
    "thread": {"backend": "thread", "workers": 2},
    "process-fork": {"backend": "process", "start_method": "fork", "workers": 2},
    "process-spawn": {"backend": "process", "start_method": "spawn", "workers": 2},
    "process-forkserver": {"backend": "process", "start_method": "forkserver", "workers": 2},
}
CONCURRENT = [name for name in BACKEND_SETTINGS if name != "serial"]
PROCESS = [name for name in BACKEND_SETTINGS if name.startswith("process")]

# The cluster backends, on the session's real local clusters (the fixtures below): two
# worker processes each, so `workers=2` matches what the cluster can run at once. They
# take the contract tests of results, order, `.iter()`, progress, `errors`, `retries`
# and `timeout` (`any_settings`). The process-only settings do not apply:
# `start_method` is ignored, `initializer` and `max_tasks_per_worker` are refused with
# ValueError, and a cluster worker is not our process to count or replace; the tests of
# those keep to `settings` and `process_settings`, which never include a cluster.
CLUSTER_WORKERS = 2
CLUSTER_SETTINGS: dict[str, dict[str, Any]] = {
    "dask": {"backend": "dask", "workers": CLUSTER_WORKERS},
    "ray": {"backend": "ray", "workers": CLUSTER_WORKERS},
}
CLUSTER_FIXTURES = {"dask": "dask_client", "ray": "ray_cluster"}

PACKAGE_ROOT = str(Path(parallelize.__file__).resolve().parent.parent)
TESTS_DIR = str(Path(__file__).resolve().parent)


# Set by the matrix (noxfile.py): the suite must test the installed wheel, never the
# checkout it was built from.
INSTALLED_ONLY = os.environ.get("PARALLELIZE_TEST_INSTALLED") == "1"


def pytest_report_header() -> str:
    return f"parallelize {parallelize.__version__} from {Path(parallelize.__file__).parent}"


def pytest_configure(config: pytest.Config) -> None:
    if INSTALLED_ONLY and "site-packages" not in Path(parallelize.__file__).parts:
        raise pytest.UsageError(
            f"PARALLELIZE_TEST_INSTALLED=1 but parallelize was imported from "
            f"{parallelize.__file__}, not from an installed wheel: run pytest from "
            f"outside the checkout, with the checkout off sys.path"
        )
    # Ray binds its node to the machine's address even when told "127.0.0.1", unless
    # clusters are off (its local-only mode). Set before ray is imported, here or in a
    # test's subprocess, so every Ray of the suite talks over loopback only.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


@pytest.fixture(params=list(BACKEND_SETTINGS))
def settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings for `parallel(**settings)`: every local backend and start method."""
    return dict(BACKEND_SETTINGS[request.param])


@pytest.fixture(params=CONCURRENT)
def concurrent_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings of the local backends that run two items at once (all but serial)."""
    return dict(BACKEND_SETTINGS[request.param])


@pytest.fixture(params=PROCESS)
def process_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings of the process backend under each start method."""
    return dict(BACKEND_SETTINGS[request.param])


def _settings_of(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The settings the fixture's parameter names; a cluster's is started first."""
    if request.param in CLUSTER_SETTINGS:
        request.getfixturevalue(CLUSTER_FIXTURES[request.param])
        return dict(CLUSTER_SETTINGS[request.param])
    return dict(BACKEND_SETTINGS[request.param])


@pytest.fixture(params=list(CLUSTER_SETTINGS))
def cluster_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings of the Dask and Ray backends, on their session clusters."""
    return _settings_of(request)


@pytest.fixture(params=[*BACKEND_SETTINGS, *CLUSTER_SETTINGS])
def any_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """`settings`, and the Dask and Ray backends on their session clusters."""
    return _settings_of(request)


@pytest.fixture(params=[*PROCESS, *CLUSTER_SETTINGS])
def pickling_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The backends that pickle items and results: processes and the clusters."""
    return _settings_of(request)


@pytest.fixture(params=[*CONCURRENT, *CLUSTER_SETTINGS])
def any_concurrent_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """`concurrent_settings`, and the Dask and Ray backends on their session clusters."""
    return _settings_of(request)


@pytest.fixture(scope="session")
def dask_client() -> Iterator[Any]:
    """A real `LocalCluster` of worker processes and its `Client`, the active client
    (`distributed.get_client()`) that `backend="dask"` finds; started by the first test
    that needs it, ended with the session.

    Dask re-runs a task whose worker died unless told not to; the cluster that the
    Dask backend starts for itself is told so (our `retries` count instead), and so is
    this one: a killed worker fails its item with `WorkerLostError`.
    """
    import dask
    import distributed

    config = {
        "distributed.scheduler.allowed-failures": 0,
        "distributed.scheduler.worker-saturation": 1.0,
        # A worker that a test killed is restarted by its nanny; on a loaded machine
        # that can take longer than the default 15 s, after which the cluster would
        # give up on it and stay one worker short for the rest of the session.
        "distributed.deploy.lost-worker-timeout": "10 minutes",
    }
    with dask.config.set(config):  # read while the session runs, not only at start
        cluster = distributed.LocalCluster(
            n_workers=CLUSTER_WORKERS,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            # Not the scheduler's default HTTP port, 8787: a second cluster of a test
            # would warn that it is taken. The default host keeps it on loopback.
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        )
        client = distributed.Client(cluster)

        def worker_pids() -> set[int]:
            # Each worker's nanny runs in this process; it restarts a killed worker.
            nannies = list(cluster.workers.values())
            return {nanny.process.pid for nanny in nannies if nanny.process and nanny.process.pid}

        add_cluster(worker_pids)
        try:
            yield client
        finally:
            remove_cluster(worker_pids)
            client.close()
            cluster.close()


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """A local Ray with two CPUs, connected for `backend="ray"`; started by the first
    test that needs it, ended with the session."""
    import ray

    before = {child.pid for child in psutil.Process().children()}
    # Ray's workers are started by its raylet with the environment it had at `init`:
    # they need the package and the tests' helper modules on their path.
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([PACKAGE_ROOT, TESTS_DIR, *filter(None, [saved])])
    try:
        ray.init(
            num_cpus=CLUSTER_WORKERS,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
        )
    finally:
        if saved is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = saved
    # Ray's daemons (gcs_server, raylet, agents) are this process's children now; its
    # worker processes are the raylet's.
    roots = frozenset(child.pid for child in psutil.Process().children()) - before

    def ray_pids() -> frozenset[int]:
        return roots

    add_cluster(ray_pids)
    try:
        yield
    finally:
        remove_cluster(ray_pids)
        ray.shutdown()


@pytest.fixture(autouse=True)
def no_leftovers() -> Iterator[None]:
    """Fail a test that leaves a child process or a parallelize thread behind."""
    threads_before = set(threading.enumerate())
    cluster_pids()  # remember the session clusters' current processes
    yield
    children = wait_for_no_children()
    problems = [f"child process left behind: {describe(child)}" for child in children]
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    psutil.wait_procs(children, timeout=GRACE_SECONDS)
    threads = wait_for_no_extra_threads(threads_before)
    problems += [f"thread left running: {thread!r}" for thread in threads]
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)

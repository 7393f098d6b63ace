"""Thread pools inside workers (API.md section 7, `inner_threads`).

Each worker process limits BLAS and OpenMP to `inner_threads` threads, through the
libraries' variables (for what it loads later) and threadpoolctl (for what is loaded
already: numpy imported by the caller before a fork, or by the main module under
spawn). A variable the user set is kept while `inner_threads` is automatic; the
caller's own environment and pools never change.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from helpers import seen_limits

from parallelize import parallel
from parallelize._cpus import usable_cpus
from parallelize.backends._thread_limits import VARIABLES, worker_limits

np = pytest.importorskip("numpy")
threadpoolctl = pytest.importorskip("threadpoolctl")

pytestmark = pytest.mark.timeout(60)


def automatic(workers: int) -> str:
    return str(max(1, usable_cpus() // workers))


def test_workers_limit_the_pools_to_the_cpus_shared_out(process_settings: dict[str, Any]) -> None:
    """numpy is loaded in this process, so a forked worker inherits its pool: it is
    limited all the same, and so is the one a spawned worker loads."""
    workers = process_settings["workers"]
    before = dict(os.environ)
    caller_pools = threadpoolctl.threadpool_info()
    variables, pools = parallel(**process_settings)(seen_limits)([0])[0]
    assert variables == dict.fromkeys(VARIABLES, automatic(workers))
    assert pools
    assert set(pools) == {int(automatic(workers))}
    assert dict(os.environ) == before  # the caller's own environment and pools
    assert threadpoolctl.threadpool_info() == caller_pools


def test_an_explicit_inner_threads_wins(process_settings: dict[str, Any]) -> None:
    """One worker would get every CPU; `inner_threads=1` gives it one thread."""
    settings = {**process_settings, "workers": 1, "inner_threads": 1}
    variables, pools = parallel(**settings)(seen_limits)([0])[0]
    assert variables == dict.fromkeys(VARIABLES, "1")
    assert set(pools) == {1}


def native_threads_after_a_product(_: int) -> tuple[int, int]:
    """This process's threads after a matrix product, and how many of them are Python's."""
    import threading

    a = np.ones((300, 300))
    a @ a
    return len(os.listdir("/proc/self/task")), threading.active_count()


def exports_thread_controls(path: str) -> bool:
    """Whether the OpenBLAS at `path` exports what a worker uses to start no helper
    thread (numpy 2.4's does; the build numpy 2.5 ships hides both)."""
    import ctypes

    library = ctypes.CDLL(path)
    try:
        ctypes.c_int.in_dll(library, "blas_cpu_number")
    except ValueError:
        return hasattr(library, "blas_thread_shutdown_")
    return True


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc")
def test_a_one_thread_openblas_keeps_no_idle_threads(process_settings: dict[str, Any]) -> None:
    """A forked worker's OpenBLAS starts its pool again when limited, and a new thread
    spins ~0.1 s for work that never comes, taking a CPU from the items; limited to
    one thread, the worker runs no thread but Python's."""
    openblas = [p for p in threadpoolctl.threadpool_info() if p["internal_api"] == "openblas"]
    if not openblas or openblas[0]["num_threads"] < 2:
        pytest.skip("the caller's numpy has no multithreaded OpenBLAS")
    if not exports_thread_controls(openblas[0]["filepath"]):
        pytest.skip("this OpenBLAS build hides blas_cpu_number and blas_thread_shutdown_")
    settings = {**process_settings, "inner_threads": 1}
    for native, python in parallel(**settings)(native_threads_after_a_product)([0, 1]):
        assert native == python


def test_a_limit_the_user_set_is_kept_when_automatic(
    process_settings: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    variables, _ = parallel(**process_settings)(seen_limits)([0])[0]
    assert variables["OMP_NUM_THREADS"] == "5"
    assert variables["OPENBLAS_NUM_THREADS"] == automatic(process_settings["workers"])
    explicit, _ = parallel(**process_settings, inner_threads=2)(seen_limits)([0])[0]
    assert explicit["OMP_NUM_THREADS"] == "2"


def test_a_library_loaded_by_the_item_is_limited(tmp_path: Path) -> None:
    """In a caller that never imported numpy, a spawned worker loads it in the item."""
    script = tmp_path / "caller.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            from parallelize import parallel
            from helpers import seen_limits

            if __name__ == "__main__":
                function = parallel(workers=2, start_method=sys.argv[1])(seen_limits)
                variables, pools = function([0])[0]
                assert "numpy" not in sys.modules
                print(variables["OPENBLAS_NUM_THREADS"], *pools)
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    for method in ("spawn", "forkserver"):
        done = subprocess.run(
            [sys.executable, str(script), method], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert set(done.stdout.split()) == {automatic(2)}, done.stdout


def test_threads_and_serial_change_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    for backend in ("thread", "serial"):
        variables, _ = parallel(backend=backend, inner_threads=1)(seen_limits)([0])[0]
        assert variables["OMP_NUM_THREADS"] is None


def test_automatic_limits_share_the_cpus_out() -> None:
    cpus = usable_cpus()
    assert worker_limits(None, 1, {})["OMP_NUM_THREADS"] == str(cpus)
    assert worker_limits(None, cpus * 4, {})["OMP_NUM_THREADS"] == "1"
    assert worker_limits(None, 1, {"MKL_NUM_THREADS": "7"})["MKL_NUM_THREADS"] == "7"
    assert worker_limits(4, 1, {"MKL_NUM_THREADS": "7"})["MKL_NUM_THREADS"] == "4"


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_inner_threads_must_be_a_positive_int(bad: object) -> None:
    with pytest.raises((TypeError, ValueError), match="inner_threads"):
        parallel(inner_threads=bad)(seen_limits)  # type: ignore[arg-type]

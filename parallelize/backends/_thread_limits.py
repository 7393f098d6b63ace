"""Thread pools of numeric libraries inside worker processes (API.md section 7).

Two workers on two CPUs, each running a BLAS with a thread per CPU, run four busy
threads on two CPUs, and a numpy job gets slower than the serial loop. So each
worker limits BLAS/LAPACK and OpenMP to `inner_threads` threads (automatic: the
usable CPUs shared out between the workers), in two ways:

- the libraries' environment variables, set in the worker before it loads the
  function and its modules: a library loaded from then on reads them;
- `threadpoolctl`, for a library already loaded when the worker starts (inherited
  under fork, or imported with the main module under spawn). Imported only then:
  it costs a worker ~15 ms to import. Under fork the caller imports it and lists
  the loaded libraries before forking, and workers inherit both.

A variable the user set in the caller's environment is kept while `inner_threads`
is automatic, and the matching library's pool follows it. The caller's own environment
and thread pools are never changed: all of this runs in the worker.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

from .._cpus import usable_cpus

__all__ = ["apply_in_worker", "prepare_fork", "worker_limits"]

# Each variable, and the threadpoolctl `internal_api` of the library that reads it.
VARIABLES: dict[str, str | None] = {
    "OMP_NUM_THREADS": "openmp",
    "OPENBLAS_NUM_THREADS": "openblas",
    "MKL_NUM_THREADS": "mkl",
    "BLIS_NUM_THREADS": "blis",
    "VECLIB_MAXIMUM_THREADS": None,  # macOS Accelerate: read at load only
    "NUMEXPR_NUM_THREADS": None,  # numexpr: read at import only
}
# Modules that load a BLAS or OpenMP runtime. None of them in `sys.modules` means no
# such library is loaded yet, and threadpoolctl need not be imported.
LOADERS = ("numpy", "scipy", "torch", "sklearn", "numexpr", "tensorflow", "jax", "cv2")


def worker_limits(
    inner_threads: int | None, workers: int, environ: Mapping[str, str] = os.environ
) -> dict[str, str]:
    """The variables to set in each of `workers` workers, and their values.

    A value the user set is passed on as it is, not left to inheritance: under
    forkserver a worker inherits the fork server's environment, which is as old as
    the fork server.
    """
    if inner_threads is not None:
        return dict.fromkeys(VARIABLES, str(inner_threads))
    threads = str(max(1, usable_cpus() // workers))
    return {name: environ.get(name, threads) for name in VARIABLES}


# The caller's controller of the libraries loaded, and `len(sys.modules)` when it was
# made: a forked worker inherits it (`prepare_fork`).
_controller_before_fork: tuple[int, Any] | None = None


def prepare_fork(limits: Mapping[str, str]) -> None:
    """In the caller, just before a worker is forked: a threadpoolctl controller of the
    libraries loaded now, for the worker to inherit. Made in a forked worker, it
    costs ~1.7 ms of each worker's start; here it is made once, and again only after
    an import (a new module may have loaded another library)."""
    global _controller_before_fork
    if not limits or not any(name in sys.modules for name in LOADERS):
        return
    made = _controller_before_fork
    if made is None or made[0] != len(sys.modules):
        from threadpoolctl import ThreadpoolController

        controller = ThreadpoolController()
        _controller_before_fork = (len(sys.modules), controller)


def apply_in_worker(limits: Mapping[str, str]) -> None:
    """Set `limits` in this worker's environment, and on the pools already loaded."""
    if not limits:
        return
    os.environ.update(limits)
    if not any(name in sys.modules for name in LOADERS):
        return
    if _controller_before_fork is not None:  # forked: the caller's, made at the fork
        controller = _controller_before_fork[1]
    else:
        from threadpoolctl import ThreadpoolController

        controller = ThreadpoolController()
    for name, value in limits.items():
        api = VARIABLES[name]
        if api is None or not value.isdigit() or int(value) < 1:
            continue
        if api == "openblas" and value == "1":
            _one_openblas_thread(controller)
        else:
            controller.select(internal_api=api).limit(limits=int(value))


def _one_openblas_thread(controller: Any) -> None:
    """Limit each OpenBLAS loaded to one thread, starting none.

    In a forked worker OpenBLAS's pool is down (OpenBLAS ends it before a fork), and
    setting its thread count starts it again: a thread per CPU, each spinning ~0.1 s
    for work that one thread never gives it (~65 ms of CPU from each worker's first
    item on a busy machine), and ~1 ms to start and end. So where the pool is down
    (`blas_server_avail` is 0) the count is written in place (`blas_cpu_number`,
    which `openblas_get_num_threads` reads and every routine consults); otherwise it
    is set, and the helper threads are ended with `blas_thread_shutdown_`, what
    OpenBLAS runs before a fork. A later limit above one starts the pool again.
    """
    import ctypes

    for library in controller.select(internal_api="openblas").lib_controllers:
        dynlib = library.dynlib
        try:
            running = ctypes.c_int.in_dll(dynlib, "blas_server_avail").value
            threads = ctypes.c_int.in_dll(dynlib, "blas_cpu_number")
        except ValueError:  # a build that does not export them
            running, threads = 1, None
        if threads is not None and running == 0:
            threads.value = 1
            continue
        library.set_num_threads(1)
        shutdown = getattr(dynlib, "blas_thread_shutdown_", None)
        if shutdown is not None:
            shutdown()

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
        if api is not None and value.isdigit() and int(value) > 0:
            controller.select(internal_api=api).limit(limits=int(value))
    if limits.get("OPENBLAS_NUM_THREADS") == "1":
        _end_openblas_threads(controller)


def _end_openblas_threads(controller: Any) -> None:
    """End OpenBLAS's helper threads when it is limited to one thread.

    In a forked worker, setting OpenBLAS's thread count starts its pool again, and
    each new thread spins for ~0.1 s waiting for work that one thread never gives
    it: on a busy machine that took ~65 ms of CPU from each worker's first item.
    `blas_thread_shutdown_` is what OpenBLAS itself runs before a fork; a later
    limit above one starts the pool again.
    """
    for library in controller.select(internal_api="openblas").lib_controllers:
        shutdown = getattr(library.dynlib, "blas_thread_shutdown_", None)
        if shutdown is not None:
            shutdown()

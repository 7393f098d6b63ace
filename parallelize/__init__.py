"""parallelize: a function of one item becomes a parallel function of many.

from parallelize import parallel

@parallel(workers=5, ordered=False, progress=True)
def download(url): ...

pages = download(urls)
"""

from typing import TYPE_CHECKING, Any

from ._errors import ParallelError, TaskTimeoutError, WorkerLostError

if TYPE_CHECKING:
    from ._decorator import ParallelFunction, parallel
    from ._stats import CallStats

# The one place the version is written: pyproject.toml reads it from here.
__version__ = "0.1.0"

__all__ = [
    "parallel",
    "CallStats",
    "ParallelFunction",
    "ParallelError",
    "TaskTimeoutError",
    "WorkerLostError",
]


def __getattr__(name: str) -> Any:
    # The decorator (and wrapt) load on first use, not on import: a worker process,
    # which imports this package to run its items, never needs them.
    if name in ("parallel", "ParallelFunction"):
        from . import _decorator

        return getattr(_decorator, name)
    if name == "CallStats":
        from ._stats import CallStats

        return CallStats
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

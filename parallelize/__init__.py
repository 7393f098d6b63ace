"""parallelize: a function of one item becomes a parallel function of many.

from parallelize import parallel

@parallel(workers=5, ordered=False, progress=True)
def download(url): ...

pages = download(urls)
"""

from ._decorator import ParallelFunction, parallel
from ._errors import ParallelError, TaskTimeoutError, WorkerLostError

__all__ = [
    "parallel",
    "ParallelFunction",
    "ParallelError",
    "TaskTimeoutError",
    "WorkerLostError",
]

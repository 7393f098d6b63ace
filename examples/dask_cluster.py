"""Scale out with Dask: the same decorated function on a dask.distributed cluster.

Run as is, it starts a local cluster of 2 worker processes. To use a real cluster,
create a client first and parallelize uses it:

    from distributed import Client
    client = Client("tcp://scheduler:8786")   # or pass it: backend=client

Needs: pip install "parallelize[dask]"
"""

import time

from parallelize import parallel


@parallel(workers=2, backend="dask", progress=True)
def slow_square(x: int) -> int:
    """A stand-in for real work: 0.1 s per item."""
    time.sleep(0.1)
    return x * x


if __name__ == "__main__":
    start = time.perf_counter()
    results = slow_square(range(20))
    print(f"dask: {results}")
    print(f"20 items of 0.1 s on 2 Dask workers: {time.perf_counter() - start:.1f} s")
    print("unordered:", slow_square.options(ordered=False)(range(6)))

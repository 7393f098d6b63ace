"""Scale out with Ray: the same decorated function on a Ray cluster.

Run as is, it starts a local Ray instance (`ray.init()`). To use a real cluster,
connect first (`ray.init(address="auto")` on a cluster node) and parallelize uses it.

Needs: pip install "parallelize[ray]"
"""

import time

from parallelize import parallel


@parallel(workers=2, backend="ray", progress=True)
def slow_square(x: int) -> int:
    """A stand-in for real work: 0.1 s per item."""
    time.sleep(0.1)
    return x * x


if __name__ == "__main__":
    start = time.perf_counter()
    results = slow_square(range(20))
    print(f"ray: {results}")
    seconds = time.perf_counter() - start
    print(f"20 items of 0.1 s on 2 Ray workers: {seconds:.1f} s, Ray start-up included")

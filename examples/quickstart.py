"""Quickstart: one slow function over 10 items on 5 worker processes, ordered and unordered.

Item v sleeps (5 - v/2)/10 s, so item 0 is the slowest; each run is timed against a plain loop.
"""

import time
from collections.abc import Callable

from parallelize import parallel


@parallel(workers=5, ordered=True, progress=True)
def nap(v: int) -> int:
    """Sleep (5 - v/2)/10 seconds, then return v: item 0 takes 0.5 s, item 9 takes 0.05 s."""
    time.sleep((5 - v / 2) / 10)
    return v


def serial_loop(items: range) -> list[int]:
    """The plain for loop that @parallel replaces; nap.func is the undecorated function."""
    return [nap.func(v) for v in items]


def timed(run: Callable[[range], list[int]], items: range) -> tuple[list[int], float]:
    """Call run(items); return its results and the wall time in seconds."""
    start = time.perf_counter()
    results = run(items)
    return results, time.perf_counter() - start


if __name__ == "__main__":
    items = range(10)
    serial, serial_s = timed(serial_loop, items)
    print(f"serial:    {serial}  {serial_s:.2f} s")
    for label, run in [("ordered", nap), ("unordered", nap.options(ordered=False))]:
        results, seconds = timed(run, items)
        speedup = serial_s / seconds
        print(
            f"{label + ':':<10} {results}  {seconds:.2f} s"
            f"  ({speedup:.1f}x faster than serial {serial_s:.2f} s)"
        )
    print("ordered=True keeps the input order; ordered=False lists each result as it finishes:")
    print("item 4 (0.3 s) before item 0 (0.5 s); 5-9 last, as they start when a worker frees up.")

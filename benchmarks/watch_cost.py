"""What watching the workers costs the happy path: W1 and W2 with and without it.

Watching is what lets the process backend name the item a dead or stuck worker was
running: the parent waits on each worker's exit watch (a pidfd) beside its result pipe,
and each worker notes in shared memory which item of a chunk it is running. The
unwatched variant switches both off (the parent waits on result pipes only; chunks
run untracked); every other line is the same. Each variant has its own kept-alive
pool, calls alternate between the two (each going first every other time), and the
medians are compared.

    python -m benchmarks.watch_cost [--repeats N]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from multiprocessing import connection
from typing import Any

from parallelize import parallel
from parallelize.backends import process
from parallelize.backends._chunking import ChunkSizer

from . import tasks
from .calibrate import calibrate_spin
from .config import FULL, WORKERS

__all__ = ["main"]


@contextlib.contextmanager
def unwatched() -> Iterator[None]:
    """The process backend with its worker watching switched off."""
    saved_wait, saved_track = process.wait, ChunkSizer.should_track

    def wait_for_pipes_only(objects: Any, timeout: float | None = None) -> Any:
        return connection.wait([o for o in objects if not isinstance(o, int)], timeout)

    process.wait = wait_for_pipes_only  # exit watches are ints; result pipes are not
    ChunkSizer.should_track = lambda self, count: False  # type: ignore[method-assign]
    try:
        yield
    finally:
        process.wait = saved_wait
        ChunkSizer.should_track = saved_track  # type: ignore[method-assign]


def _timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def compare(
    name: str, func: Callable[..., Any], items: list[Any], repeats: int, ordered: bool
) -> tuple[str, float, float]:
    watched = parallel(workers=WORKERS, ordered=ordered, keep_alive=True)(func)
    bare = parallel(workers=WORKERS, ordered=ordered, keep_alive=True)(func)
    warm_up = items[: 2 * WORKERS]
    watched(warm_up)
    with unwatched():
        bare(warm_up)
    times: dict[str, list[float]] = {"watched": [], "unwatched": []}
    try:
        for repeat in range(repeats):  # alternating which goes first cancels drift
            for variant in ("watched", "unwatched") if repeat % 2 else ("unwatched", "watched"):
                if variant == "watched":
                    times[variant].append(_timed(lambda: watched(items)))
                    continue
                with unwatched():
                    times[variant].append(_timed(lambda: bare(items)))
    finally:
        watched.close()
        bare.close()
    return name, statistics.median(times["watched"]), statistics.median(times["unwatched"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15, help="calls per variant (W2: a third)")
    args = parser.parse_args(argv)
    loops, _ = calibrate_spin()
    w1 = list(range(FULL.w1_items))
    w2 = [loops] * FULL.w2_items
    rows = [
        compare("W1 ordered", tasks.square, w1, args.repeats, True),
        compare("W1 unordered", tasks.square, w1, args.repeats, False),
        compare("W2 ordered", tasks.spin, w2, max(3, args.repeats // 3), True),
        compare("W2 unordered", tasks.spin, w2, max(3, args.repeats // 3), False),
    ]
    print("| workload (warm) | watched | unwatched | watched / unwatched |")
    print("|---|---|---|---|")
    for name, watched, bare in rows:
        print(f"| {name} | {watched:.4g} s | {bare:.4g} s | {watched / bare:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

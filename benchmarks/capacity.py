"""How much two cores give here: one process running W2's loop, then two at once.

W2's bar asks 1.9x the serial loop on two cores. That needs the machine to give
two processes nearly twice what it gives one; a virtual machine whose two cores
share a physical core, or whose host is busy, gives less, and no library can do
better than the machine. Each round times the loop alone, then in two processes
started together (behind a barrier), and prints their ratio: 2.00x is two full cores.

    python -m benchmarks.capacity [--rounds N]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
from typing import Any

from .calibrate import calibrate_spin
from .measure import clock
from .tasks import spin

__all__ = ["main", "two_core_ratios"]

ITEMS = 3  # loops of ~40 ms each, per process and round


def _timed_items(loops: int) -> float:
    start = clock()
    for _ in range(ITEMS):
        spin(loops)
    return clock() - start


def _together(loops: int, barrier: Any, results: Any) -> None:
    barrier.wait()
    results.put(_timed_items(loops))


def two_core_ratio(context: Any, loops: int) -> float:
    """One process's time for the items over the slower of two running them at once."""
    alone = _timed_items(loops)
    barrier, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_together, args=(loops, barrier, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    slower = float(max(results.get(), results.get()))
    for worker in workers:
        worker.join()
    return 2 * alone / slower


def two_core_ratios(loops: int, rounds: int) -> list[float]:
    """`rounds` measurements of `two_core_ratio` under fork."""
    context = multiprocessing.get_context("fork")
    return [two_core_ratio(context, loops) for _ in range(rounds)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.capacity")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args(argv)
    loops, seconds = calibrate_spin()
    print(f"{ITEMS} items of {loops:,} loop steps ({seconds * 1000:.0f} ms each) per process")
    ratios = two_core_ratios(loops, args.rounds)
    for number, ratio in enumerate(ratios, 1):
        print(f"round {number:2d}: two processes do {ratio:.2f}x the work of one")
    print(
        f"median {statistics.median(ratios):.2f}x, "
        f"range {min(ratios):.2f}-{max(ratios):.2f}x over {args.rounds} rounds"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Rows of one workload timed in turns inside one process, for differences the noise hides.

A full run times each pair in fresh processes, as BENCHMARKS.md asks; the same
pair's median then moves by 10-20 % from one process to the next. To see a smaller
difference, this times the chosen rows one after the other, repeat after repeat, in
one process (each repeat in a fresh session, exactly as a pair does; the order
reverses every repeat), and prints each row's median and its ratio to the first row.
On W2 it also prints the speedup against serial items timed before and after each
call.

    python -m benchmarks.alternate W4-spawn "parallelize ordered cold,pool_map" [--repeats 20]
"""

from __future__ import annotations

import argparse
import multiprocessing

from .calibrate import calibrate_spin
from .config import FULL
from .measure import median
from .pair import timed_repeat
from .registry import select_implementations
from .session import Setup
from .workloads import WORKLOADS, build_case

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.alternate")
    parser.add_argument("workload", help="one workload id, e.g. W2 or W4-spawn")
    parser.add_argument("impl", help="rows, comma-separated names or prefixes (as --impl)")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    workload = next(w for w in WORKLOADS if w.id == args.workload)
    rows = [i for i in select_implementations(args.impl.split(",")) if workload.id in i.workloads]
    if workload.start_method is not None:
        multiprocessing.set_start_method(workload.start_method, force=True)
    loops = calibrate_spin()[0] if workload.id == "W2" else 0
    case = build_case(workload, FULL, loops)
    setup = Setup(case.func, workload.workers, workload.start_method, shared=case.shared)
    times: dict[str, list[float]] = {row.name: [] for row in rows}
    speedups: dict[str, list[float]] = {row.name: [] for row in rows}
    for repeat in range(args.repeats):
        for row in rows if repeat % 2 == 0 else rows[::-1]:
            run = timed_repeat(row, workload, case, setup)
            times[row.name].append(run["seconds"])
            if "serial_reference" in run:
                speedups[row.name].append(run["serial_reference"] / run["seconds"])
    first = median(times[rows[0].name])
    for row in rows:
        middle = median(times[row.name])
        text = f"{row.name:<30} {middle * 1000:9.2f} ms  {middle / first:.3f}x {rows[0].name}"
        if speedups[row.name]:
            text += f"  {median(speedups[row.name]):.2f}x serial"
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The command line: choose pairs, run each in a fresh process, report and save.

python benchmarks/run.py                 # full run -> results/latest.{json,md,png}
python benchmarks/run.py --quick         # one repeat, small inputs -> results/quick.*
python benchmarks/run.py --rounds 3      # the compared rows in 3 rounds instead of 5
python benchmarks/run.py --only W1,W3 --impl parallelize,pool_map   # -> results/partial.*
"""

from __future__ import annotations

import argparse
import compileall
import dataclasses
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from .bar import check_bar
from .calibrate import calibrate_spin
from .capacity import two_core_ratios
from .chart import draw_chart
from .config import FULL, QUICK
from .machine import machine_info, tree_digest
from .measure import clock
from .orchestrate import REPO
from .registry import select_implementations
from .report import markdown_report
from .results import RunResults
from .schedule import run_pairs
from .workloads import select_workloads, w3_ideal_seconds

__all__ = ["main"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# A full run measures what two cores give over one (benchmarks/capacity.py) this many
# times before its first pair and after its last, for reading W2's speedup.
CAPACITY_ROUNDS = 5


def _split(value: str | None) -> list[str] | None:
    return value.split(",") if value else None


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/run.py",
        description="parallelize against its peers on the workloads of BENCHMARKS.md.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="one repeat, smaller inputs (under a minute)"
    )
    parser.add_argument("--only", metavar="W1,W3", help="workloads to run (W4 = fork and spawn)")
    parser.add_argument(
        "--impl", metavar="parallelize,pool_map", help="rows to run, by name or name prefix"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        metavar="N",
        help="rounds of the compared rows (default: 5 for a full run, 1 for --quick)",
    )
    parser.add_argument(
        "--no-retry",
        action="store_true",
        help="neither wait for a quiet machine before each pair nor run again "
        "the pairs that other work on the machine disturbed",
    )
    parser.add_argument(
        "--name",
        help="results file name (default: latest for a full run of everything, "
        "quick for --quick, partial for a filtered run)",
    )
    return parser.parse_args(argv)


def compile_checkout() -> None:
    """Write this checkout's bytecode, as installing a package does.

    Under PYTHONDONTWRITEBYTECODE (or a read-only tree) nothing else writes it, and
    every spawned worker would compile the package and `benchmarks/` from source:
    a cost the peers, installed with their bytecode, never pay.
    """
    for directory in ("parallelize", "benchmarks"):
        compileall.compile_dir(str(REPO / directory), quiet=1)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    mode = QUICK if args.quick else FULL
    if args.rounds is not None:
        if args.rounds < 1:
            raise SystemExit(f"--rounds must be 1 or more, got {args.rounds}")
        mode = dataclasses.replace(mode, rounds=args.rounds)
    workloads = select_workloads(_split(args.only))
    implementations = select_implementations(_split(args.impl))
    trimmed = args.quick and not args.impl  # --quick's smaller set of pairs (see registry)
    pairs = [
        (w, i)
        for w in workloads
        for i in implementations
        if i.runs(w.id, quick=trimmed) and not (trimmed and w.quick_ours_only and not i.ours)
    ]
    if not pairs:
        raise SystemExit("no implementation runs the selected workloads")
    filtered = bool(args.only or args.impl)
    name = args.name or ("quick" if args.quick else "partial" if filtered else "latest")

    began = clock()
    compile_checkout()
    machine = machine_info()
    code_before = tree_digest()
    calibration: dict[str, Any] = {}
    if any(w.id == "W2" for w, _ in pairs):
        loops, seconds = calibrate_spin()
        calibration = {"w2_loops": loops, "w2_item_seconds": seconds}
        if not args.quick:
            calibration["two_core_ratios_before"] = two_core_ratios(loops, CAPACITY_ROUNDS)
        print(f"W2: {loops:,} loop steps take {seconds * 1000:.1f} ms here", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="parallelize-bench-") as workdir:
        w2_loops = calibration.get("w2_loops", 0)
        retry = not args.quick and not args.no_retry
        records = run_pairs(pairs, mode, w2_loops, Path(workdir), retry_disturbed=retry)
    if "two_core_ratios_before" in calibration:
        calibration["two_core_ratios_after"] = two_core_ratios(w2_loops, CAPACITY_ROUNDS)

    used_workloads = [w.id for w in workloads if any(r["workload"] == w.id for r in records)]
    used_rows = [
        i.name for i in implementations if any(r["implementation"] == i.name for r in records)
    ]
    run: dict[str, Any] = {
        "mode": mode.name,
        "command": " ".join(
            ["python benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "machine": machine,
        "settings": dataclasses.asdict(mode),
        "calibration": calibration,
        "workloads": used_workloads,
        "implementations": used_rows,
        "pairs": records,
    }
    results = RunResults(run)
    bar = check_bar(results, w3_ideal_seconds(mode))
    run["bar"] = [
        {
            "line": line.line,
            "verdict": line.verdict,
            "checks": [dataclasses.asdict(c) for c in line.checks],
        }
        for line in bar
    ]
    run["total_seconds"] = clock() - began
    if tree_digest() != code_before:  # someone edited parallelize/ while it was measured
        run["warning"] = "parallelize/ changed on disk during the run: pairs ran different code"
    report = markdown_report(results, bar)
    print(report)

    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / f"{name}.json").write_text(json.dumps(run, indent=1) + "\n")
    (RESULTS_DIR / f"{name}.md").write_text(report)
    draw_chart(results, RESULTS_DIR / f"{name}.png")
    print(
        f"Saved benchmarks/results/{name}.json, .md and .png "
        f"({run['total_seconds']:.0f} s in all).",
        file=sys.stderr,
    )
    ours = {i.name for i in implementations if i.ours}
    broken = [r for r in records if r["implementation"] in ours and r["status"] != "ok"]
    for record in broken:  # a peer may fail (BENCHMARKS.md expects some to); we may not
        print(f"{record['implementation']} on {record['workload']}: {record['status']}")
    return 1 if broken else 0

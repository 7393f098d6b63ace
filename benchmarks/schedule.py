"""Runs the chosen pairs in rounds, waiting for a quiet machine, retrying disturbed ones.

The machine is shared: while a pair runs, other processes (or other guests of the
hypervisor) may take a core, and its times then say little. In a full run each
pair first waits (a bounded while) for the machine to be quiet, and each pair that
ran while other work took more than `NOISY_CORES` anyway is run a second time at the
end of the first round; the quieter of its two runs is kept (both are in the JSON).

The machine's speed also drifts over minutes, which no noise meter sees: two rows
measured ten minutes apart can differ by more than the margins the bar judges. So
the pairs the bar compares (the parallelize rows, the references it holds them to,
such as dask's own `client.map`, and the peers within `CONTENDER_SPREAD` of the
fastest peer in the first round) run again in later rounds, in alternating order,
each in a fresh process; their times are pooled over the rounds, so compared rows
are measured across the same stretch of the run.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import Mode
from .measure import clock, median, paired_ratio
from .noise import NOISY_CORES, CpuSnapshot, foreign_cores, wait_for_quiet
from .orchestrate import run_in_fresh_process
from .registry import Implementation
from .results import is_peer
from .workloads import Workload

__all__ = ["run_pairs"]

Pair = tuple[Workload, Implementation]

# Before a pair, wait at most this long for other work to stop; over the whole run,
# at most RUN_QUIET_WAIT_SECONDS, so a machine that never quiets down costs minutes,
# not hours.
PAIR_QUIET_WAIT_SECONDS = 20.0
RUN_QUIET_WAIT_SECONDS = 600.0
# A peer more than this many times slower than the fastest peer in the first round
# is not run again: it cannot become the fastest peer by drift alone.
CONTENDER_SPREAD = 1.5
# Per-repeat measures pooled over the rounds, beside "times".
POOLED = (
    "times",
    "plain_times",
    "rss_growth_mib",
    "read_ahead",
    "serial_reference",
    "memory_added",
    "memory_growth_mib",
    "memory_start_up_mib",
)


def _summary(result: dict[str, Any]) -> str:
    if result["status"] != "ok":
        return f"{result['status']}: {result['error']}"
    text = f"{result['median']:.4g} s median of {len(result['times'])}"
    if "rss_growth_mib" in result:
        text += f", +{max(result['rss_growth_mib']):.1f} MiB RSS"
    if "read_ahead" in result:
        text += f", {max(result['read_ahead']):,} read ahead"
    if "memory_added" in result:
        text += f", adds {max(result['memory_added']):.2f}x the table"
    if "progress_ratio" in result:
        text += f", {result['progress_ratio']:.3f}x without the bar"
    return text


class _QuietGate:
    """Waits for a quiet machine before each pair, within the run's waiting budget."""

    def __init__(self, enabled: bool) -> None:
        self.budget = RUN_QUIET_WAIT_SECONDS if enabled else 0.0

    def wait(self) -> float:
        if self.budget <= 0:
            return 0.0
        waited = wait_for_quiet(min(PAIR_QUIET_WAIT_SECONDS, self.budget))
        self.budget -= waited
        return waited


def _run_one(
    pair: Pair, mode: Mode, w2_loops: int, workdir: Path, tag: str, gate: _QuietGate
) -> dict[str, Any]:
    workload, implementation = pair
    waited = gate.wait()
    spec = {
        "implementation": implementation.name,
        "workload": workload.id,
        "mode": dataclasses.asdict(mode),
        "w2_loops": w2_loops,
    }
    before = CpuSnapshot.take()
    started = clock()
    result = run_in_fresh_process(spec, mode.pair_time_limit, workdir, tag)
    wall = clock() - started
    return {
        "implementation": implementation.name,
        "workload": workload.id,
        **result,
        "wall_seconds": wall,
        "foreign_cores": foreign_cores(before, CpuSnapshot.take(), wall),
        "waited_for_quiet_seconds": waited,
    }


def _report(label: str, record: dict[str, Any]) -> None:
    foreign = record["foreign_cores"]
    noise = f", other work {foreign:.2f} cores" if foreign is not None else ""
    print(
        f"[{label}] {record['workload']:<8} {record['implementation']:<28} "
        f"{_summary(record)}  ({record['wall_seconds']:.1f} s{noise})",
        file=sys.stderr,
        flush=True,
    )


def _disturbed(record: dict[str, Any]) -> bool:
    return record["status"] != "FAIL" and (record["foreign_cores"] or 0.0) > NOISY_CORES


def run_pairs(
    pairs: Sequence[Pair], mode: Mode, w2_loops: int, workdir: Path, *, retry_disturbed: bool
) -> list[dict[str, Any]]:
    """The result record of every pair, each run in a fresh process, over `mode.rounds`."""
    gate = _QuietGate(retry_disturbed)
    records = _first_round(pairs, mode, w2_loops, workdir, gate, retry_disturbed)
    contenders = _contenders(pairs, records)
    rounds: dict[int, list[dict[str, Any]]] = {n: [records[n]] for n in contenders}
    for round_number in range(2, mode.rounds + 1):
        order = contenders if round_number % 2 else contenders[::-1]
        for count, n in enumerate(order, 1):
            record = _run_one(pairs[n], mode, w2_loops, workdir, f"r{round_number}-{n}", gate)
            _report(f"round {round_number} {count:2d}/{len(order)}", record)
            rounds[n].append(record)
    for n, runs in rounds.items():
        if len(runs) > 1:
            records[n] = _pooled(runs)
    return records


def _first_round(
    pairs: Sequence[Pair],
    mode: Mode,
    w2_loops: int,
    workdir: Path,
    gate: _QuietGate,
    retry_disturbed: bool,
) -> list[dict[str, Any]]:
    records = []
    for number, pair in enumerate(pairs, 1):
        record = _run_one(pair, mode, w2_loops, workdir, f"{number}", gate)
        _report(f"{number:3d}/{len(pairs)}", record)
        records.append(record)
    if not retry_disturbed:
        return records
    disturbed = [n for n, record in enumerate(records) if _disturbed(record)]
    for count, n in enumerate(disturbed, 1):
        first = records[n]
        again = _run_one(pairs[n], mode, w2_loops, workdir, f"again-{n}", gate)
        _report(f"again {count}/{len(disturbed)}", again)
        quieter, other = (again, first) if _quieter(again, first) else (first, again)
        quieter["other_run"] = {k: v for k, v in other.items() if k != "other_run"}
        records[n] = quieter
    return records


def _contenders(pairs: Sequence[Pair], records: list[dict[str, Any]]) -> list[int]:
    """Indexes of the pairs the bar compares, in run order."""
    fastest: dict[str, float] = {}
    for (workload, implementation), record in zip(pairs, records, strict=True):
        if is_peer(implementation.name) and record["status"] == "ok":
            best = fastest.get(workload.id, record["median"])
            fastest[workload.id] = min(best, record["median"])
    chosen = []
    for n, ((workload, implementation), record) in enumerate(zip(pairs, records, strict=True)):
        contends = (
            is_peer(implementation.name)
            and record["status"] == "ok"
            and record["median"] <= CONTENDER_SPREAD * fastest[workload.id]
        )
        if contends or implementation.ours or implementation.reference:
            chosen.append(n)
    return chosen


def _pooled(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One record for a pair run in several rounds: every round's repeats together.

    A round that failed makes the pair fail (a wrong answer is never outvoted); rounds
    that other work disturbed are left out unless every round was.
    """
    summaries = [
        {k: v for k, v in run.items() if k not in ("implementation", "workload", "other_run")}
        for run in runs
    ]
    failed = [run for run in runs if run["status"] != "ok"]
    if failed:
        return {**failed[0], "rounds": summaries}
    quiet = [run for run in runs if not _disturbed(run)] or runs
    pooled = dict(quiet[0])
    for key in POOLED:
        if key in pooled:
            pooled[key] = [value for run in quiet for value in run[key]]
    pooled["median"] = median(pooled["times"])
    if "plain_times" in pooled:
        pooled["plain_median"] = median(pooled["plain_times"])
        pooled["progress_ratio"] = paired_ratio(pooled["times"], pooled["plain_times"])
    pooled["wall_seconds"] = sum(run["wall_seconds"] for run in runs)
    shares = [run["foreign_cores"] for run in quiet if run["foreign_cores"] is not None]
    pooled["foreign_cores"] = max(shares) if shares else None
    pooled["rounds"] = summaries
    return pooled


def _quieter(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether run `a` was less disturbed than run `b` (a run with a result wins)."""
    if (a["status"] == "ok") != (b["status"] == "ok"):
        return bool(a["status"] == "ok")
    return float(a["foreign_cores"] or 0.0) < float(b["foreign_cores"] or 0.0)

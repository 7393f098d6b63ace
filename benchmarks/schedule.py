"""Runs the chosen pairs one after another, then once more those other work disturbed.

The machine is shared: while a pair runs, other processes (or other guests of the
hypervisor) may take a core, and its times then say little. In a full run each
pair first waits (a bounded while) for the machine to be quiet, and each pair that
ran while other work took more than `NOISY_CORES` anyway is run a second time at the
end; the quieter of its two runs is kept (both are in the JSON).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import Mode
from .measure import clock
from .noise import NOISY_CORES, CpuSnapshot, foreign_cores, wait_for_quiet
from .orchestrate import run_in_fresh_process
from .registry import Implementation
from .workloads import Workload

__all__ = ["run_pairs"]

Pair = tuple[Workload, Implementation]

# Before a pair, wait at most this long for other work to stop; over the whole run,
# at most RUN_QUIET_WAIT_SECONDS, so a machine that never quiets down costs minutes,
# not hours.
PAIR_QUIET_WAIT_SECONDS = 20.0
RUN_QUIET_WAIT_SECONDS = 600.0


def _summary(result: dict[str, Any]) -> str:
    if result["status"] != "ok":
        return f"{result['status']}: {result['error']}"
    text = f"{result['median']:.4g} s median of {len(result['times'])}"
    if "rss_growth_mib" in result:
        text += f", +{max(result['rss_growth_mib']):.1f} MiB RSS"
    if "read_ahead" in result:
        text += f", {max(result['read_ahead']):,} read ahead"
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
    """The result record of every pair, each run in a fresh process."""
    gate = _QuietGate(retry_disturbed)
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


def _quieter(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether run `a` was less disturbed than run `b` (a run with a result wins)."""
    if (a["status"] == "ok") != (b["status"] == "ok"):
        return bool(a["status"] == "ok")
    return float(a["foreign_cores"] or 0.0) < float(b["foreign_cores"] or 0.0)

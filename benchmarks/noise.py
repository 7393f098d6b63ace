"""How much of the machine other work took while a pair ran (Linux /proc/stat).

The machine's busy CPU time over the pair, minus the CPU time of the pair's own
processes (they are reaped children of the runner, so `RUSAGE_CHILDREN` has them),
plus the time the hypervisor gave to other guests (steal), over the wall time: the
cores' worth of CPU that this pair did not get to use. Elsewhere it reads as None.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import time
from pathlib import Path

__all__ = ["NOISY_CORES", "CpuSnapshot", "foreign_cores", "wait_for_quiet"]

# A pair during which other work took more than this many cores is "disturbed": a
# full run runs it again, and the report marks it "~".
NOISY_CORES = 0.25

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclasses.dataclass(frozen=True)
class CpuSnapshot:
    busy: float  # seconds of CPU the machine spent on any process
    steal: float  # seconds the hypervisor ran other guests
    own: float  # seconds of CPU of this process's reaped children

    @classmethod
    def take(cls) -> CpuSnapshot | None:
        try:
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        except OSError:
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return cls(
            busy=(user + nice + system + irq + softirq) / TICKS,
            steal=steal / TICKS,
            own=children.ru_utime + children.ru_stime,
        )


def foreign_cores(
    before: CpuSnapshot | None, after: CpuSnapshot | None, wall: float
) -> float | None:
    """Cores' worth of CPU taken by other work (other processes, other guests) meanwhile."""
    if before is None or after is None or wall <= 0:
        return None
    others = (after.busy - before.busy) - (after.own - before.own)
    steal = after.steal - before.steal
    return max(0.0, others + steal) / wall


def wait_for_quiet(max_seconds: float, sample_seconds: float = 1.0) -> float:
    """Wait until other work takes at most `NOISY_CORES` (between pairs, all CPU use is
    other work), or `max_seconds` have passed; return the seconds waited."""
    waited = 0.0
    while waited < max_seconds:
        before = CpuSnapshot.take()
        time.sleep(sample_seconds)
        after = CpuSnapshot.take()
        if before is None or after is None:
            return waited
        waited += sample_seconds
        busy = (after.busy - before.busy) + (after.steal - before.steal)
        if busy / sample_seconds <= NOISY_CORES:
            return waited
    return waited

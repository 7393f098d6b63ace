"""Sizes, repeats and limits of a run, for the full and the --quick mode (BENCHMARKS.md)."""

from __future__ import annotations

import dataclasses

__all__ = ["FULL", "QUICK", "STREAM_CHUNKSIZE", "W9_TINY_TABLE_BYTES", "WORKERS", "Mode"]

# BENCHMARKS.md: workers=2 everywhere except W3, which asks for 5.
WORKERS = 2
W3_WORKERS = 5
# W2's item should take this long serially; the loop count is calibrated once per run.
W2_ITEM_SECONDS = 0.040
# W6 and W6s: peers that need a chunk size on an input without a length get the one
# parallelize caps itself at there (its UNKNOWN_LENGTH_CHUNK_CAP), so the columns
# compare scheduling and read-ahead rather than chunk sizes. Pool.imap's default of 1
# would make it ~100x slower, which no one streaming 2,000,000 items would accept.
STREAM_CHUNKSIZE = 512
# W6s: the consumer sleeps this long every this many results.
SLOW_CONSUMER_SLEEP = 0.001
SLOW_CONSUMER_EVERY = 256
# W6: how often the memory sampler reads the parent's RSS.
RSS_SAMPLE_SECONDS = 0.005
# W9: how often the memory sampler reads /proc/meminfo (a read costs ~20 us).
MEMINFO_SAMPLE_SECONDS = 0.002
# W9: the table of the baseline run, which measures the workers' own start-up (1,024
# float64: under the 1 MiB from which parallelize shares an argument instead of
# sending it).
W9_TINY_TABLE_BYTES = 8 * 1024


@dataclasses.dataclass(frozen=True)
class Mode:
    """Everything that differs between the full run and --quick."""

    name: str
    w1_items: int
    w2_items: int
    w3_quick_sleeps: bool  # True: W3 runs `sleep_item_short` (sleeps scaled down)
    w4_items: int
    w5_arrays: int
    w5_array_bytes: int
    w6_items: int
    w6_small_items: int  # W6 with 10x fewer items: RSS growth must not scale with input
    w6s_items: int
    w8_items: int  # W8: matrices squared (each item's size is fixed in tasks.py)
    w9_items: int
    w9_table_bytes: int  # W9: the float64 table passed to every item
    # Repeats per pair: the median is reported. W7 times both sides this many times.
    repeats: int
    slow_repeats: int  # for W2, W3, W6, W6s, whose single call takes seconds
    w7_repeats: int
    # Rounds: the first runs every pair; each later one runs again only the pairs the
    # bar compares (see schedule.py), in alternating order, so compared rows share the
    # machine's drift. A pair's median is over the repeats of all its rounds.
    rounds: int
    pair_time_limit: float  # seconds; past it the pair's process group is killed


FULL = Mode(
    name="full",
    w1_items=100_000,
    w2_items=48,
    w3_quick_sleeps=False,
    w4_items=10,
    w5_arrays=24,
    w5_array_bytes=4 * 1024 * 1024,
    w6_items=2_000_000,
    w6_small_items=200_000,
    w6s_items=300_000,
    w8_items=32,
    w9_items=200,
    w9_table_bytes=200_000_000,
    repeats=5,
    slow_repeats=3,
    w7_repeats=25,
    rounds=5,
    pair_time_limit=120.0,
)

QUICK = Mode(
    name="quick",
    w1_items=2_000,
    w2_items=4,
    w3_quick_sleeps=True,
    w4_items=10,
    w5_arrays=4,
    w5_array_bytes=1024 * 1024,
    w6_items=50_000,
    w6_small_items=5_000,
    w6s_items=10_000,
    w8_items=4,
    # W9 with a tenth of the table, on parallelize rows only (workloads.py): a smoke test
    # of the call and of the two memory runs.
    w9_items=200,
    w9_table_bytes=20_000_000,
    repeats=1,
    slow_repeats=1,
    w7_repeats=1,
    rounds=1,
    pair_time_limit=20.0,
)

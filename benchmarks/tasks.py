"""The per-item functions the workloads run, in a module every worker can import.

They live here, not in the runner, so `spawn` workers find them by name. This module
imports nothing heavy: every worker process of every implementation imports it.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = [
    "array_sum",
    "identity",
    "matrix_rounds",
    "sleep_item",
    "sleep_item_short",
    "spin",
    "square",
    "store_table",
    "stored_table_sum",
    "table_first_sum",
    "table_sum",
]

# W3: item v sleeps `SLEEP_BASE - v * SLEEP_STEP` seconds (0.5 s down to 0.05 s).
SLEEP_BASE = 0.5
SLEEP_STEP = 0.05
# --quick runs W3 with every sleep scaled by this, to fit the 60 s budget.
QUICK_SLEEP_SCALE = 0.1
# W8: each item squares a matrix of this side this many times. OpenBLAS runs every
# product of this size on all its threads (one a core), so workers that leave it alone
# run more busy threads than there are cores.
MATRIX_SIDE = 300
MATRIX_ROUNDS = 30
# W9: each item sums this many values of the table, at one of this many offsets spread
# from its start to its end.
TABLE_SLICE = 1000
TABLE_OFFSETS = 200

# W9's by-hand initializer keeps the table here, in each worker (`store_table`).
_stored_table: Any = None


def square(x: int) -> int:
    """W1, W4, W7: the smallest useful item (per-item overhead dominates)."""
    return x * x


def spin(loops: int) -> int:
    """W2: a pure-Python loop of `loops` steps; returns `loops * (loops - 1) // 2`."""
    total = 0
    for i in range(loops):
        total += i
    return total


def sleep_item(v: int) -> int:
    """W3: item `v` sleeps `0.5 - 0.05 v` seconds, so items are uneven."""
    time.sleep(SLEEP_BASE - v * SLEEP_STEP)
    return v


def sleep_item_short(v: int) -> int:
    """W3 under --quick: `sleep_item` with every sleep scaled by `QUICK_SLEEP_SCALE`."""
    time.sleep((SLEEP_BASE - v * SLEEP_STEP) * QUICK_SLEEP_SCALE)
    return v


def array_sum(array: Any) -> float:
    """W5: a numpy array in, one float out: the cost is moving the array."""
    return float(array.sum())


def identity(x: int) -> int:
    """W6, W6s: nothing but the round trip of each item."""
    return x


def matrix_rounds(seed: int) -> float:
    """W8: `a = a @ a`, then rescaled, 30 times on a 300x300 float64 matrix made from `seed`.

    The item is a seed, not the matrix, so W8 measures BLAS threads and not the
    transfer W5 measures: building the matrix here takes about a millisecond. Dividing
    by the largest entry after each product keeps the entries away from overflow and
    denormals, so every round costs the same; the result converges to a rank-one
    matrix, whose trace the item returns.
    """
    import numpy as np

    a = np.random.default_rng(seed).random((MATRIX_SIDE, MATRIX_SIDE))
    for _ in range(MATRIX_ROUNDS):
        a = a @ a
        a /= np.abs(a).max()
    return float(a.trace())


def table_sum(i: int, table: Any) -> float:
    """W9: the sum of 1,000 values of `table` at the offset item `i` picks.

    Offsets are spread over the whole table, so a worker that copied only part of it
    would not do; a table of fewer than 1,000 values is summed whole.
    """
    offset = (i % TABLE_OFFSETS) * max(len(table) - TABLE_SLICE, 0) // (TABLE_OFFSETS - 1)
    return float(table[offset : offset + TABLE_SLICE].sum())


def table_first_sum(table: Any, i: int) -> float:
    """W9 on mpire, which passes its `shared_objects` before the item: `table_sum`."""
    return table_sum(i, table)


def store_table(table: Any) -> None:
    """W9's by-hand `Pool(initializer=store_table, initargs=(table,))`: keep the table."""
    global _stored_table
    _stored_table = table


def stored_table_sum(i: int) -> float:
    """W9 on the by-hand initializer: `table_sum` of the table `store_table` kept."""
    return table_sum(i, _stored_table)

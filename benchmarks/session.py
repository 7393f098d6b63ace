"""The one protocol every row of the table implements, so a pair runs any of them alike.

A session is one implementation set up for one workload. Building it imports the
library (never timed); `open` does what the timing rules keep off the clock (create a
peer's pool; a warm parallelize function's first call); `map` or `stream` is the
timed call; `close` shuts down what `open` made. W4 and W9 time all three together
(except W9 on clusters, and warm parallelize rows, whose pools already run).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

__all__ = ["Session", "Setup", "mp_context", "pool_map_chunksize"]


@dataclasses.dataclass(frozen=True)
class Setup:
    """What every session is built from."""

    func: Callable[..., Any]
    workers: int
    start_method: str | None  # None: the platform default
    progress: bool = False  # parallelize only: a bar written to a null stream
    # W9: the extra argument every item gets, `func(x, shared)` (None: W1-W8, `func(x)`).
    shared: Any = None


class Session(Protocol):
    """One implementation, ready to run one workload's calls."""

    ordered: bool  # False: results are compared with the answer as a multiset

    def open(self, items: Sequence[Any]) -> None:
        """Untimed set-up before a call over `items` (W4: timed with the call)."""

    def map(self, items: Sequence[Any]) -> list[Any]:
        """The timed call: every result, as a list."""

    def stream(self, items: Iterable[Any]) -> Iterator[Any]:
        """The timed streaming call: results lazily, drawing from `items` as it goes."""

    def close(self) -> None:
        """Untimed shut-down of what `open` created (W4: timed)."""


def mp_context(start_method: str | None) -> Any:
    """The multiprocessing context for `start_method` (None: the default one)."""
    return multiprocessing.get_context(start_method)


def pool_map_chunksize(length: int, workers: int) -> int:
    """The chunk size `multiprocessing.Pool.map` picks for `length` items: 4 chunks a worker."""
    chunksize, extra = divmod(length, workers * 4)
    return max(1, chunksize + (1 if extra else 0))

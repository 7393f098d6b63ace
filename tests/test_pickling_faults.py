"""Pickling that hangs or calls `sys.exit()` (API.md section 5), on every backend that
pickles: processes under each start method, Dask and Ray.

`timeout` covers sending a result back, so a result whose pickling hangs fails its
item with `TaskTimeoutError`; a `__reduce__` that calls `sys.exit()`, in the caller
(an item) or in a worker (a result), fails only that item and never ends the call.
"""

from __future__ import annotations

import pickle
import sys
import time
from pathlib import Path
from typing import Any

import faults
import pytest
from helpers import wait_for_path

from parallelize import TaskTimeoutError, parallel

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 0.5
BOUND_SECONDS = 10.0  # far less than the pickling would hang for (helpers.GATE_SECONDS)


class SlowToPickle:
    """A result whose pickling blocks until the file `gate` exists."""

    def __init__(self, gate: str) -> None:
        self.gate = gate

    def __reduce__(self) -> tuple[Any, ...]:
        wait_for_path(self.gate)
        return (SlowToPickle, (self.gate,))


def slow_to_pickle_on(x: int, bad: int, gate: str) -> Any:
    return SlowToPickle(gate) if x == bad else x


def test_a_result_whose_pickling_hangs_times_out(
    pickling_settings: dict[str, Any], tmp_path: Path
) -> None:
    """`timeout` covers sending the result back: its item fails, within the bound."""
    gate = str(tmp_path / "gate")
    function = parallel(**pickling_settings, timeout=TIMEOUT, errors="return")(slow_to_pickle_on)
    try:
        began = time.monotonic()
        results = function(range(4), 1, gate)
        assert time.monotonic() - began < BOUND_SECONDS
    finally:
        Path(gate).touch()
    assert type(results[1]) is TaskTimeoutError, results
    assert [results[i] for i in (0, 2, 3)] == [0, 2, 3]


def test_a_hanging_pickling_in_a_chunk_fails_only_its_item(
    pickling_settings: dict[str, Any], tmp_path: Path
) -> None:
    """Chunks of 4: the results of item 5's chunk are pickled together, yet only item
    5 fails; the others of its chunk, run again if need be, give their results."""
    gate = str(tmp_path / "gate")
    settings = {**pickling_settings, "chunksize": 4, "timeout": TIMEOUT, "errors": "return"}
    function = parallel(**settings)(slow_to_pickle_on)
    try:
        results = function(range(8), 5, gate)
    finally:
        Path(gate).touch()
    assert type(results[5]) is TaskTimeoutError, results
    assert [results[i] for i in range(8) if i != 5] == [0, 1, 2, 3, 4, 6, 7]


class ExitsWhenPickled:
    """Its `__reduce__` calls `sys.exit()`: in the caller as an item, in a worker as a result."""

    def __reduce__(self) -> tuple[Any, ...]:
        sys.exit(faults.EXIT_CODE)


def exits_when_pickled_on(x: Any, bad: int) -> Any:
    return ExitsWhenPickled() if x == bad else x


def test_a_reduce_calling_sys_exit_fails_only_its_item(pickling_settings: dict[str, Any]) -> None:
    function = parallel(**pickling_settings, errors="return")(exits_when_pickled_on)
    as_result = function(range(4), 2)
    as_item = function([0, 1, ExitsWhenPickled(), 3], -1)
    for results in (as_result, as_item):
        assert isinstance(results[2], (pickle.PicklingError, TypeError)), results
        assert "SystemExit" in str(results[2])
        assert [results[i] for i in (0, 1, 3)] == [0, 1, 3]
    with pytest.raises(pickle.PicklingError):
        parallel(**pickling_settings)(exits_when_pickled_on)(range(4), 2)

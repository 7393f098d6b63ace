"""Static typing of the public API, checked by `mypy --strict` in CI (and run by pytest)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator

from parallelize import CallStats, ParallelFunction, parallel

if sys.version_info >= (3, 11):
    from typing import assert_type
else:
    from typing_extensions import assert_type


@parallel
def to_text(x: int) -> str:
    return str(x)


@parallel(workers=2, backend="serial")
def scaled(x: int, factor: float, *, offset: float = 0.0) -> float:
    return x * factor + offset


def test_decorated_function_types() -> None:
    assert_type(to_text, ParallelFunction[int, [], str])
    assert_type(to_text([1, 2]), list[str])
    assert_type(to_text.iter([1, 2]), Iterator[str])
    assert_type(to_text.func, Callable[[int], str])
    assert_type(to_text.options(ordered=False), ParallelFunction[int, [], str])
    assert to_text.options(backend="serial")([1, 2]) == ["1", "2"]


def test_stats_are_typed() -> None:
    assert_type(scaled.stats, CallStats | None)
    scaled([1, 2], 2.0)
    stats = scaled.stats
    assert stats is not None
    assert_type(stats.items, int)
    assert_type(stats.slowest, tuple[tuple[int, float], ...])
    assert sum(worker.items for worker in stats.per_worker) == 2


def test_extra_arguments_keep_their_types() -> None:
    assert_type(scaled([1, 2], 2.0, offset=1.0), list[float])
    assert scaled([1, 2], 2.0, offset=1.0) == [3.0, 5.0]


@parallel(star=True, backend="serial")
def area(width: int, height: int) -> int:
    return width * height


def test_star_functions_take_tuples() -> None:
    assert_type(area([(2, 3), (4, 5)]), list[int])
    assert area([(2, 3), (4, 5)]) == [6, 20]

"""API.md section 5, `errors="raise"` and `errors="return"`, on every backend."""

from __future__ import annotations

import time
import traceback
from typing import Any

import helpers
import pytest

from parallelize import parallel

ITEMS = ["a", "b", "c", "boom", "e"]


def notes(exc: BaseException) -> list[str]:
    return list(getattr(exc, "__notes__", []))


def test_raise_keeps_the_type_and_names_the_item(any_settings: dict[str, Any]) -> None:
    fail_on = parallel(**any_settings)(helpers.fail_on)
    with pytest.raises(ValueError, match="bad item 'boom'") as caught:
        fail_on(ITEMS, "boom")
    (note,) = notes(caught.value)
    assert "item 3" in note
    assert "'boom'" in note
    # The worker's frames are reachable: as the cause (processes) or the traceback.
    text = "".join(traceback.format_exception(caught.value))
    assert "in fail_on" in text


def test_raise_from_iter(any_settings: dict[str, Any]) -> None:
    results = parallel(**any_settings)(helpers.fail_on).iter(ITEMS, "boom")
    yielded: list[str] = []
    with pytest.raises(ValueError, match="bad item") as caught:
        yielded.extend(results)  # keeps the results that came before the failure
    assert any("item 3" in note for note in notes(caught.value))
    assert yielded == ITEMS[: len(yielded)]  # results before it, if any, in input order


def test_note_holds_a_short_repr_of_a_large_item(any_settings: dict[str, Any]) -> None:
    large = list(range(10_000))
    fail_on = parallel(**any_settings)(helpers.fail_on)
    with pytest.raises(ValueError) as caught:
        fail_on([[1], large], large)
    (note,) = notes(caught.value)
    assert "item 1" in note
    assert "[0, 1, 2" in note
    assert len(note) < 200


def test_process_worker_traceback_is_the_cause(process_settings: dict[str, Any]) -> None:
    fail_on = parallel(**process_settings)(helpers.fail_on)
    with pytest.raises(ValueError) as caught:
        fail_on(ITEMS, "boom")
    cause = caught.value.__cause__
    assert cause is not None
    assert "fail_on" in str(cause)
    assert "ValueError: bad item 'boom'" in str(cause)


@pytest.mark.parametrize("ordered", [True, False], ids=["ordered", "unordered"])
def test_raise_cancels_the_remaining_work_promptly(
    any_settings: dict[str, Any], ordered: bool
) -> None:
    """10,000 items of 10 ms on 2 workers take ~50 s; failing on item 3 must not wait."""
    failing = parallel(ordered=ordered, **any_settings)(helpers.sleep_then_fail_on)
    began = time.monotonic()
    with pytest.raises(ValueError) as caught:
        failing(range(10_000), 3, 0.01)
    assert time.monotonic() - began < 10
    assert any("item 3" in note for note in notes(caught.value))


def test_the_function_works_again_after_a_failure(any_settings: dict[str, Any]) -> None:
    fail_on = parallel(**any_settings)(helpers.fail_on)
    with pytest.raises(ValueError):
        fail_on(ITEMS, "boom")
    assert fail_on(ITEMS, "nothing") == ITEMS
    with pytest.raises(ValueError):
        fail_on(ITEMS, "a")
    assert fail_on.options(errors="return")(["x"], "y") == ["x"]


def test_keep_alive_works_again_after_a_failure(any_settings: dict[str, Any]) -> None:
    fail_on = parallel(keep_alive=True, **any_settings)(helpers.fail_on)
    try:
        with pytest.raises(ValueError):
            fail_on(ITEMS, "boom")
        assert fail_on(ITEMS, "nothing") == ITEMS
    finally:
        fail_on.close()


def test_return_puts_exceptions_in_place(any_settings: dict[str, Any]) -> None:
    items = [0, 1, 2, 3, 4, 5]
    fail_on = parallel(errors="return", **any_settings)(helpers.fail_on)
    results = fail_on(items, 2)
    assert results[:2] == [0, 1]
    assert results[3:] == [3, 4, 5]
    error = results[2]
    assert isinstance(error, ValueError)
    assert str(error) == "bad item 2"
    assert any("item 2" in note for note in notes(error))
    assert list(fail_on.iter(items, 2))[3:] == [3, 4, 5]


@pytest.mark.timeout(8)
def test_return_does_not_hang_when_the_last_item_fails(any_settings: dict[str, Any]) -> None:
    """The failure and the end of its chunk reach the caller apart; nothing is left to run."""
    failing = parallel(errors="return", **any_settings)(helpers.fail_slow_to_free)
    (error,) = failing([0])
    assert isinstance(error, helpers.SlowToFreeError)
    assert str(error) == "bad item 0"


def test_return_with_several_failures_unordered(any_settings: dict[str, Any]) -> None:
    failing = parallel(errors="return", ordered=False, **any_settings)(helpers.fail_if_in)
    results = failing(range(6), (1, 3))
    errors = sorted(str(result) for result in results if isinstance(result, ValueError))
    assert errors == ["bad item 1", "bad item 3"]
    values = sorted(result for result in results if not isinstance(result, ValueError))
    assert values == [0, 2, 4, 5]

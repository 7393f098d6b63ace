"""API.md section 4: progress bars, on every backend."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import helpers
import pytest
from bars import GateBar, RecordingBar

from parallelize import parallel


def last_line(text: str) -> str:
    return text.rstrip("\n").split("\r")[-1]


def test_true_shows_a_bar_named_after_the_function(
    any_settings: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    square = parallel(progress=True, **any_settings)(helpers.square)
    assert square([1, 2, 3, 4]) == [1, 4, 9, 16]
    err = capsys.readouterr().err
    assert last_line(err).startswith("square: 100%")
    assert "4/4" in last_line(err)
    assert err.endswith("\n")  # closed: the final state is drawn and left


def test_bar_has_no_total_for_a_generator(
    any_settings: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    square = parallel(progress=True, **any_settings)(helpers.square)
    assert square(x for x in range(4)) == [0, 1, 4, 9]
    line = last_line(capsys.readouterr().err)
    assert line.startswith("square: 4it")
    assert "/4" not in line


def test_str_sets_the_description(
    any_settings: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    parallel(progress="Downloading", **any_settings)(helpers.square)(range(3))
    line = last_line(capsys.readouterr().err)
    assert line.startswith("Downloading: 100%")
    assert "3/3" in line


def test_dict_passes_tqdm_arguments(
    any_settings: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    progress = {"unit": "file", "desc": "Fetching"}
    parallel(progress=progress, **any_settings)(helpers.square)(range(3))
    line = last_line(capsys.readouterr().err)
    assert line.startswith("Fetching: 100%")
    assert "3/3" in line
    assert "file/s" in line or "s/file" in line


def test_caller_bar_is_advanced_and_left_open(any_settings: dict[str, Any]) -> None:
    bar = RecordingBar(total=10)
    square = parallel(progress=bar, **any_settings)(helpers.square)
    assert square(range(4)) == [0, 1, 4, 9]
    assert bar.n == 4
    assert list(square.iter(range(4))) == [0, 1, 4, 9]
    assert bar.n == 8
    assert not bar.disable  # tqdm sets `disable` when a bar is closed
    bar.update(2)
    assert bar.n == 10
    bar.close()
    assert bar.disable


def test_bar_closes_when_the_call_fails(
    any_settings: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    fail_on = parallel(progress=True, **any_settings)(helpers.fail_on)
    with pytest.raises(ValueError) as caught:
        fail_on(["a", "b", "boom"], "boom")
    err = capsys.readouterr().err
    assert last_line(err).startswith("fail_on:")
    assert err.endswith("\n")  # closed, although the exception keeps the call's frames alive
    assert "item 2" in caught.value.__notes__[0]


def test_caller_bar_stays_open_when_the_call_fails(any_settings: dict[str, Any]) -> None:
    bar = RecordingBar(total=3)
    with pytest.raises(ValueError):
        parallel(progress=bar, **any_settings)(helpers.fail_on)(["a", "b", "boom"], "boom")
    assert not bar.disable
    bar.close()


def test_bar_advances_one_item_at_a_time(any_settings: dict[str, Any]) -> None:
    """Slow items are counted one by one, not in jumps at the end of a chunk."""
    for ordered in (True, False):
        bar = RecordingBar(total=8)
        slept = parallel(progress=bar, ordered=ordered, **any_settings)(helpers.slept)
        assert sorted(slept(range(8), 0.03)) == list(range(8))
        bar.close()
        assert bar.steps == [1] * 8


@pytest.mark.parametrize("ordered", [True, False], ids=["ordered", "unordered"])
def test_bar_advances_while_an_earlier_item_still_runs(
    any_concurrent_settings: dict[str, Any], ordered: bool, tmp_path: Path
) -> None:
    """Item 0 is held until the bar has counted all the other items.

    In ordered mode their results cannot be returned yet, but the bar must move.
    """
    gate = tmp_path / "gate"
    count = 5
    bar = GateBar(gate, open_at=count - 1, total=count)
    gated = parallel(progress=bar, ordered=ordered, **any_concurrent_settings)(
        helpers.gated_first_slow_rest
    )
    results = gated(range(count), str(gate), 0.01)
    bar.close()
    assert sorted(results) == [(x, True) for x in range(count)]
    assert bar.n == count


def test_bar_redraws_on_every_run_of_results_without_a_monitor_thread() -> None:
    """`miniters=1`: each run of results checks the clock, so a bar never stalls when
    items slow down, and tqdm's monitor thread (which exists to undo a stalled
    `miniters`) is not started for it. Run in a new interpreter: a monitor started
    for another test's bar may still be running in this one."""
    script = textwrap.dedent(
        """
        import io, threading
        from parallelize import parallel

        def kinds(_):
            return sorted(type(thread).__name__ for thread in threading.enumerate())

        print(parallel(backend="serial", progress={"file": io.StringIO()})(kinds)([0])[0])
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "['_MainThread']"


def test_no_bar_by_default(
    any_settings: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    parallel(**any_settings)(helpers.square)(range(3))
    assert capsys.readouterr().err == ""


def test_bar_written_to_a_given_file(any_settings: dict[str, Any]) -> None:
    stream = io.StringIO()
    parallel(progress={"file": stream}, **any_settings)(helpers.square)(range(2))
    assert last_line(stream.getvalue()).startswith("square: 100%")

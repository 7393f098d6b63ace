"""Large extra arguments on the process backend are shared, not copied (API.md section 7).

A call's large buffers go into one memfd segment that every worker maps (spawn,
forkserver, and kept workers), or reach workers forked for the call by inheritance;
the segment is released on every path. What a process holds of it is read from
/proc: `/proc/<pid>/fd` for descriptors, `/proc/<pid>/maps` for mappings.

Run as a script, this module measures W9 of BENCHMARKS.md (time and memory):

    .venv/bin/python tests/test_shared_args.py [--mb 200] [--repeat 5]
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import helpers
import hypothesis
import numpy as np
import psutil
import pytest
from hypothesis import strategies as st

from parallelize import TaskTimeoutError, WorkerLostError, parallel
from parallelize.backends import _process_lifecycle, _segment, _shared_args

pytestmark = pytest.mark.skipif(
    not _segment.CAN_SHARE, reason="shared segments are memfds, on Linux"
)

START_METHODS = ["fork", "spawn", "forkserver"]
SEGMENT = f"memfd:{_segment.SEGMENT_NAME}"
# Arrays over the 1 MiB threshold, small enough for quick tests.
BIG = 2 * 1024 * 1024 // 8
# The memory test's array; the bar: what a call adds stays under 1.25 x the array.
MEMORY_BYTES = 64 * 1024 * 1024
MEMORY_BAR = 1.25
ITEM_VALUES = 1000  # W9: each item sums this many values of the table
# multiprocessing names for shared memory in /dev/shm (ours would carry "parallelize").
NAMED_SHM_PREFIXES = ("psm_", "wnsm_", "parallelize")


# -- functions the workers run ----------------------------------------------------------


def w9_item(i: int, table: Any, items: int = 200) -> float:
    """W9's item: the sum of 1,000 values at an offset item `i` picks, spread over the table."""
    offset = (i % items) * (len(table) - ITEM_VALUES) // max(items - 1, 1)
    return float(table[offset : offset + ITEM_VALUES].sum())


def nested_sum(i: int, tables: dict[str, Any], *, scale: list[Any]) -> float:
    return float(tables["a"][i] + tables["pair"][1][i] + scale[0][i])


def how_shared(i: int, table: Any) -> tuple[float, bool, bool, int]:
    """The item's value, whether `table` is read-only, whether this worker maps a
    segment of ours, and the worker's pid."""
    return float(table[i]), not table.flags.writeable, maps_a_segment(os.getpid()), os.getpid()


def held(i: int, table: Any, directory: str) -> float:
    """Say which worker runs the item (the job is loaded by then), then wait for the gate."""
    Path(directory, f"ran-{os.getpid()}").touch()
    if not helpers.wait_for_path(Path(directory, "go")):
        raise TimeoutError("the gate never opened")
    return w9_item(i, table)


def fail_on_three(i: int, table: Any) -> float:
    if i == 3:
        raise ValueError("item three")
    return float(table[i])


def sleep_on_three(i: int, table: Any) -> float:
    if i == 3:
        time.sleep(30)
    return float(table[i])


def kill_self_on_three(i: int, table: Any) -> float:
    if i == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return float(table[i])


# -- what holds a segment -----------------------------------------------------------------


def segment_fds(pid: int) -> dict[int, int]:
    """Our segments `pid` has a descriptor for: inode -> size."""
    found = {}
    with contextlib.suppress(OSError):
        for entry in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(entry).startswith(f"/{SEGMENT}"):
                    status = os.stat(entry)
                    found[status.st_ino] = status.st_size
    return found


def segment_maps(pid: int) -> dict[int, int]:
    """Our segments `pid` maps: inode -> bytes mapped."""
    found: dict[int, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].startswith(f"/{SEGMENT}"):
                start, end = (int(x, 16) for x in fields[0].split("-"))
                inode = int(fields[4])
                found[inode] = max(found.get(inode, 0), end - start)
    return found


def maps_a_segment(pid: int) -> bool:
    return bool(segment_maps(pid))


def tree_pids() -> list[int]:
    """This process and all its descendants (workers, the fork server, helpers)."""
    me = psutil.Process()
    return [me.pid, *(child.pid for child in me.children(recursive=True))]


def holders(pids: list[int]) -> list[str]:
    """Which of `pids` hold a segment of ours, open or mapped."""
    return [
        f"pid {pid}: fds {fds} maps {maps}"
        for pid in pids
        if (fds := segment_fds(pid)) | (maps := segment_maps(pid))
    ]


def named_shm() -> set[str]:
    return {name for name in os.listdir("/dev/shm") if name.startswith(NAMED_SHM_PREFIXES)}


@contextlib.contextmanager
def segments_counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Count the segments the caller makes (their sizes, in order)."""
    made: list[int] = []
    real = _shared_args.Segment

    class Counted(real):  # type: ignore[misc, valid-type]
        def __init__(self, parts: list[memoryview]) -> None:
            super().__init__(parts)
            made.append(self.ref.size)

    monkeypatch.setattr(_shared_args, "Segment", Counted)
    yield made


def assert_nothing_left(before: set[str]) -> None:
    assert not holders(tree_pids())
    assert named_shm() <= before


# -- results ------------------------------------------------------------------------------


@pytest.mark.parametrize("start_method", START_METHODS)
def test_large_arguments_give_the_right_results(
    start_method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = np.random.default_rng(1).random(BIG)
    tables = {"a": table, "pair": ("x", np.arange(BIG, dtype=np.float64))}
    scale = [np.full(BIG, 0.5)]
    shm = named_shm()
    with segments_counted(monkeypatch) as made:
        f = parallel(workers=2, start_method=start_method)(nested_sum)
        expected = [nested_sum(i, tables, scale=scale) for i in range(50)]
        assert f(range(50), tables, scale=scale) == expected
        shared = parallel(workers=2, start_method=start_method)(how_shared)
        results = shared(range(8), table)
    assert [value for value, *_ in results] == [float(table[i]) for i in range(8)]
    if start_method == "fork":  # forked for the call: inherited, nothing to map
        assert made == []
        assert not any(mapped for _, _, mapped, _ in results)
    else:  # one segment per call, every worker maps it, arrays arrive read-only
        assert len(made) == 2
        assert made[1] >= table.nbytes
        assert all(readonly and mapped for _, readonly, mapped, _ in results)
    assert_nothing_left(shm)


@pytest.mark.parametrize("start_method", START_METHODS)
def test_small_arguments_make_no_segment(
    start_method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = np.arange(1000, dtype=np.float64)  # out of band for pickle, under 1 MiB
    with segments_counted(monkeypatch) as made:
        f = parallel(workers=2, start_method=start_method, keep_alive=True)(how_shared)
        try:
            for _ in range(2):
                results = f(range(4), small)
                assert [r[0] for r in results] == [float(x) for x in small[:4]]
                assert not any(readonly or mapped for _, readonly, mapped, _ in results)
        finally:
            f.close()
    assert made == []


@pytest.mark.parametrize("start_method", START_METHODS)
def test_kept_workers_get_each_calls_array_and_let_go_of_the_last(
    start_method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = np.full(BIG, 1.0)
    second = np.full(BIG, 2.0)
    with segments_counted(monkeypatch) as made:
        f = parallel(workers=2, start_method=start_method, keep_alive=True)(how_shared)
        try:
            one = f(range(8), first)
            two = f(range(8), second)
            assert {r[0] for r in one} == {1.0}
            assert {r[0] for r in two} == {2.0}
            # Kept workers map the second call's segment (through /proc), whatever the
            # start method: none of them inherited it.
            assert all(mapped for _, _, mapped, _ in two)
            workers = {pid for *_, pid in one} | {pid for *_, pid in two}
            # Small, and one item: no segment, and one worker gets work. Both were
            # given the job nonetheless, and let go of the large one (the idle one
            # as soon as it reads its pipe). Nor did the first call's forked workers
            # inherit the caller's mapping of the segment it compares with.
            assert f([5], np.arange(8, dtype=np.float64))[0][0] == 5.0
            assert not holders([os.getpid()])
            deadline = time.monotonic() + helpers.GATE_SECONDS
            while (held := holders(list(workers))) and time.monotonic() < deadline:
                time.sleep(helpers.POLL_SECONDS)
            assert not held
        finally:
            f.close()
    # Under fork too: the first kept call's segment is what the next call compares with.
    assert len(made) == 2


def where_and_what(i: int, table: Any, scale: float = 1.0) -> tuple[int, float]:
    """Where this worker's `table` is mapped, and the item's value."""
    return table.ctypes.data, float(table[i * (len(table) // 8)]) * scale


@pytest.mark.parametrize("start_method", START_METHODS)
def test_unchanged_arguments_reach_kept_workers_once(
    start_method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same array, unchanged, in a second call: no new segment, and each worker
    keeps the job it loaded (its array is where it was); read-only arrays too."""
    writable = np.arange(BIG, dtype=np.float64)
    readonly = np.arange(BIG, dtype=np.float64) * 2
    readonly.flags.writeable = False
    for table in (writable, readonly):
        with segments_counted(monkeypatch) as made:
            f = parallel(workers=2, start_method=start_method, keep_alive=True)(where_and_what)
            try:
                one = f(range(8), table)
                two = f(range(8), table)
            finally:
                f.close()
        expected = [float(table[i * (BIG // 8)]) for i in range(8)]
        assert [v for _, v in one] == [v for _, v in two] == expected
        assert {a for a, _ in two} <= {a for a, _ in one}  # no worker mapped the job again
        assert len(made) == 1


def changed(table: Any, where: int) -> None:
    table[where] += 1.0


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_arguments_changed_in_place_reach_kept_workers_again(
    start_method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An array changed in place between calls, even its first or last value, or a
    small argument changed beside it: the next call is a new job, and items see it."""
    table = np.zeros(BIG)
    f = parallel(workers=2, start_method=start_method, keep_alive=True)(where_and_what)
    try:
        f(range(8), table)
        for where in (0, BIG - 1, BIG // 8):
            changed(table, where)
            assert [v for _, v in f(range(8), table)] == [
                float(table[i * (BIG // 8)]) for i in range(8)
            ]
        sums = {v for _, v in f(range(8), table, 3.0)}
        assert 3.0 in sums  # item 1 reads table[BIG // 8], now 1.0, times 3
    finally:
        f.close()


@hypothesis.settings(max_examples=60, deadline=None, derandomize=True)
@hypothesis.given(
    sizes=st.lists(st.integers(0, 3 * 4096 + 7), min_size=1, max_size=4),
    change=st.one_of(
        st.none(),
        st.tuples(st.integers(0, 3), st.integers(0, 3 * 4096 + 6), st.integers(1, 255)),
    ),
    readonly=st.booleans(),
)
def test_a_segment_holds_exactly_the_bytes_it_was_made_from(
    sizes: list[int], change: tuple[int, int, int] | None, readonly: bool
) -> None:
    """Any parts, any one byte of them changed (or none): the segment says it holds
    them only if nothing changed, read-only buffers included."""
    rng = np.random.default_rng(len(sizes))
    parts = [rng.integers(0, 256, size, dtype=np.uint8) for size in sizes]
    segment = _segment.Segment([memoryview(p) for p in parts])
    try:
        if change is not None:
            which, where, delta = change
            part = parts[which % len(parts)]
            if part.size:
                at = where % part.size
                part[at] = (int(part[at]) + delta) % 256
            else:
                change = None
        for part in parts:
            part.flags.writeable = not readonly
        assert segment.holds([memoryview(p) for p in parts]) == (change is None)
        shorter = [memoryview(p) for p in parts[:-1]] + [memoryview(parts[-1])[:-1]]
        assert parts[-1].size == 0 or not segment.holds(shorter)
    finally:
        segment.close()


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_kept_workers_that_cannot_open_the_callers_fds_get_the_job_by_pipe(
    start_method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_process_lifecycle.WorkerPool, "opens_caller_fds", lambda *_: False)
    f = parallel(workers=2, start_method=start_method, keep_alive=True)(how_shared)
    try:
        f(range(4), np.full(BIG, 1.0))
        two = f(range(8), np.full(BIG, 3.0))
        assert {r[0] for r in two} == {3.0}
        assert not any(readonly for _, readonly, _, _ in two)  # arrived through the pipe
    finally:
        f.close()


@pytest.mark.parametrize("opens_fds", [True, False], ids=["by-proc", "restarted"])
@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_a_kept_worker_still_starting_is_given_the_job_or_started_anew(
    start_method: str, opens_fds: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second worker waits in its initializer through two calls: it is given each
    call's job in its pipe (the first is stale once it reads it), or started again."""
    if not opens_fds:
        monkeypatch.setattr(_process_lifecycle.WorkerPool, "opens_caller_fds", lambda *_: False)
    gated = {"initializer": helpers.first_starts_at_once, "initargs": (str(tmp_path),)}
    f = parallel(workers=2, start_method=start_method, keep_alive=True, **gated)(how_shared)
    try:
        for value in (1.0, 2.0):
            assert {r[0] for r in f(range(4), np.full(BIG, value))} == {value}
        (tmp_path / "gate").touch()
        assert {r[0] for r in f(range(16), np.full(BIG, 3.0))} == {3.0}
    finally:
        f.close()
    assert not holders(tree_pids())


# -- memory -------------------------------------------------------------------------------


def pss_beside_segments(pid: int) -> int:
    """`pid`'s PSS (shared pages counted once), less what its mappings of our
    segments add to it: those are counted whole, once, by `memory_in_use`."""
    total = 0
    for mapping in psutil.Process(pid).memory_maps(grouped=True):
        if not mapping.path.startswith(f"/{SEGMENT}"):
            total += mapping.pss
    return total


def memory_in_use(pids: list[int]) -> int:
    """What `pids` use: their PSS beside our segments, plus the whole of each segment
    they hold (by descriptor or mapping), once, whatever share of it is touched."""
    segments: dict[int, int] = {}
    for pid in pids:
        segments.update(segment_fds(pid))
        segments.update(segment_maps(pid))
    return sum(pss_beside_segments(pid) for pid in pids) + sum(segments.values())


def measured_call(function: Any, table: Any, directory: Path, items: int = 8) -> int:
    """Memory in use by the caller and its workers while both workers hold the job."""
    directory.mkdir(parents=True)
    outcome: list[Any] = []
    thread = threading.Thread(
        target=lambda: outcome.append(function(range(items), table, str(directory)))
    )
    thread.start()
    try:
        deadline = time.monotonic() + helpers.GATE_SECONDS
        while (ran := helpers.count_files(directory, "ran-")) < 2:
            assert time.monotonic() < deadline, f"{ran} worker(s) ran an item"
            time.sleep(helpers.POLL_SECONDS)
        workers = [int(p.name.split("-")[1]) for p in directory.iterdir()]
        used = memory_in_use([os.getpid(), *workers])
    finally:
        (directory / "go").touch()
        thread.join()
    assert outcome, "the call failed"
    return used


def memory_added(start_method: str, keep_alive: bool, size: int, directory: Path) -> int:
    """What a call with a `size`-byte table adds, beyond the same call with a tiny one
    (the workers' own start-up): cold, or on kept workers."""
    table = np.random.default_rng(2).random(size // 8)
    tiny = np.zeros(8)
    f = parallel(workers=2, start_method=start_method, keep_alive=keep_alive)(held)
    try:
        base = measured_call(f, tiny, directory / "tiny")
        used = measured_call(f, table, directory / "big")
    finally:
        f.close()
    return used - base


@pytest.mark.parametrize("keep_alive", [False, True], ids=["cold", "kept"])
@pytest.mark.parametrize("start_method", START_METHODS)
def test_memory_a_call_adds_stays_under_the_bar(
    start_method: str, keep_alive: bool, tmp_path: Path
) -> None:
    added = memory_added(start_method, keep_alive, MEMORY_BYTES, tmp_path)
    assert added <= MEMORY_BAR * MEMORY_BYTES, f"{added / 2**20:.0f} MiB"


# -- release on every path ------------------------------------------------------------------


@pytest.mark.parametrize("start_method", START_METHODS)
def test_nothing_is_left_after_an_error(start_method: str) -> None:
    shm = named_shm()
    f = parallel(workers=2, start_method=start_method)(fail_on_three)
    with pytest.raises(ValueError, match="item three"):
        f(range(20), np.ones(BIG))
    assert_nothing_left(shm)


@pytest.mark.parametrize("start_method", START_METHODS)
def test_nothing_is_left_after_a_timeout(start_method: str) -> None:
    shm = named_shm()
    f = parallel(workers=2, start_method=start_method, timeout=1.0, errors="return")(sleep_on_three)
    results = f(range(8), np.ones(BIG))
    assert isinstance(results[3], TaskTimeoutError)
    assert results[:3] + results[4:] == [1.0] * 7
    assert_nothing_left(shm)


@pytest.mark.parametrize("keep_alive", [False, True], ids=["cold", "kept"])
@pytest.mark.parametrize("start_method", START_METHODS)
def test_nothing_is_left_after_a_worker_is_killed(start_method: str, keep_alive: bool) -> None:
    shm = named_shm()
    f = parallel(workers=2, start_method=start_method, errors="return", keep_alive=keep_alive)(
        kill_self_on_three
    )
    try:
        if keep_alive:
            f(range(2), np.full(BIG, 2.0))
        results = f(range(8), np.ones(BIG))  # the replacement gets the job too
    finally:
        f.close()
    assert isinstance(results[3], WorkerLostError)
    assert results[:3] + results[4:] == [1.0] * 7
    assert_nothing_left(shm)


CALLER_SCRIPT = """
    import os, sys, threading, time
    from pathlib import Path
    import numpy as np
    from parallelize import parallel

    def held(i, table, directory, seconds):
        Path(directory, f"ran-{os.getpid()}").touch()
        time.sleep(seconds)
        return float(table[0])

    def announce(directory):
        while len(list(Path(directory).glob("ran-*"))) < 2:
            time.sleep(0.005)
        print("ready", flush=True)

    if __name__ == "__main__":
        start_method, mode, directory = sys.argv[1:]
        f = parallel(workers=2, start_method=start_method, keep_alive=mode == "kept")(held)
        if mode == "kept":  # the call below then reaches kept workers through /proc
            os.mkdir(directory + "-warm")
            f(range(4), np.zeros(2**20), directory + "-warm", 0.0)
        threading.Thread(target=announce, args=(directory,), daemon=True).start()
        f(range(8), np.ones(2**20), directory, 60.0)
"""


# multiprocessing's own helpers, started by the caller: not workers.
HELPER_WORDS = ("forkserver", "resource_tracker")


@contextlib.contextmanager
def caller_holding_segments(
    tmp_path: Path, start_method: str, mode: str
) -> Iterator[tuple[subprocess.Popen[str], list[psutil.Process], list[int]]]:
    """A caller whose two workers run items of a call with an 8 MB argument; all its
    descendants, and the pids of its workers."""
    script = tmp_path / "caller.py"
    script.write_text(textwrap.dedent(CALLER_SCRIPT))
    directory = tmp_path / "ran"
    directory.mkdir()
    command = [sys.executable, str(script), start_method, mode, str(directory)]
    tree: list[psutil.Process] = []
    with helpers.running(command) as program:
        try:
            assert program.stdout is not None
            line = program.stdout.readline().strip()
            assert line == "ready", program.communicate()[1][-3000:]
            tree = psutil.Process(program.pid).children(recursive=True)
            workers = [p.pid for p in tree if not _is_helper(p, program.pid)]
            assert len(workers) == 2, tree
            yield program, tree, workers
        finally:
            for process in tree:  # do not leave a fork server to the next test
                with contextlib.suppress(psutil.Error):
                    process.kill()


def _is_helper(process: psutil.Process, caller: int) -> bool:
    """A fork server or resource tracker (forkserver workers share the fork server's
    command line, but not its parent)."""
    command = " ".join(process.cmdline())
    return process.ppid() == caller and any(word in command for word in HELPER_WORDS)


def wait_until_gone(pids: list[int], seconds: float = 5.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while (alive := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.02)
    return alive


def _alive(pid: int) -> bool:
    with contextlib.suppress(psutil.Error):
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    return False


def _expect_segment(start_method: str, mode: str, pids: list[int]) -> None:
    """Before the end: the segment exists (unless fork's workers inherited the job)."""
    held_by = holders(pids)
    if start_method == "fork" and mode == "cold":
        assert not held_by
    else:
        assert held_by


CALLER_CASES = [(method, mode) for method in START_METHODS for mode in ("cold", "kept")]


@pytest.mark.parametrize(("start_method", "mode"), CALLER_CASES)
def test_nothing_is_left_after_the_caller_is_killed(
    start_method: str, mode: str, tmp_path: Path
) -> None:
    shm = named_shm()
    with caller_holding_segments(tmp_path, start_method, mode) as (program, tree, workers):
        pids = [program.pid, *(p.pid for p in tree)]
        _expect_segment(start_method, mode, pids)
        os.kill(program.pid, signal.SIGKILL)  # the caller alone: its workers see it go
        program.wait()
        assert not wait_until_gone(workers)
        assert not holders(pids)  # the fork server and resource tracker included
    assert named_shm() <= shm


@pytest.mark.parametrize(
    ("start_method", "mode"), [(m, "cold") for m in START_METHODS] + [("spawn", "kept")]
)
def test_nothing_is_left_after_ctrl_c(start_method: str, mode: str, tmp_path: Path) -> None:
    shm = named_shm()
    with caller_holding_segments(tmp_path, start_method, mode) as (program, tree, workers):
        pids = [program.pid, *(p.pid for p in tree)]
        _expect_segment(start_method, mode, pids)
        os.killpg(program.pid, signal.SIGINT)  # a terminal's Ctrl-C
        _, stderr = program.communicate(timeout=10)
        assert "KeyboardInterrupt" in stderr or program.returncode == -signal.SIGINT
        assert not wait_until_gone(workers)
        assert not holders(pids)
    assert named_shm() <= shm


# -- W9, measured ---------------------------------------------------------------------------


def _timed(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    """W9: `f(i, table)` over 200 items, a 200 MB table, 2 workers; median seconds of
    the serial loop, a cold call (create + call + shutdown) and a call on kept
    workers; and the memory a call adds (`memory_added`), fork and spawn."""
    import argparse
    import tempfile

    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--methods", default="fork,spawn")
    args = parser.parse_args()
    size = args.mb * 1000 * 1000
    table = np.random.default_rng(0).random(size // 8)
    items = range(200)
    expected = [w9_item(i, table) for i in items]
    serial = _timed(lambda: [w9_item(i, table) for i in items], args.repeat)
    print(f"W9 {args.mb} MB, serial loop {serial:.4f} s")
    for method in args.methods.split(","):

        def cold(method: str = method) -> None:
            assert parallel(workers=2, start_method=method)(w9_item)(items, table) == expected

        kept = parallel(workers=2, start_method=method, keep_alive=True)(w9_item)
        kept(items, table)

        def again(kept: Any = kept) -> None:
            assert kept(items, table) == expected

        warm = _timed(again, args.repeat)
        kept.close()
        with tempfile.TemporaryDirectory() as directory:
            added_cold = memory_added(method, False, size, Path(directory, "cold"))
        with tempfile.TemporaryDirectory() as directory:
            added_kept = memory_added(method, True, size, Path(directory, "kept"))
        print(
            f"{method:>6}: cold {_timed(cold, args.repeat):.3f} s, warm {warm:.3f} s; "
            f"memory added cold {added_cold / 1e6:.0f} MB ({added_cold / size:.2f}x), "
            f"kept {added_kept / 1e6:.0f} MB ({added_kept / size:.2f}x)"
        )


if __name__ == "__main__":
    main()

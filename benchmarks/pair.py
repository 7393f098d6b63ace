"""One (implementation, workload) pair, run in a fresh process by the runner.

    python -m benchmarks.pair SPEC.json RESULT.json

SPEC names the row, the workload, the mode and W2's loop count. The pair builds the
input (off the clock), runs the repeats, checks every answer and writes RESULT: the
times, or FAIL with the reason. A wrong answer is a FAIL, never a time. On W9-fork
and W9-spawn, two untimed runs after the repeats measure the memory the call adds.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import sys
import traceback
from pathlib import Path
from typing import Any

from .config import Mode
from .measure import MIB, MemorySampler, RssSampler, clock, median, paired_ratio
from .registry import Implementation, find
from .session import Session, Setup
from .streaming import DrawCounter, consume, consume_slowly, counted_ints, ints
from .workloads import WORKLOADS, Case, Workload, build_case, check_list

__all__ = ["PairFailed", "main", "run_pair", "timed_repeat"]

# BENCHMARKS.md: the median of at least 3 repeats. More are run while the next one
# would still end within this share of the pair's time limit.
MIN_REPEATS = 3
# W2: items timed serially before and after each repeat, for its speedup against serial.
SERIAL_REFERENCE_ITEMS = 3
BUDGET_SHARE = 0.6


class PairFailed(Exception):
    """The pair gave a wrong answer; its message says how."""


def main(argv: list[str]) -> int:
    spec_path, result_path = argv
    spec = json.loads(Path(spec_path).read_text())
    try:
        result = run_pair(spec)
    except PairFailed as exc:
        result = {"status": "FAIL", "error": str(exc)}
    except BaseException as exc:  # any error of the implementation is its row's FAIL
        lines = traceback.format_exception_only(type(exc), exc)
        result = {
            "status": "FAIL",
            "error": lines[-1].strip(),
            "traceback": traceback.format_exc()[-4000:],
        }
    Path(result_path).write_text(json.dumps(result))
    return 0


def run_pair(spec: dict[str, Any]) -> dict[str, Any]:
    implementation = find(spec["implementation"])
    workload = next(w for w in WORKLOADS if w.id == spec["workload"])
    mode = Mode(**spec["mode"])
    if workload.start_method is not None:  # for any library that takes no context
        multiprocessing.set_start_method(workload.start_method, force=True)
    case = build_case(workload, mode, spec["w2_loops"])
    setup = Setup(case.func, workload.workers, workload.start_method, shared=case.shared)
    repeats = mode.slow_repeats if workload.slow else mode.repeats
    if workload.kind == "progress":
        return _progress(implementation, case, setup, mode.w7_repeats)
    runs: list[dict[str, Any]] = []
    began = clock()
    for _ in range(repeats):
        runs.append(timed_repeat(implementation, workload, case, setup))
        # A slow row stops at MIN_REPEATS rather than run into the pair's time limit.
        spent = clock() - began
        projected = spent * (len(runs) + 1) / len(runs)
        if len(runs) >= MIN_REPEATS and projected > BUDGET_SHARE * mode.pair_time_limit:
            break
    result: dict[str, Any] = {"status": "ok", "times": [r["seconds"] for r in runs]}
    result["median"] = median(result["times"])
    for key in ("rss_growth_mib", "read_ahead", "serial_reference"):
        if key in runs[0]:
            result[key] = [r[key] for r in runs]
    if case.tiny is not None:  # after the timed repeats: no sampler runs during them
        result.update(memory_added(implementation, case, setup))
    return result


def timed_repeat(
    implementation: Implementation, workload: Workload, case: Case, setup: Setup
) -> dict[str, Any]:
    """One timed repeat (`_once`); on W2 with its serial reference beside it."""
    if workload.id != "W2":
        return _once(implementation, workload, case, setup)
    before = _serial_samples(case)
    run = _once(implementation, workload, case, setup)
    run["serial_reference"] = median(before + _serial_samples(case)) * len(case.items or [])
    return run


def _serial_samples(case: Case) -> list[float]:
    """Seconds each of W2's first few items takes run serially, right now.

    This machine's speed drifts within seconds (a hypervisor's other guests): a
    speedup against a serial row measured minutes earlier says more about the drift
    than about the row. The median of these items, timed just before and just after
    a repeat, times the item count is that repeat's serial reference.
    """
    assert case.items is not None
    samples = []
    for item in case.items[:SERIAL_REFERENCE_ITEMS]:
        start = clock()
        case.func(item)
        samples.append(clock() - start)
    return samples


def _once(
    implementation: Implementation, workload: Workload, case: Case, setup: Setup
) -> dict[str, Any]:
    """One timed repeat in a fresh session; raises PairFailed on a wrong answer."""
    session = implementation.make(setup)
    if workload.kind == "startup" and not implementation.warm:
        return _timed_startup(session, case)
    items = case.items if case.items is not None else []
    session.open(items)
    try:
        if workload.kind == "map" or workload.kind == "startup":
            return _timed_map(session, case)
        if workload.kind == "stream":
            return _timed_stream(session, case)
        return _timed_slow_stream(session, case)
    finally:
        session.close()


def _timed_map(session: Session, case: Case) -> dict[str, Any]:
    assert case.items is not None
    assert case.expected is not None
    start = clock()
    results = session.map(case.items)
    seconds = clock() - start
    _check(check_list(results, case.expected, ordered=session.ordered))
    return {"seconds": seconds}


def _timed_startup(session: Session, case: Case) -> dict[str, Any]:
    """W4: create the pool, call, shut down, all on the clock."""
    assert case.items is not None
    assert case.expected is not None
    start = clock()
    session.open(case.items)
    try:
        results = session.map(case.items)
    finally:
        session.close()
    seconds = clock() - start
    _check(check_list(results, case.expected, ordered=session.ordered))
    return {"seconds": seconds}


def _timed_stream(session: Session, case: Case) -> dict[str, Any]:
    """W6: consume lazily while sampling this process's RSS."""
    n = case.stream_length
    items = ints(n)
    with RssSampler() as rss:
        start = clock()
        outcome = consume(session.stream(items))
        seconds = clock() - start
    _check(outcome.problem(n, ordered=session.ordered))
    return {"seconds": seconds, "rss_growth_mib": rss.growth_mib}


def _timed_slow_stream(session: Session, case: Case) -> dict[str, Any]:
    """W6s: consume slowly, recording how far the input was drawn ahead of the results."""
    n = case.stream_length
    counter = DrawCounter()
    items = counted_ints(n, counter)
    start = clock()
    outcome = consume_slowly(session.stream(items), counter)
    seconds = clock() - start
    _check(outcome.problem(n, ordered=session.ordered))
    return {"seconds": seconds, "read_ahead": outcome.max_ahead}


def memory_added(implementation: Implementation, case: Case, setup: Setup) -> dict[str, Any]:
    """W9: the memory the call adds with its table, beyond its workers' own start-up.

    One untimed run with an 8 KiB table (the start-up: workers, their imports), then
    one with the real table; `memory_added` is the difference of their growths over
    the table's size (1.0: one more copy of the table). Each is a list of one value,
    pooled over rounds like the other per-repeat measures.
    """
    assert case.tiny is not None
    tiny_setup = dataclasses.replace(setup, shared=case.tiny.shared)
    start_up = _memory_growth(implementation, case.tiny, tiny_setup)
    growth = _memory_growth(implementation, case, setup)
    return {
        "memory_added": [(growth - start_up) / case.shared.nbytes],
        "memory_growth_mib": [growth / MIB],
        "memory_start_up_mib": [start_up / MIB],
    }


def _memory_growth(implementation: Implementation, case: Case, setup: Setup) -> int:
    """Peak growth of the machine's memory in use from just before `open` to the end of
    the call, before `close` (a warm row's first call is in `open`, so in the span)."""
    assert case.items is not None
    assert case.expected is not None
    session = implementation.make(setup)
    with MemorySampler() as memory:
        session.open(case.items)
        try:
            results = session.map(case.items)
        except BaseException:
            session.close()
            raise
    session.close()
    _check(check_list(results, case.expected, ordered=session.ordered))
    return memory.growth


def _progress(
    implementation: Implementation, case: Case, setup: Setup, repeats: int
) -> dict[str, Any]:
    """W7: the same W1 call without and with `progress=True`, interleaved, in one process.

    Each repeat times the two calls back to back, alternating which goes first; the
    cost of the bar is the median over repeats of their ratio (`paired_ratio`).
    """
    assert case.items is not None
    assert case.expected is not None
    sessions = {
        "plain": implementation.make(setup),
        "progress": implementation.make(dataclasses.replace(setup, progress=True)),
    }
    times: dict[str, list[float]] = {"plain": [], "progress": []}
    for session in sessions.values():
        session.open(case.items)
    try:
        for repeat in range(repeats):
            order = ["plain", "progress"] if repeat % 2 == 0 else ["progress", "plain"]
            for name in order:
                session = sessions[name]
                start = clock()
                results = session.map(case.items)
                times[name].append(clock() - start)
                _check(check_list(results, case.expected, ordered=session.ordered))
    finally:
        for session in sessions.values():
            session.close()
    return {
        "status": "ok",
        "times": times["progress"],
        "median": median(times["progress"]),
        "plain_times": times["plain"],
        "plain_median": median(times["plain"]),
        "progress_ratio": paired_ratio(times["progress"], times["plain"]),
    }


def _check(problem: str | None) -> None:
    if problem is not None:
        raise PairFailed(problem)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

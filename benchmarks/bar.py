"""The bar of BENCHMARKS.md ("The bar parallelize must clear"), checked on one run.

Each line of that list (W1-W9, the dask and Ray backends) becomes a `BarLine` of
`Check`s, one per parallelize variant and condition, with the numbers that decided
it. Nothing here is tolerant of noise: "at least as fast" means a median no larger
than the peer's, in this run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from .measure import MIB, paired_ratio
from .results import RunResults

__all__ = ["BarLine", "Check", "check_bar"]

W2_SPEEDUP = 1.9
W3_SLACK = 1.10  # within 10 % of the ideal
W4_WARM_SECONDS = 0.005
W6_RSS_MIB = 50.0
# "No faster growth with 10x the input": growth at 10x may exceed growth at 1x by
# this factor plus this much (RSS moves by a few MiB on its own); growth that scaled
# with the input would be ~10x.
W6_SCALING_FACTOR = 2.0
W6_SCALING_SLACK_MIB = 4.0
W6S_READ_AHEAD = 5_000  # "at most a few thousand items drawn ahead"
W7_COST = 1.05
W8_SPEEDUP = 1.8  # against the serial loop with one BLAS thread
W8_SERIAL = "serial_one_blas_thread"
DASK_SLACK = 1.10  # the cluster backends: within 10 % of the engine's own map
W9_MEMORY = 1.25  # the memory a W9 call adds, in copies of the table
W9 = ("W9-fork", "W9-spawn")
# W9-cluster: each parallelize cluster row, the hand-written row it is held to, and what
# that row does.
W9_CLUSTER = (
    ("parallelize dask backend", "dask", "scatter + client.map"),
    ("parallelize ray backend", "ray", "ray.put + remote tasks"),
)

COLD = ("parallelize ordered cold", "parallelize unordered cold")
WARM = ("parallelize ordered warm", "parallelize unordered warm")
ITER = ("parallelize.iter ordered", "parallelize.iter unordered")


@dataclasses.dataclass
class Check:
    label: str
    ok: bool | None  # None: not measured in this run
    detail: str


@dataclasses.dataclass
class BarLine:
    line: str
    checks: list[Check]

    @property
    def verdict(self) -> str:
        measured = [c.ok for c in self.checks if c.ok is not None]
        if not measured:
            return "not measured"
        if all(measured):
            return "clears" if len(measured) == len(self.checks) else "clears (partly measured)"
        return "misses" if not any(measured) else "partly"


def _fmt(seconds: float) -> str:
    return f"{seconds:.3g} s" if seconds >= 0.01 else f"{seconds * 1000:.3g} ms"


def _failed(results: RunResults, implementation: str, workload: str, label: str) -> Check | None:
    """A Check for a row that did not give a time, or None if it did."""
    pair = results.pair(implementation, workload)
    if pair is None:
        return Check(label, None, f"{workload} not measured")
    if pair["status"] != "ok":
        return Check(label, False, f"{workload}: {pair['status']}: {pair['error']}")
    return None


def _versus_best_peer(
    results: RunResults, rows: tuple[str, ...], workload: str, label: str = ""
) -> list[Check]:
    checks: list[Check] = []
    best = results.best_peer(workload)
    for row in rows:
        name = f"{row}{label}"
        failed = _failed(results, row, workload, name)
        if failed is not None:
            checks.append(failed)
            continue
        seconds = results.median(row, workload)
        assert seconds is not None
        if best is None:
            checks.append(Check(name, None, f"{_fmt(seconds)}; no peer measured"))
            continue
        ok = seconds <= best[1]
        detail = f"{_fmt(seconds)} vs {best[0]} {_fmt(best[1])} ({seconds / best[1]:.2f}x)"
        checks.append(Check(name, ok, detail))
    return checks


def _against(
    results: RunResults,
    rows: tuple[str, ...],
    workload: str,
    test: Callable[[str, float], tuple[bool | None, str]],
    label: str = "",
) -> list[Check]:
    checks: list[Check] = []
    for row in rows:
        failed = _failed(results, row, workload, f"{row}{label}")
        if failed is not None:
            checks.append(failed)
            continue
        seconds = results.median(row, workload)
        assert seconds is not None
        ok, detail = test(row, seconds)
        checks.append(Check(f"{row}{label}", ok, detail))
    return checks


def _w1(results: RunResults) -> list[BarLine]:
    warm = BarLine(
        "W1: ordered and unordered at least as fast as the fastest peer, warm",
        _versus_best_peer(results, WARM, "W1"),
    )
    best = results.best_peer("W1")

    def cold_test(row: str, seconds: float) -> tuple[bool | None, str]:
        if best is None:
            return None, f"{_fmt(seconds)}; no peer measured"
        startup = results.median(best[0], "W4-fork")
        if startup is None:
            return None, f"{_fmt(seconds)}; {best[0]} has no W4 fork time"
        limit = best[1] + startup
        detail = (
            f"{_fmt(seconds)} vs {best[0]} {_fmt(best[1])} + its W4 start-up "
            f"{_fmt(startup)} = {_fmt(limit)}"
        )
        return seconds <= limit, detail

    cold = BarLine(
        "W1 cold: no slower than the fastest peer plus that peer's W4 start-up",
        _against(results, COLD, "W1", cold_test),
    )
    return [warm, cold]


def _w2(results: RunResults) -> BarLine:
    serial = results.median("serial", "W2")
    peers = [
        (speedup, name)
        for name in results.implementations
        if results.is_peer(name) and (speedup := _same_pair_speedup(results, name)) is not None
    ]
    best = f"; best peer {max(peers)[1]} {max(peers)[0]:.2f}x" if peers else ""

    def test(row: str, seconds: float) -> tuple[bool | None, str]:
        same_pair = _same_pair_speedup(results, row)
        if same_pair is not None:
            detail = f"{_fmt(seconds)}: {same_pair:.2f}x serial timed in the same pair{best}"
            return same_pair >= W2_SPEEDUP, detail
        if serial is None:
            return None, f"{_fmt(seconds)}; serial not measured"
        speedup = serial / seconds
        return speedup >= W2_SPEEDUP, f"{_fmt(seconds)}: {speedup:.2f}x serial {_fmt(serial)}"

    return BarLine("W2: >= 1.9x faster than serial", _against(results, COLD + WARM, "W2", test))


def _same_pair_speedup(results: RunResults, row: str) -> float | None:
    """The median over repeats of (serial estimate just before the repeat / its time)."""
    pair = results.ok(row, "W2")
    if pair is None or "serial_reference" not in pair:
        return None
    return paired_ratio(pair["serial_reference"], pair["times"])


def _w3(results: RunResults, ideal: float) -> BarLine:
    def test(row: str, seconds: float) -> tuple[bool | None, str]:
        return seconds <= ideal * W3_SLACK, f"{_fmt(seconds)} ({seconds / ideal:.3f}x the ideal)"

    return BarLine(
        f"W3: within 10 % of the {ideal:.3g} s ideal",
        _against(results, COLD + WARM, "W3", test),
    )


def _w4(results: RunResults) -> BarLine:
    def test(row: str, seconds: float) -> tuple[bool | None, str]:
        return seconds < W4_WARM_SECONDS, f"second call {_fmt(seconds)} (bar: under 5 ms)"

    checks: list[Check] = []
    for workload in ("W4-fork", "W4-spawn"):
        checks += _versus_best_peer(results, COLD, workload, f", {workload}")
        checks += _against(results, WARM, workload, test, f", {workload}")
    return BarLine(
        "W4: at least as fast as the fastest peer under fork and spawn; "
        "keep_alive second call of 10 items under 5 ms",
        checks,
    )


def _w5(results: RunResults) -> BarLine:
    return BarLine(
        "W5: at least as fast as the fastest peer",
        _versus_best_peer(results, COLD + WARM, "W5"),
    )


def _w6(results: RunResults) -> BarLine:
    checks = _versus_best_peer(results, ITER, "W6")
    for row in ITER:
        big = results.worst(row, "W6", "rss_growth_mib")
        small = results.worst(row, "W6-small", "rss_growth_mib")
        if big is None:
            checks.append(Check(f"{row} RSS", None, "not measured"))
        else:
            checks.append(
                Check(f"{row} RSS", big < W6_RSS_MIB, f"peak RSS growth +{big:.1f} MiB (< 50)")
            )
        if big is not None and small is not None:
            ok = big <= W6_SCALING_FACTOR * small + W6_SCALING_SLACK_MIB
            detail = f"+{big:.1f} MiB with 10x the input of W6 1/10's +{small:.1f} MiB"
            checks.append(Check(f"{row} RSS scaling", ok, detail))
        else:
            checks.append(Check(f"{row} RSS scaling", None, "not measured"))
        ahead = results.worst(row, "W6s", "read_ahead")
        failed = _failed(results, row, "W6s", f"{row} W6s")
        if failed is not None:
            checks.append(failed)
        elif ahead is not None:
            total = results.run["settings"]["w6s_items"]
            detail = f"{ahead:,.0f} of {total:,} items drawn ahead of the consumer"
            checks.append(Check(f"{row} W6s", ahead <= W6S_READ_AHEAD, detail))
    return BarLine(
        "W6: .iter() as fast as the fastest peer, RSS growth < 50 MiB and not growing "
        "with 10x the input, W6s read-ahead of at most a few thousand items",
        checks,
    )


def _w7(results: RunResults) -> BarLine:
    checks: list[Check] = []
    for row in COLD + WARM:
        failed = _failed(results, row, "W7", row)
        if failed is not None:
            checks.append(failed)
            continue
        pair = results.ok(row, "W7")
        assert pair is not None
        ratio = float(pair["progress_ratio"])
        detail = (
            f"{ratio:.3f}x: median of with / without over {len(pair['times'])} back-to-back "
            f"pairs of calls (medians {_fmt(pair['median'])} with the bar, "
            f"{_fmt(pair['plain_median'])} without)"
        )
        checks.append(Check(row, ratio <= W7_COST, detail))
    return BarLine("W7: progress costs <= 5 %", checks)


def _w8(results: RunResults) -> BarLine:
    serial = results.median(W8_SERIAL, "W8")
    best = results.best_peer("W8")
    best_text = ""
    if serial is not None and best is not None:
        best_text = f"; fastest peer {best[0]} {serial / best[1]:.2f}x"

    def test(row: str, seconds: float) -> tuple[bool | None, str]:
        if serial is None:
            return None, f"{_fmt(seconds)}; the serial loop with one BLAS thread not measured"
        speedup = serial / seconds
        detail = (
            f"{_fmt(seconds)}: {speedup:.2f}x the serial loop with one BLAS thread "
            f"{_fmt(serial)}{best_text}"
        )
        return speedup >= W8_SPEEDUP, detail

    checks = _versus_best_peer(results, COLD + WARM, "W8", ", vs the fastest peer")
    checks += _against(results, COLD + WARM, "W8", test, ", vs serial")
    return BarLine(
        "W8: at least as fast as the fastest peer, and >= 1.8x the serial loop run with "
        "one BLAS thread",
        checks,
    )


def _dask(results: RunResults) -> BarLine:
    dask = results.median("dask", "W2")

    def test(row: str, seconds: float) -> tuple[bool | None, str]:
        if dask is None:
            return None, f"{_fmt(seconds)}; dask client.map not measured"
        return seconds <= dask * DASK_SLACK, f"{_fmt(seconds)} vs client.map {_fmt(dask)}"

    return BarLine(
        "dask backend: W2 within 10 % of dask's own client.map on the same cluster",
        _against(results, ("parallelize dask backend",), "W2", test),
    )


def _w9(results: RunResults) -> list[BarLine]:
    speed: list[Check] = []
    memory: list[Check] = []
    for workload in W9:
        speed += _versus_best_peer(results, COLD + WARM, workload, f", {workload}")
        memory += _against(
            results, COLD + WARM, workload, _w9_memory_test(results, workload), f", {workload}"
        )
    return [
        BarLine(
            "W9: at least as fast as the fastest peer under fork and spawn, cold and warm",
            speed,
        ),
        BarLine("W9 memory: the call adds <= 1.25x the array", memory),
    ]


def _w9_memory_test(
    results: RunResults, workload: str
) -> Callable[[str, float], tuple[bool | None, str]]:
    table_mib = results.run["settings"]["w9_table_bytes"] / MIB

    def test(row: str, seconds: float) -> tuple[bool | None, str]:
        added = results.middle(row, workload, "memory_added")
        if added is None:
            return None, "memory not measured"
        growth = results.middle(row, workload, "memory_growth_mib")
        start_up = results.middle(row, workload, "memory_start_up_mib")
        detail = (
            f"{added:.2f}x the {table_mib:.0f} MiB table: +{growth:.0f} MiB with it, "
            f"+{start_up:.0f} MiB with an 8 KiB one"
        )
        return added <= W9_MEMORY, detail

    return test


def _w9_clusters(results: RunResults) -> BarLine:
    checks: list[Check] = []
    for row, engine, what in W9_CLUSTER:
        test = _within_slack(results.median(engine, "W9-cluster"), f"{what} by hand")
        checks += _against(results, (row,), "W9-cluster", test)
    return BarLine(
        "dask and ray backends: W9 within 10 % of the engine's own scatter / ray.put + map "
        "written by hand",
        checks,
    )


def _within_slack(
    reference: float | None, what: str
) -> Callable[[str, float], tuple[bool | None, str]]:
    """A test: a row's median within `DASK_SLACK` of `reference`, the median of `what`."""

    def test(row: str, seconds: float) -> tuple[bool | None, str]:
        if reference is None:
            return None, f"{_fmt(seconds)}; {what} not measured"
        detail = f"{_fmt(seconds)} vs {what} {_fmt(reference)} ({seconds / reference:.2f}x)"
        return seconds <= reference * DASK_SLACK, detail

    return test


def check_bar(results: RunResults, w3_ideal: float) -> list[BarLine]:
    return [
        *_w1(results),
        _w2(results),
        _w3(results, w3_ideal),
        _w4(results),
        _w5(results),
        _w6(results),
        _w7(results),
        _dask(results),
        _w8(results),
        *_w9(results),
        _w9_clusters(results),
    ]

"""The markdown report of one run: the table, the bar checks, failures and the machine."""

from __future__ import annotations

from typing import Any

from .bar import BarLine
from .measure import median
from .noise import NOISY_CORES
from .results import RunResults
from .schedule import CONTENDER_SPREAD
from .workloads import WORKLOADS

__all__ = ["markdown_report", "markdown_table"]

TITLES = {w.id: w.title for w in WORKLOADS}
TIME_COLUMNS = (
    "W1",
    "W2",
    "W3",
    "W4-fork",
    "W4-spawn",
    "W5",
    "W6",
    "W6-small",
    "W8",
    "W9-fork",
    "W9-spawn",
)


def _seconds(value: float) -> str:
    return f"{value:.3g}"


def _cell(results: RunResults, row: str, workload: str, notes: list[str]) -> str:
    pair = results.pair(row, workload)
    if pair is None:
        return "—"
    if pair["status"] != "ok":
        notes.append(f"{row}, {workload}: {pair['status']}: {pair['error']}")
        return f"{pair['status']} [{len(notes)}]"
    noisy = (pair.get("foreign_cores") or 0.0) > NOISY_CORES
    return ("~" if noisy else "") + _value(results, row, workload, pair)


def _value(results: RunResults, row: str, workload: str, pair: dict[str, Any]) -> str:
    if workload == "W6s":
        return f"{results.worst(row, workload, 'read_ahead'):,.0f}"
    if workload == "W7":
        return f"{pair['progress_ratio']:.3f}x"
    median = float(pair["median"])
    text = _seconds(median)
    best = results.best_peer(workload)
    if best is not None and workload in TIME_COLUMNS:
        if best[0] == row:
            text = f"**{text}**"
        text += f" ({median / best[1]:.2f}x)"
    if workload in ("W6", "W6-small"):
        text += f", +{results.worst(row, workload, 'rss_growth_mib'):.0f} MiB"
    added = results.middle(row, workload, "memory_added")
    if added is not None:
        text += f", mem {added:.2f}x"
    return text


def markdown_table(results: RunResults) -> str:
    """One row per implementation, one column per workload; footnotes for failures."""
    settings = results.run["settings"]
    headers = []
    for workload in results.workloads:
        title = TITLES[workload]
        if workload == "W6s":
            title += f" (of {settings['w6s_items']:,})"
        headers.append(title)
    lines = [
        "| implementation | " + " | ".join(headers) + " |",
        "|---|" + "---|" * len(headers),
    ]
    notes: list[str] = []
    for row in results.implementations:
        cells = [_cell(results, row, w, notes) for w in results.workloads]
        if all(c == "—" for c in cells):
            continue
        label = f"**{row}**" if row.startswith("parallelize") else row
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if notes:
        lines.append("")
        lines += [f"[{i}] {note}" for i, note in enumerate(notes, 1)]
    return "\n".join(lines)


LEGEND = """\
Median seconds of the call over {repeats}, each pair in a fresh process; (nx) is the
ratio to the fastest peer in the column (**bold**; serial and parallelize rows are not
peers). W4 times create + call + shutdown, except the warm rows: their pool already
runs, so W4 is their second call of 10 items. W6: + peak RSS growth of the calling
process ({w6:,} items; "1/10 input": {w6small:,}). W6s: most items drawn from the input
but not yet returned to the consumer. W7: time with `progress=True` / without, the
median over back-to-back pairs of W1 calls ({w7} pairs a round, alternating which
call goes first). W8: {w8} items; `serial_one_blas_thread` is the serial loop inside
threadpoolctl's `threadpool_limits(limits=1)`, the reference of W8's bar. W9: {w9}
items, each summing 1,000 values of a {w9_mb:,.0f} MB float64 table passed as an extra
argument; fork and spawn time create + call + shutdown like W4 (warm rows: their
second call, with the same table); "mem" is the memory the call adds beyond its
workers' own start-up, in copies of the table (the machine's memory in use, from
/proc/meminfo, with the table minus with an 8 KiB one, in two untimed runs; the
median over rounds; bar: at most 1.25x). W9 cluster: the call alone, on a dask
LocalCluster or a local Ray of 2 CPUs started before it; `dask` and `ray` are the
engines' own scatter / ray.put + map, the references of the cluster backends."""


def _repeats(settings: dict[str, Any]) -> str:
    if settings["repeats"] == 1 and settings["slow_repeats"] == 1:
        text = "1 repeat (--quick)"
    else:
        text = (
            f"{settings['repeats']} repeats ({settings['slow_repeats']} for W2, W3, W6, W6s, W8, "
            "and for rows too slow for more)"
        )
    rounds = settings.get("rounds", 1)
    if rounds > 1:
        text += (
            f" a round; the rows the bar compares (parallelize, dask, ray, W8's serial loop "
            "with one BLAS thread, and peers within "
            f"{CONTENDER_SPREAD}x of the fastest in round 1) run in {rounds} rounds "
            "spread over the run, their repeats pooled"
        )
    return text


def _capacity(calibration: dict[str, Any]) -> str:
    """What two cores gave over one around the run (benchmarks/capacity.py), if measured."""
    parts = []
    for when in ("before", "after"):
        ratios = sorted(calibration.get(f"two_core_ratios_{when}", []))
        if ratios:
            parts.append(
                f"{median(ratios):.2f}x {when} the pairs "
                f"({ratios[0]:.2f}-{ratios[-1]:.2f}x over {len(ratios)} tries)"
            )
    if not parts:
        return ""
    return (
        " Two processes running that loop at once did "
        + " and ".join(parts)
        + " the work of one (2.00x: two full cores; see benchmarks/capacity.py)."
    )


def _machine(run: dict[str, Any]) -> str:
    m = run["machine"]
    packages = ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v is not None)
    shares = sorted(p["foreign_cores"] for p in run["pairs"] if p.get("foreign_cores") is not None)
    load_text = ""
    if shares:
        busy = sum(1 for s in shares if s > NOISY_CORES)
        again = sum(1 for p in run["pairs"] if "other_run" in p)
        load_text = (
            f"; other work on the machine took {shares[len(shares) // 2]:.2f} cores "
            f"(median over pairs, max {shares[-1]:.2f}); cells marked ~ ran while it took "
            f"over {NOISY_CORES} cores ({busy} of {len(shares)} pairs, after running "
            f"{again} disturbed pairs a second time and keeping the quieter run)"
        )
    return (
        f"{m['date']}, {m['cpu_model']}, {m['usable_cpus']} usable of {m['cpu_count']} CPUs, "
        f"Python {m['python']}{load_text}. {packages}."
    )


def _bar(lines: list[BarLine]) -> str:
    out: list[str] = []
    for line in lines:
        out.append(f"- **{line.verdict}** — {line.line}")
        if line.verdict == "not measured":
            continue
        for check in line.checks:
            mark = {True: "yes", False: "NO", None: "n/a"}[check.ok]
            out.append(f"  - {mark}: {check.label}: {check.detail}")
    return "\n".join(out)


def markdown_report(results: RunResults, bar: list[BarLine]) -> str:
    run = results.run
    settings = run["settings"]
    calibration = run.get("calibration") or {}
    legend = LEGEND.format(
        repeats=_repeats(settings),
        w6=settings["w6_items"],
        w6small=settings["w6_small_items"],
        w7=settings["w7_repeats"],
        w8=settings["w8_items"],
        w9=settings["w9_items"],
        w9_mb=settings["w9_table_bytes"] / 1e6,
    )
    parts = [
        f"## Benchmark results ({run['mode']} run)",
        "",
        *([f"**Warning: {run['warning']}.**", ""] if run.get("warning") else []),
        markdown_table(results),
        "",
        legend,
    ]
    if calibration:
        parts += [
            "",
            f"W2: {settings['w2_items']} items of a {calibration['w2_loops']:,}-step loop, "
            f"measured serially at {calibration['w2_item_seconds'] * 1000:.1f} ms per item."
            + _capacity(calibration),
        ]
    parts += [
        "",
        "### The bar (BENCHMARKS.md)",
        "",
        _bar(bar),
        "",
        f"Machine: {_machine(run)}",
        "",
    ]
    return "\n".join(parts)

"""The PNG chart of one run: a panel per measure, horizontal bars, parallelize highlighted."""

from __future__ import annotations

import math
from pathlib import Path

from .results import NOT_PEERS, RunResults
from .workloads import WORKLOADS

__all__ = ["draw_chart"]

TITLES = {w.id: w.title for w in WORKLOADS}
OURS_COLOR = "#e8590c"
PEER_COLOR = "#4c72b0"
SERIAL_COLOR = "#999999"
# (workload, measure, axis label, log scale): a panel each, in this order.
PANELS = (
    ("W1", "median", "seconds", True),
    ("W2", "median", "seconds", False),
    ("W3", "median", "seconds", False),
    ("W4-fork", "median", "seconds", True),
    ("W4-spawn", "median", "seconds", True),
    ("W5", "median", "seconds", False),
    ("W6", "median", "seconds", True),
    ("W6", "rss_growth_mib", "peak RSS growth, MiB", False),
    ("W6-small", "rss_growth_mib", "peak RSS growth, MiB", False),
    ("W6s", "read_ahead", "items drawn ahead of the consumer", True),
    ("W7", "progress_ratio", "time with bar / without", False),
    ("W8", "median", "seconds", False),
    ("W9-fork", "median", "seconds", True),
    ("W9-spawn", "median", "seconds", True),
    ("W9-fork", "memory_added", "memory added, x the table", False),
    ("W9-spawn", "memory_added", "memory added, x the table", False),
    ("W9-cluster", "median", "seconds", False),
)
# Columns whose warm rows show their second call (the pool already runs).
SECOND_CALL = ("W4-fork", "W4-spawn", "W9-fork", "W9-spawn")
W9_MEMORY_BAR = 1.25


def _value(results: RunResults, row: str, workload: str, measure: str) -> float | None:
    if measure in ("rss_growth_mib", "read_ahead"):
        return results.worst(row, workload, measure)
    if measure == "memory_added":
        return results.middle(row, workload, measure)
    pair = results.ok(row, workload)
    return float(pair[measure]) if pair is not None and measure in pair else None


def draw_chart(results: RunResults, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in PANELS if p[0] in results.workloads]
    if not panels:
        return
    columns = min(4, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(6 * columns, 5 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, (workload, measure, label, log) in zip(axes.flat, panels, strict=False):
        names = [r for r in results.implementations if results.pair(r, workload) is not None]
        values = [_value(results, r, workload, measure) for r in names]
        colors = [
            OURS_COLOR
            if n.startswith("parallelize")
            else SERIAL_COLOR
            if n in NOT_PEERS
            else PEER_COLOR
            for n in names
        ]
        positions = list(range(len(names)))[::-1]
        ax.barh(positions, [v or 0.0 for v in values], color=colors)
        labels = [
            f"{n} (2nd call)"
            if workload in SECOND_CALL and measure == "median" and n.endswith("warm")
            else n
            for n in names
        ]
        ax.set_yticks(positions, labels, fontsize=8)
        for tick, name in zip(ax.get_yticklabels(), names, strict=True):
            if name.startswith("parallelize"):
                tick.set_fontweight("bold")
        positive = [v for v in values if v]
        if log and positive and max(positive) / min(positive) > 20:
            ax.set_xscale("log")
        for y, name, value in zip(positions, names, values, strict=True):
            if value is None:
                status = results.pair(name, workload) or {"status": "?"}
                ax.text(0, y, f" {status['status']}", va="center", fontsize=8, color="red")
            else:
                text = (
                    f" {value:,.0f}"
                    if measure == "read_ahead"
                    else f" {value:.2f}"
                    if measure == "memory_added"
                    else f" {value:.3g}"
                )
                ax.text(value, y, text, va="center", fontsize=7)
        if workload == "W7":
            ax.axvline(1.05, color="red", linestyle="--", linewidth=1)
        if measure == "memory_added":
            ax.axvline(W9_MEMORY_BAR, color="red", linestyle="--", linewidth=1)
        suffix = "" if measure in ("median", "progress_ratio") else f" — {label}"
        ax.set_title(f"{TITLES[workload]}{suffix}", fontsize=11)
        ax.set_xlabel(label, fontsize=9)
        ax.margins(x=0.15)
    machine = results.run["machine"]
    figure.suptitle(
        f"parallelize vs peers ({results.run['mode']} run, {machine['date'][:10]}, "
        f"{machine['usable_cpus']} CPUs, Python {machine['python']}); lower is better",
        fontsize=13,
    )
    # Fixed margins: tight_layout measures every label and costs seconds here.
    figure.subplots_adjust(left=0.11, right=0.98, top=0.93, bottom=0.05, wspace=0.75, hspace=0.35)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)

"""The progress bar of one call, built from the `progress` setting (API.md section 4)."""

from __future__ import annotations

import functools
import sys
from typing import Any

__all__ = ["Progress", "open_progress"]


class Progress:
    """Advances a tqdm bar; closes it at the end of the call unless the caller owns it."""

    def __init__(self, bar: Any, owned: bool) -> None:
        self._bar = bar
        self._owned = owned
        self.update = bar.update

    def close(self) -> None:
        if self._owned:
            self._bar.close()


class _NoProgress:
    """Stands in when `progress=False`, so the caller never tests for a bar."""

    @staticmethod
    def update(n: int = 1) -> None:
        return None

    def close(self) -> None:
        return None


NO_PROGRESS = _NoProgress()


def open_progress(setting: Any, total: int | None, name: str) -> Progress | _NoProgress:
    """The bar for one call: `total` when the input has a length, the function's name."""
    if setting is False:
        return NO_PROGRESS
    from tqdm.auto import tqdm
    from tqdm.std import tqdm as std_tqdm

    if isinstance(setting, std_tqdm):
        return Progress(setting, owned=False)
    options: dict[str, Any] = {"total": total, "desc": name, "file": sys.stderr}
    if isinstance(setting, str):
        options["desc"] = setting
    elif isinstance(setting, dict):
        options.update(setting)
    bar_class = tqdm
    if "miniters" not in options:
        options["miniters"] = 1
        bar_class = _without_monitor(tqdm)
    return Progress(bar_class(**options), owned=True)


@functools.cache
def _without_monitor(tqdm: type[Any]) -> type[Any]:
    """`tqdm` without its monitor thread, for bars with `miniters=1`.

    The monitor only lowers a bar's `miniters` when it stopped redrawing; at 1, every
    update already checks the clock (updates come once per run of results, not per
    item), so the thread would have nothing to do but run beside forked workers.
    """
    return type("ParallelBar", (tqdm,), {"monitor_interval": 0, "__module__": __name__})

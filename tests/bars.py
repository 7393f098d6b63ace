"""tqdm bars that a test owns and passes as `progress=bar`, to watch the parent's side.

They live apart from `helpers` so that worker processes never import tqdm.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from tqdm import tqdm


class RecordingBar(tqdm):
    """A bar drawn into a string that remembers the size of every `update`."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("file", io.StringIO())
        super().__init__(**kwargs)
        self.steps: list[int] = []

    def update(self, n: float | None = 1) -> bool | None:
        self.steps.append(int(n or 0))
        return super().update(n)


class GateBar(RecordingBar):
    """Creates the file `gate` once the bar has counted `open_at` finished items.

    The bar is advanced in the caller's process as results arrive, so a worker waiting
    for `gate` waits exactly until the caller has seen `open_at` other items finish.
    """

    def __init__(self, gate: Path, open_at: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = gate
        self.open_at = open_at

    def update(self, n: float | None = 1) -> bool | None:
        shown = super().update(n)
        if self.n >= self.open_at:
            self.gate.touch()
        return shown

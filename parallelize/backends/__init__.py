"""The one small protocol every backend implements, and the lookup by name.

A backend is an `Executor`: the shared runner (`parallelize._run`) hands it chunks
of consecutive items with `submit`, and pumps it with `collect`, which blocks until
some outcomes are ready. An outcome is either a run of consecutive results
`(start_index, [values])` or a `Failed` item. Ordering, `errors=`, retries, progress
and error notes live in the runner, written once; a backend only runs items and
reports what happened to each of them, exactly once.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeAlias

if TYPE_CHECKING:  # worker processes import this package: keep it light
    from .._settings import Settings
    from ._tally import WorkTally

__all__ = ["Executor", "Failed", "Job", "Outcome", "create_executor", "make_item_call"]


class Job(NamedTuple):
    """What every item of one call runs: `func(item, *args, **kwargs)`."""

    func: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    star: bool
    timeout: float | None


class Failed:
    """One item that failed, with the exception to report in its place."""

    __slots__ = ("error", "index", "item")

    def __init__(self, index: int, item: Any, error: BaseException) -> None:
        self.index = index
        self.item = item
        self.error = error


Outcome: TypeAlias = "tuple[int, list[Any]] | Failed"


class Executor(Protocol):
    """Runs the chunks of one call at a time; its workers may outlive the call."""

    workers: int

    @property
    def tally(self) -> WorkTally:
        """What the workers of the current (or last) call did; new at each `start`."""

    def start(self, job: Job, total: int | None) -> None:
        """Get ready to run `job` over `total` items (None: unknown); start workers."""

    def chunk_size(self) -> int:
        """How many items the next submitted chunk should hold."""

    def has_room(self) -> bool:
        """Whether another chunk may be submitted now (bounds the read-ahead).

        The runner draws from the input only while this holds, and collects otherwise:
        an executor may say no while outcomes wait or a deadline is due, so that a slow
        input holds up neither results nor timeouts."""

    def submit(self, start: int, items: list[Any]) -> None:
        """Queue `items`, whose first item has index `start` in the input."""

    def pending(self) -> bool:
        """Whether any submitted item has not been reported yet."""

    def collect(self) -> list[Outcome]:
        """Block until an outcome is ready, room for a chunk opens, or nothing is
        pending; return the ready outcomes (possibly none)."""

    def finish(self, *, cancel: bool) -> None:
        """End the call; `cancel=True` drops unreported work and stops what runs it."""

    def shutdown(self) -> None:
        """End every worker. The executor may be started again afterwards."""


def make_item_call(job: Job) -> Callable[[Any], Any]:
    """The one-argument callable that runs one item of `job`, as cheap as possible."""
    func, args, kwargs = job.func, job.args, job.kwargs
    if job.star:
        return lambda item: func(*item, *args, **kwargs)
    if args or kwargs:
        return lambda item: func(item, *args, **kwargs)
    return func


_MODULES = {
    "process": "parallelize.backends.process",
    "thread": "parallelize.backends.thread",
    "serial": "parallelize.backends.serial",
    "dask": "parallelize.backends.dask",
    "ray": "parallelize.backends.ray",
}
_EXTRAS = {"dask": "distributed", "ray": "ray"}


def create_executor(name: str, settings: Settings, *, coroutine: bool = False) -> Executor:
    """A new executor for backend `name`, importing its module only now.

    Coroutine functions run on an event loop whatever the local backend: one item
    at a time under `"serial"`, up to `workers` at once otherwise.
    """
    if coroutine and name in ("process", "thread", "serial"):
        from . import coroutines

        return coroutines.create(settings, serial=name == "serial")
    if name in _EXTRAS:
        try:
            importlib.import_module(_EXTRAS[name])
        except ImportError as exc:
            raise ImportError(
                f'backend={name!r} needs an optional dependency: pip install "parallelize[{name}]"'
            ) from exc
    module = importlib.import_module(_MODULES[name])
    executor: Executor = module.create(settings)
    return executor

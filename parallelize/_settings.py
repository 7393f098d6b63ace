"""The settings of one parallel function: one frozen dataclass, checked when it is built.

Checking here, at decoration time, means a typo or a bad value fails on the line that
wrote it, not minutes later inside a worker.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import multiprocessing
import os
from collections.abc import Callable, Mapping
from typing import Any, Literal

__all__ = ["BACKENDS", "Settings", "backend_name", "validate_option_names"]

BACKENDS = ("process", "thread", "serial", "dask", "ray")
ERRORS = ("raise", "return")
START_METHODS = ("fork", "spawn", "forkserver")
BACKEND_ENV = "PARALLELIZE_BACKEND"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_dask_client(value: object) -> bool:
    """True for a `distributed.Client`, recognised without importing dask."""
    return any(
        cls.__name__ == "Client" and cls.__module__.split(".")[0] == "distributed"
        for cls in type(value).__mro__
    )


def _is_tqdm(value: object) -> bool:
    from tqdm.std import tqdm

    return isinstance(value, tqdm)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every setting of `@parallel`, validated on construction (see API.md section 1)."""

    workers: int | None = None
    ordered: bool = True
    backend: Any = "process"
    progress: Any = False
    chunksize: int | None = None
    timeout: float | None = None
    retries: int = 0
    errors: Literal["raise", "return"] = "raise"
    star: bool = False
    initializer: Callable[..., object] | None = None
    initargs: tuple[Any, ...] = ()
    max_tasks_per_worker: int | None = None
    start_method: str | None = None
    keep_alive: bool = False
    inner_threads: int | None = None
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception

    def __post_init__(self) -> None:
        _check_positive_int("workers", self.workers, allow_none=True)
        for flag in ("ordered", "star", "keep_alive"):
            value = getattr(self, flag)
            if not isinstance(value, bool):
                raise TypeError(f"{flag} must be True or False, got {value!r}")
        if not (
            (isinstance(self.backend, str) and self.backend in BACKENDS)
            or _is_dask_client(self.backend)
        ):
            raise ValueError(
                f"backend must be one of {', '.join(map(repr, BACKENDS))} "
                f"or a distributed.Client, got {self.backend!r}"
            )
        if not (isinstance(self.progress, (bool, str, dict)) or _is_tqdm(self.progress)):
            raise TypeError(
                "progress must be True/False, a description str, a dict of tqdm "
                f"arguments or a tqdm bar, got {self.progress!r}"
            )
        _check_positive_int("chunksize", self.chunksize, allow_none=True)
        _check_positive_int("max_tasks_per_worker", self.max_tasks_per_worker, allow_none=True)
        _check_positive_int("inner_threads", self.inner_threads, allow_none=True)
        classes = self.retry_on if isinstance(self.retry_on, tuple) else (self.retry_on,)
        if not classes or not all(
            isinstance(cls, type) and issubclass(cls, BaseException) for cls in classes
        ):
            raise TypeError(
                "retry_on must be an exception class or a tuple of exception classes, "
                f"got {self.retry_on!r}"
            )
        if self.timeout is not None and not (
            isinstance(self.timeout, (int, float))
            and not isinstance(self.timeout, bool)
            and self.timeout > 0
            and math.isfinite(self.timeout)
        ):
            raise ValueError(
                f"timeout must be a number of seconds > 0 (or None for no limit), "
                f"got {self.timeout!r}"
            )
        if not _is_int(self.retries) or self.retries < 0:
            raise ValueError(f"retries must be an int >= 0, got {self.retries!r}")
        if self.errors not in ERRORS:
            raise ValueError(f"errors must be 'raise' or 'return', got {self.errors!r}")
        if self.initializer is not None and not callable(self.initializer):
            raise TypeError(f"initializer must be callable or None, got {self.initializer!r}")
        if not isinstance(self.initargs, tuple):
            raise TypeError(f"initargs must be a tuple, got {self.initargs!r}")
        if self.start_method is not None:
            available = multiprocessing.get_all_start_methods()
            if self.start_method not in available:
                raise ValueError(
                    f"start_method must be one of {', '.join(map(repr, available))} "
                    f"on this platform (or None for its default), got {self.start_method!r}"
                )

    def replace(self, **changes: Any) -> Settings:
        """A copy with `changes` applied, validated like a new one."""
        validate_option_names(changes, "options")
        return dataclasses.replace(self, **changes)


SETTING_NAMES = tuple(field.name for field in dataclasses.fields(Settings))


def validate_option_names(names: Mapping[str, object], where: str) -> None:
    """Refuse unknown setting names with a suggestion (a typo must not be ignored)."""
    for name in names:
        if name not in SETTING_NAMES:
            close = difflib.get_close_matches(name, SETTING_NAMES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TypeError(
                f"{where}() got an unknown setting {name!r}{hint}; "
                f"accepted: {', '.join(SETTING_NAMES)}"
            )


def _check_positive_int(name: str, value: object, *, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if not _is_int(value):
        raise TypeError(f"{name} must be an int >= 1, got {value!r}")
    assert isinstance(value, int)
    if value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def backend_name(settings: Settings) -> str:
    """The backend a call runs on: `PARALLELIZE_BACKEND` wins over the setting."""
    forced = os.environ.get(BACKEND_ENV, "").strip()
    if forced:
        if forced not in BACKENDS:
            raise ValueError(f"{BACKEND_ENV} must be one of {', '.join(BACKENDS)}, got {forced!r}")
        return forced
    if _is_dask_client(settings.backend):
        return "dask"
    name: str = settings.backend
    return name

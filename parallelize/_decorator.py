"""The `@parallel` decorator and the parallel function it makes.

The decorator only knows settings, the shared runner and the backend protocol: it
picks an executor by name and never touches a pool. wrapt keeps the function's
name, docstring, signature and method binding; the proxy adds `.iter`, `.options`,
`.func`, `.aio` and `.close`.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import inspect
import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import (
    TYPE_CHECKING,
    Any,
    Concatenate,
    Generic,
    Literal,
    ParamSpec,
    TypedDict,
    TypeVar,
    cast,
    overload,
)

import wrapt

from . import _context
from ._run import run
from ._settings import Settings, backend_name, validate_option_names
from ._stats import CallStats
from .backends import Executor, Job, create_executor

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["ParallelFunction", "is_parallel_function", "parallel"]

T = TypeVar("T")
P = ParamSpec("P")
R = TypeVar("R")


def _check_items(items: object, name: str) -> int | None:
    """Refuse input that is not a collection of items; return its length if known."""
    if isinstance(items, (str, bytes, bytearray)) or not isinstance(items, Iterable):
        kind = type(items).__name__
        raise TypeError(
            f"{name}() takes an iterable of items (a list, tuple, range, generator...), "
            f"got a {kind}: {items!r:.60}. Pass a list of items, e.g. {name}([x]), "
            f"or call {name}.func(x) to run the function on one item."
        )
    try:
        return len(items)  # type: ignore[arg-type]
    except TypeError:
        return None


class _Calls(Generic[T, P, R]):
    """The parallel-function API, shared by the plain and the method-bound wrapper."""

    __wrapped__: Callable[..., Any]

    def _parallel_parent(self) -> ParallelFunction[T, P, R]:
        raise NotImplementedError

    def _item_function(self) -> Callable[..., Any]:
        return self.__wrapped__

    def _resolve(
        self, items: Any, args: tuple[Any, ...]
    ) -> tuple[Callable[..., Any], Any, tuple[Any, ...]]:
        """The per-item function, the items and the extra arguments of a call."""
        return self._item_function(), items, args

    @property
    def func(self) -> Callable[Concatenate[T, P], R]:
        """The undecorated single-item function."""
        return self._item_function()

    def __call__(self, items: Iterable[T], /, *args: P.args, **kwargs: P.kwargs) -> list[R]:
        """Run the function on every item; return the results as a list."""
        results: list[R] = []
        runs = self._runs(items, args, kwargs, bounded=False)
        try:
            for values in runs:
                results.extend(values)
        finally:
            runs.close()
        return results

    def iter(self, items: Iterable[T], /, *args: P.args, **kwargs: P.kwargs) -> Iterator[R]:
        """Yield results as they are ready, drawing items only as workers free up."""
        runs = self._runs(items, args, kwargs, bounded=True)
        return _flatten(runs)

    async def aio(self, items: Iterable[T], /, *args: P.args, **kwargs: P.kwargs) -> list[R]:
        """The same list as calling the function, without blocking the event loop."""
        import asyncio  # only here: it costs every worker process ~50 ms to import

        call = functools.partial(self.__call__, items, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(None, call)

    def options(self, **settings: Unpack[OptionArguments]) -> ParallelFunction[T, P, R]:
        """A new parallel function with some settings replaced; this one is unchanged."""
        parent = self._parallel_parent()
        return ParallelFunction(parent.__wrapped__, parent._self_settings.replace(**settings))

    @property
    def stats(self) -> CallStats | None:
        """What the most recent call that finished did (None before the first): items,
        failures, retries, wall time, workers replaced, per-worker work and the
        slowest items. Read it from any thread."""
        return self._parallel_parent()._self_stats

    def close(self) -> None:
        """End the workers kept alive by `keep_alive=True` (a no-op otherwise).

        A call running on them meanwhile (in another thread, or a suspended `.iter()`)
        completes first: they end when it does.
        """
        self._parallel_parent()._close_when_idle()

    def _runs(
        self, items: Iterable[T], args: tuple[Any, ...], kwargs: dict[str, Any], *, bounded: bool
    ) -> Generator[list[Any], None, None]:
        parent = self._parallel_parent()
        func, items, args = self._resolve(items, args)
        name: str = getattr(parent.__wrapped__, "__name__", None) or "function"
        total = _check_items(items, name)
        settings = parent._self_settings
        backend = backend_name(settings)
        if _context.inside_worker():
            backend = "serial"
        job = Job(func, args, kwargs, settings.star, settings.timeout)
        kind = (backend, inspect.iscoroutinefunction(func))
        return parent._run_call(kind, job, items, total, name, bounded)


def _flatten(runs: Generator[list[Any], None, None]) -> Iterator[Any]:
    try:
        for values in runs:
            yield from values
    finally:
        runs.close()


class BoundParallelFunction(_Calls[T, P, R], wrapt.BoundFunctionWrapper[..., Any]):
    """A parallel function reached through an instance or a class (a method)."""

    def _parallel_parent(self) -> ParallelFunction[T, P, R]:
        parent: ParallelFunction[T, P, R] = self._self_parent
        return parent

    def _resolve(
        self, items: Any, args: tuple[Any, ...]
    ) -> tuple[Callable[..., Any], Any, tuple[Any, ...]]:
        # `Class.method(obj, items)`: wrapt's convention, the instance comes first.
        if (
            self._self_binding in ("function", "callable")
            and self._self_instance is None
            and args
            and isinstance(items, self._self_owner)
        ):
            return functools.partial(self.__wrapped__, items), args[0], args[1:]
        return self.__wrapped__, items, args

    def options(self, **settings: Unpack[OptionArguments]) -> ParallelFunction[T, P, R]:
        """A new parallel function with some settings replaced, bound like this one."""
        unbound = super().options(**settings)
        bound: Any = unbound.__get__(self._self_instance, self._self_owner)
        return cast("ParallelFunction[T, P, R]", bound)


class ParallelFunction(_Calls[T, P, R], wrapt.FunctionWrapper[..., Any]):
    """A function of one item turned into a function of many items.

    >>> @parallel(backend="serial")
    ... def square(x):
    ...     return x * x
    >>> square([1, 2, 3])
    [1, 4, 9]
    """

    __bound_function_wrapper__ = BoundParallelFunction

    def __init__(self, func: Callable[Concatenate[T, P], R], settings: Settings) -> None:
        super().__init__(func, _unused_wrapper)
        self._self_settings = settings
        self._self_kept: tuple[tuple[str, bool], Executor] | None = None
        self._self_kept_lock = threading.Lock()  # held by the call using the kept pool
        self._self_close_lock = threading.Lock()  # orders close() and a call's end
        self._self_close_requested = False
        self._self_stats: CallStats | None = None

    def _parallel_parent(self) -> ParallelFunction[T, P, R]:
        return self

    def _record_stats(self, stats: CallStats) -> None:
        self._self_stats = stats  # one assignment: readers in other threads see it whole

    def __reduce_ex__(self, protocol: object) -> tuple[Any, ...]:
        from ._sending import importable

        module = getattr(self.__wrapped__, "__module__", None)
        qualname = getattr(self.__wrapped__, "__qualname__", "")
        if importable(module) and "<" not in qualname:
            return (_load_parallel_function, (module, qualname))
        # By value; a bar cannot cross processes, and a nested call shows none.
        settings = dataclasses.replace(self._self_settings, progress=False)
        return (ParallelFunction, (self.__wrapped__, settings))

    def _run_call(
        self,
        kind: tuple[str, bool],
        job: Job,
        items: Iterable[Any],
        total: int | None,
        name: str,
        bounded: bool,
    ) -> Generator[list[Any], None, None]:
        settings = self._self_settings
        kept = settings.keep_alive and self._self_kept_lock.acquire(blocking=False)
        executor = self._kept_executor(kind) if kept else _new_executor(kind, settings)
        try:
            yield from run(
                executor,
                job,
                items,
                total,
                settings,
                name,
                bounded=bounded,
                on_end=self._record_stats,
            )
        except KeyboardInterrupt:
            if kept:  # Ctrl-C ends every worker, kept ones too; the next call starts anew
                self._release_kept()
            raise
        finally:
            if kept:
                with self._self_close_lock:
                    if self._self_close_requested:
                        self._self_close_requested = False
                        self._release_kept()
                    self._self_kept_lock.release()
            else:
                executor.shutdown()

    def _kept_executor(self, kind: tuple[str, bool]) -> Executor:
        if self._self_kept is not None and self._self_kept[0] != kind:
            self._release_kept()
        if self._self_kept is None:
            self._self_kept = (kind, _new_executor(kind, self._self_settings))
            _KEPT.add(self)
        return self._self_kept[1]

    def _close_when_idle(self) -> None:
        with self._self_close_lock:
            if self._self_kept_lock.acquire(blocking=False):
                try:
                    self._release_kept()
                finally:
                    self._self_kept_lock.release()
            else:
                self._self_close_requested = True

    def _release_kept(self) -> None:
        kept, self._self_kept = self._self_kept, None
        _KEPT.discard(self)
        if kept is not None:
            kept[1].shutdown()


def _new_executor(kind: tuple[str, bool], settings: Settings) -> Executor:
    """An executor for a (backend name, is-a-coroutine-function) pair."""
    backend, coroutine = kind
    return create_executor(backend, settings, coroutine=coroutine)


def _unused_wrapper(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """wrapt requires a wrapper; `_Calls.__call__` replaces the call path entirely."""
    return wrapped(*args, **kwargs)


def _load_parallel_function(module: str, qualname: str) -> Any:
    import importlib

    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


_KEPT: set[ParallelFunction[Any, Any, Any]] = set()


def _close_kept() -> None:
    """At interpreter exit, end every pool kept alive by `keep_alive=True`."""
    for function in list(_KEPT):
        function._release_kept()


def is_parallel_function(obj: object) -> bool:
    return isinstance(obj, (ParallelFunction, BoundParallelFunction))


class SettingArguments(TypedDict, total=False):
    """The keyword settings of `@parallel` and `.options()`, for type checkers."""

    workers: int | None
    ordered: bool
    backend: Any
    progress: Any
    chunksize: int | None
    timeout: float | None
    retries: int
    errors: Literal["raise", "return"]
    initializer: Callable[..., object] | None
    initargs: tuple[Any, ...]
    max_tasks_per_worker: int | None
    start_method: Literal["fork", "spawn", "forkserver"] | None
    keep_alive: bool
    inner_threads: int | None
    retry_on: type[BaseException] | tuple[type[BaseException], ...]


class OptionArguments(SettingArguments, total=False):
    """The settings `.options()` accepts: all of them, `star` included."""

    star: bool


@overload
def parallel(func: Callable[Concatenate[T, P], R], /) -> ParallelFunction[T, P, R]: ...


@overload
def parallel(
    *, star: Literal[True], **settings: Unpack[SettingArguments]
) -> Callable[[Callable[..., R]], ParallelFunction[Any, ..., R]]: ...


@overload
def parallel(
    *, star: Literal[False] = False, **settings: Unpack[SettingArguments]
) -> Callable[[Callable[Concatenate[T, P], R]], ParallelFunction[T, P, R]]: ...


def parallel(func: Callable[..., Any] | None = None, /, **settings: Any) -> Any:
    """Turn a function of one item into a function of an iterable of items.

    Works bare (`@parallel`) and with settings (`@parallel(workers=4)`); every
    setting is checked here, so a bad one fails where it is written.

    >>> @parallel(backend="thread", workers=2)
    ... def double(x):
    ...     return 2 * x
    >>> double(range(4))
    [0, 2, 4, 6]
    """
    validate_option_names(settings, "parallel")
    checked = Settings(**settings)

    def decorate(function: Callable[..., Any]) -> ParallelFunction[Any, Any, Any]:
        if not callable(function) and not isinstance(function, (classmethod, staticmethod)):
            raise TypeError(
                f"parallel() takes a function to decorate, or keyword settings such as "
                f"@parallel(workers=4); got {function!r}"
            )
        return ParallelFunction(function, checked)

    if func is None:
        return decorate
    return decorate(func)


atexit.register(_close_kept)

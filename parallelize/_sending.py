"""Pickling what crosses a process boundary: functions by reference when possible.

A decorated module-level function has a problem plain pickle cannot solve: the
module's name `f` now points to the parallel wrapper, so pickling the original
function by reference fails with "it's not the same object as module.f". The
pickler here sends such a function as "the function wrapped by module.f", which
the worker resolves by importing the module. Anything plain pickle cannot send
by reference (lambdas, closures, functions of a notebook) goes by value through
cloudpickle, and only then, so importable functions stay on the fast path.
"""

from __future__ import annotations

import contextvars
import importlib
import io
import os
import pickle
import sys
import types
from typing import Any

__all__ = ["dumps", "importable", "load_wrapped", "loads", "unwrapped_attribute"]

PROTOCOL = pickle.HIGHEST_PROTOCOL
_FOREIGN: contextvars.ContextVar[bool] = contextvars.ContextVar("foreign", default=False)


def load_wrapped(module: str, qualname: str) -> Any:
    """Import `module.qualname` and return the function a parallel wrapper there wraps."""
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return unwrap(obj)


def unwrap(obj: Any) -> Any:
    """The single-item function behind a parallel wrapper; anything else unchanged."""
    from ._decorator import is_parallel_function

    return obj.__wrapped__ if is_parallel_function(obj) else obj


def importable(module_name: str | None) -> bool:
    """Whether a new worker process can import `module_name` to find names in it.

    A `__main__` without a file (a notebook, `python -c`, an `exec`) cannot be
    imported again by a spawned worker: what it defines must travel by value.
    """
    if not module_name or module_name not in sys.modules:
        return False
    if module_name == "__main__" and _FOREIGN.get():
        return False
    return module_name != "__main__" or main_is_a_file()


def main_is_a_file() -> bool:
    """Whether `__main__` came from a file a new process can run again (not `<stdin>`)."""
    main_file = getattr(sys.modules["__main__"], "__file__", None)
    return main_file is not None and os.path.isfile(main_file)


def unwrapped_attribute(owner: Any, name: str) -> Any:
    """`owner.name`, unwrapped: how a method decorated with `@parallel` is sent."""
    return unwrap(getattr(owner, name))


def _by_reference(obj: Any) -> tuple[Any, ...] | None:
    """A reduce value naming the wrapper that now stands where `obj` was defined."""
    from ._decorator import is_parallel_function

    if isinstance(obj, types.MethodType):
        name = getattr(obj.__func__, "__name__", "")
        attribute = getattr(obj.__self__, name, None)
        if is_parallel_function(attribute) and unwrap(attribute) == obj:
            return (unwrapped_attribute, (obj.__self__, name))
        return None
    if not isinstance(obj, types.FunctionType):
        return None
    module_name = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", "")
    if not importable(module_name) or "<" in qualname:
        return None
    owner: Any = sys.modules[str(module_name)]
    try:
        for part in qualname.split("."):
            owner = getattr(owner, part)
    except AttributeError:
        return None
    if owner is not obj and is_parallel_function(owner) and unwrap(owner) is obj:
        return (load_wrapped, (module_name, qualname))
    return None


class _NeedsValue(pickle.PicklingError):
    """Plain pickle would send this by a reference the worker cannot resolve."""


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        reduced = _by_reference(obj)
        if reduced is not None:
            return reduced
        if (
            isinstance(obj, (types.FunctionType, type))
            and getattr(obj, "__module__", None) == "__main__"
            and not importable("__main__")
        ):
            raise _NeedsValue(f"{obj!r} is defined in a __main__ that workers cannot import")
        return NotImplemented


def dumps(obj: Any, *, foreign: bool = False) -> bytes:
    """Pickle `obj` for another process: plain pickle, then by reference to wrapped
    functions, then cloudpickle for what must travel by value.

    `foreign=True` is for a process that does not run our `__main__` at all (a Dask
    or Ray worker): everything defined in `__main__` then travels by value.
    """
    token = _FOREIGN.set(foreign)
    try:
        return _dumps(obj)
    finally:
        _FOREIGN.reset(token)


def _dumps(obj: Any) -> bytes:
    # Not plain `pickle.dumps`: a bound method would arrive as its parallel wrapper.
    # The override costs nothing for ints, strs, lists and the like (never consulted).
    buffer = io.BytesIO()
    try:
        _Pickler(buffer, PROTOCOL).dump(obj)
        return buffer.getvalue()
    except Exception:
        pass
    import cloudpickle

    class _CloudPickler(cloudpickle.Pickler):  # type: ignore[misc]
        def reducer_override(self, obj: Any) -> Any:
            from ._decorator import is_parallel_function

            if is_parallel_function(obj):  # a proxy that passes for a function
                return NotImplemented  # its own __reduce_ex__ decides
            reduced = _by_reference(obj)
            return super().reducer_override(obj) if reduced is None else reduced

    buffer = io.BytesIO()
    _CloudPickler(buffer, PROTOCOL).dump(obj)
    return buffer.getvalue()


loads = pickle.loads

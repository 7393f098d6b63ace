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

import importlib
import io
import pickle
import types
from typing import Any

__all__ = ["dumps", "load_wrapped", "loads"]

PROTOCOL = pickle.HIGHEST_PROTOCOL


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


def _by_reference(obj: Any) -> tuple[Any, ...] | None:
    """A reduce value naming the wrapper that now stands where `obj` was defined."""
    if not isinstance(obj, types.FunctionType):
        return None
    module_name = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", "")
    if not module_name or "<" in qualname:
        return None
    import sys

    owner: Any = sys.modules.get(module_name)
    try:
        for part in qualname.split("."):
            owner = getattr(owner, part)
    except AttributeError:
        return None
    from ._decorator import is_parallel_function

    if owner is not obj and is_parallel_function(owner) and unwrap(owner) is obj:
        return (load_wrapped, (module_name, qualname))
    return None


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        reduced = _by_reference(obj)
        return NotImplemented if reduced is None else reduced


def dumps(obj: Any) -> bytes:
    """Pickle `obj` for a worker: plain pickle first, cloudpickle for what needs it."""
    buffer = io.BytesIO()
    try:
        _Pickler(buffer, PROTOCOL).dump(obj)
        return buffer.getvalue()
    except (pickle.PicklingError, TypeError, AttributeError):
        pass
    import cloudpickle

    class _CloudPickler(cloudpickle.Pickler):  # type: ignore[misc]
        def reducer_override(self, obj: Any) -> Any:
            reduced = _by_reference(obj)
            return super().reducer_override(obj) if reduced is None else reduced

    buffer = io.BytesIO()
    _CloudPickler(buffer, PROTOCOL).dump(obj)
    return buffer.getvalue()


loads = pickle.loads

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
# Contiguous buffers at least this large travel out of band when the caller asks
# (`dumps(..., buffers=[])`): smaller ones cost less to copy than to frame.
OUT_OF_BAND_BYTES = 64 * 1024
_FOREIGN: contextvars.ContextVar[bool] = contextvars.ContextVar("foreign", default=False)


def load_wrapped(module: str, qualname: str) -> Any:
    """Import `module.qualname` and return the function a parallel wrapper there wraps."""
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return unwrap(obj)


def unwrap(obj: Any) -> Any:
    """The single-item function behind a parallel wrapper; anything else unchanged."""
    return obj.__wrapped__ if _is_parallel_function(obj) else obj


def _is_parallel_function(obj: Any) -> bool:
    # Without the decorator module loaded there is no wrapper to find; a worker
    # process that runs plain functions never pays for importing it (and wrapt).
    decorator = sys.modules.get("parallelize._decorator")
    return decorator is not None and bool(decorator.is_parallel_function(obj))


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
    if isinstance(obj, types.MethodType):
        name = getattr(obj.__func__, "__name__", "")
        attribute = getattr(obj.__self__, name, None)
        if _is_parallel_function(attribute) and unwrap(attribute) == obj:
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
    if owner is not obj and _is_parallel_function(owner) and unwrap(owner) is obj:
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


def dumps(obj: Any, *, foreign: bool = False, buffers: list[memoryview] | None = None) -> bytes:
    """Pickle `obj` for another process: plain pickle, then by reference to wrapped
    functions, then cloudpickle for what must travel by value.

    `foreign=True` is for a process that does not run our `__main__` at all (a Dask
    or Ray worker): everything defined in `__main__` then travels by value. With
    `buffers`, large buffers are appended there instead (pickle protocol 5, out of
    band); `loads` then needs them back in the same order.
    """
    token = _FOREIGN.set(foreign)
    try:
        return _dumps(obj, buffers)
    finally:
        _FOREIGN.reset(token)


def loads(data: Any, buffers: list[memoryview] | None = None) -> Any:
    """Rebuild what `dumps` pickled, with the buffers it set apart."""
    return pickle.loads(data, buffers=buffers)


def _out_of_band(buffers: list[memoryview] | None) -> Any:
    """A protocol 5 `buffer_callback` that sets large contiguous buffers apart."""
    if buffers is None:
        return None
    buffers.clear()

    def set_apart(buffer: pickle.PickleBuffer) -> bool:
        try:
            view = buffer.raw()
        except BufferError:  # not contiguous: pickled in band
            return True
        if view.nbytes < OUT_OF_BAND_BYTES:
            return True
        buffers.append(view)
        return False

    return set_apart


def _dumps(obj: Any, buffers: list[memoryview] | None) -> bytes:
    # Not plain `pickle.dumps`: a bound method would arrive as its parallel wrapper.
    # The override costs nothing for ints, strs, lists and the like (never consulted).
    buffer = io.BytesIO()
    try:
        _Pickler(buffer, PROTOCOL, buffer_callback=_out_of_band(buffers)).dump(obj)
        return buffer.getvalue()
    except Exception:
        pass
    import cloudpickle

    class _CloudPickler(cloudpickle.Pickler):  # type: ignore[misc]
        def reducer_override(self, obj: Any) -> Any:
            if _is_parallel_function(obj):  # a proxy that passes for a function
                return NotImplemented  # its own __reduce_ex__ decides
            reduced = _by_reference(obj)
            return super().reducer_override(obj) if reduced is None else reduced

    buffer = io.BytesIO()
    _CloudPickler(buffer, PROTOCOL, buffer_callback=_out_of_band(buffers)).dump(obj)
    return buffer.getvalue()

"""Making outcomes safe to cross a process boundary, for every backend that needs it."""

from __future__ import annotations

import pickle
from typing import Any

from .._errors import ParallelError, short_repr
from .._sending import dumps, loads

__all__ = ["error_payload", "result_errors", "unsendable"]


def error_payload(exc: BaseException) -> tuple[BaseException, str]:
    """`exc` and its traceback as text, made safe to unpickle in the parent.

    An exception whose class cannot be rebuilt from its pickle (an `__init__` with
    extra required arguments is the classic case) would otherwise make the parent
    fail while reading the message; it is replaced by a `ParallelError` saying so.
    """
    import traceback  # only on failure: it costs a worker ~6 ms to import

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        loads(dumps(exc))
    except BaseException as why:  # a `__reduce__` may even call sys.exit()
        exc = ParallelError(
            f"{type(exc).__qualname__}: {short_repr(str(exc))} was raised, but it cannot be "
            f"sent back to the parent process ({type(why).__name__}: {why}); "
            "make the exception class picklable (pass all __init__ arguments to super())"
        )
    exc.__traceback__ = None
    return exc, text


def result_errors(values: list[Any]) -> list[tuple[int, BaseException]]:
    """Which results cannot be pickled, and why."""
    bad: list[tuple[int, BaseException]] = []
    for offset, value in enumerate(values):
        try:
            dumps(value)
        except BaseException as exc:
            bad.append((offset, exc))
    return bad


def unsendable(exc: BaseException, what: str) -> Exception:
    """A `TypeError` or `PicklingError` saying `what` could not cross the boundary."""
    kind = exc if isinstance(exc, (TypeError, pickle.PicklingError)) else pickle.PicklingError()
    return type(kind)(f"{what} cannot be pickled: {type(exc).__name__}: {exc}")

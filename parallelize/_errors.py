"""The exceptions parallelize raises, and how a failed item's exception is annotated.

Each class also inherits the standard exception a user would catch without knowing
parallelize (`except TimeoutError` catches a `TaskTimeoutError`).
"""

from __future__ import annotations

import reprlib
import sys
from typing import Any

__all__ = [
    "ParallelError",
    "RemoteTraceback",
    "TaskTimeoutError",
    "WorkerLostError",
    "annotate",
    "with_remote_traceback",
]


class ParallelError(Exception):
    """Raised when parallelize itself, rather than the user's function, fails an item."""


class TaskTimeoutError(ParallelError, TimeoutError):
    """Raised when one item runs longer than the `timeout` setting allows."""


class WorkerLostError(ParallelError, RuntimeError):
    """Raised when the worker running an item died (a signal, `os._exit`, a crash, OOM)."""


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker process, as text.

    Set as the `__cause__` of the re-raised exception so the worker's frames print
    under "The above exception was the direct cause of the following exception".
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


_short = reprlib.Repr()
_short.maxstring = 60
_short.maxother = 60
_short.maxlist = _short.maxtuple = _short.maxdict = _short.maxset = 4
_short.maxlevel = 2


def short_repr(value: Any) -> str:
    """A repr of `value` short enough for an error note, whatever its size."""
    try:
        return _short.repr(value)
    except Exception:  # a broken __repr__ must not hide the real error
        return f"<{type(value).__name__} object>"


def annotate(exc: BaseException, index: int, item: Any, func_name: str) -> BaseException:
    """Add a note naming the failed item to `exc` and return it.

    On 3.11+ the note prints under the exception; on 3.10 it is kept in `__notes__`
    all the same, so code that reads it works on every version.
    """
    note = f"parallelize: {func_name}() failed on item {index}: {short_repr(item)}"
    if sys.version_info >= (3, 11):
        exc.add_note(note)
    else:  # pragma: no cover - exercised on 3.10 only
        notes = getattr(exc, "__notes__", None)
        if not isinstance(notes, list):
            notes = []
            try:
                exc.__notes__ = notes  # type: ignore[attr-defined]
            except AttributeError:
                return exc
        notes.append(note)
    return exc


def with_remote_traceback(exc: BaseException, text: str) -> BaseException:
    """`exc` as raised in a worker, with the worker's traceback `text` as its cause."""
    exc.__cause__ = RemoteTraceback(text)
    return exc

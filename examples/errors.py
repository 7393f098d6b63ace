"""Failures: errors="raise" re-raises a worker's exception with its own type, a note naming the
item and the worker traceback as __cause__; errors="return" puts each exception in its item's place.
"""

import textwrap
import time

from parallelize import TaskTimeoutError, parallel


@parallel(workers=2)
def parse(text: str) -> int:
    return int(text)  # ValueError for anything that is not a number


@parallel(workers=2, timeout=0.5, errors="return")
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


if __name__ == "__main__":
    texts = ["1", "2", "three", "4", "five"]

    try:
        parse(texts)  # errors="raise" is the default
    except ValueError as exc:  # the original type, so a normal except clause works
        print(f"raised: {type(exc).__name__}: {exc}")
        for note in getattr(exc, "__notes__", []):  # notes exist on Python 3.11+
            print(f"note:   {note}")
        if exc.__cause__ is not None:
            print(f"cause:  {type(exc.__cause__).__name__}")
            print(textwrap.indent(str(exc.__cause__).strip(), "    "))

    results = parse.options(errors="return")(texts)
    print("errors='return':", results)
    print("failed indices: ", [i for i, r in enumerate(results) if isinstance(r, Exception)])

    # An item running over timeout=0.5 s fails with TaskTimeoutError (a TimeoutError and a
    # ParallelError); its worker is replaced and the other items finish normally.
    for result in nap([0.1, 3.0, 0.2]):
        status = "timed out" if isinstance(result, TaskTimeoutError) else "finished"
        print(f"nap: {status:<9} {result!r}")

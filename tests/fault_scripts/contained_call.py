"""Call a parallel function whose item 5 fails as asked, and report what came back.

Run by `tests/test_faults.py` as `python contained_call.py BACKEND MODE KIND HOW`
(KIND: "sync" or "async"), in a process of its own, for faults that may make a call
hang: each call gets CALL_SECONDS, after which the report says it hung and the
program ends, so pytest itself never stalls. Prints one JSON object: the outcome of a
call with errors="return", of one with errors="raise", and of a clean next call.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any

import faults

from parallelize import parallel

COUNT = 8
BAD = 5
# Eight items that each return at once take milliseconds; past this the call hung.
CALL_SECONDS = 2.0
FUNCTIONS = {"sync": faults.fault_on, "async": faults.async_fault_at}


def describe(value: Any) -> Any:
    if isinstance(value, BaseException):
        return {"type": type(value).__name__, "notes": list(getattr(value, "__notes__", []))}
    return value


def outcome(function: Any, mode: str, index: int, how: str) -> Any:
    try:
        if mode == "iter":
            return [describe(v) for v in function.iter(range(COUNT), index, how)]
        return [describe(v) for v in function(range(COUNT), index, how)]
    except BaseException as exc:  # what escapes the call is the outcome being tested
        return {"raised": describe(exc)}


def run(function: Any, mode: str, index: int, how: str, report: dict[str, Any], key: str) -> None:
    """`report[key]` = the call's outcome; if it hangs, print the report and end."""
    box: list[Any] = []
    caller = threading.Thread(
        target=lambda: box.append(outcome(function, mode, index, how)), daemon=True
    )
    caller.start()
    caller.join(CALL_SECONDS)
    if not box:
        report[key] = "hung"
        print(json.dumps(report), flush=True)
        os._exit(0)
    report[key] = box[0]


def main() -> None:
    backend, mode, kind, how = sys.argv[1:]
    returning = parallel(backend=backend, workers=2, errors="return", ordered=mode != "unordered")(
        FUNCTIONS[kind]
    )
    report: dict[str, Any] = {}
    run(returning, mode, BAD, how, report, "return")
    raising = returning.options(errors="raise")
    run(raising, mode, BAD, how, report, "raise")
    run(raising, mode, -1, how, report, "next")
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()

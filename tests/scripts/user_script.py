"""A user's script: decorated functions, a class and lambdas defined in its `__main__`.

Run as `python user_script.py <start_method>`: the start method becomes the platform
default (as spawn is on macOS, forkserver on Linux from Python 3.14), so the decorators
below name none. Prints one JSON object, case -> results (or "error: ..."), and the
worker processes still alive at the end under "leftovers".
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
from typing import Any

from leftovers import describe, wait_for_no_children

from parallelize import parallel
from parallelize._sending import dumps, loads


@parallel(workers=2)
def square(x: int) -> int:
    return x * x


class Greeter:
    def __init__(self, greeting: str) -> None:
        self.greeting = greeting

    @parallel(workers=2)
    def greet(self, name: str) -> str:
        return f"{self.greeting}, {name}"

    @parallel(workers=2)
    @classmethod
    def kind(cls, x: int) -> list[Any]:
        return [cls.__name__, x]

    @parallel(workers=2)
    @staticmethod
    def negate(x: int) -> int:
        return -x


double = parallel(workers=2)(lambda x: 2 * x)
where = parallel(workers=2)(lambda x: os.getpid())


def run_cases(start_method: str) -> dict[str, Any]:
    shift = 100
    add_shift = parallel(workers=2)(lambda x: x + shift)

    @parallel(workers=2)
    def nested(x: int) -> int:
        return x - shift

    greeter = Greeter("hi")
    cases = {
        "function": lambda: square([1, 2, 3]),
        "function-explicit-start-method": lambda: square.options(start_method=start_method)([4, 5]),
        "function-unordered": lambda: sorted(square.options(ordered=False)([1, 2, 3])),
        "function-iter": lambda: list(square.iter([1, 2, 3])),
        "instance-method": lambda: greeter.greet(["ann", "bob"]),
        "method-through-class": lambda: Greeter.greet(greeter, ["ann"]),
        "classmethod": lambda: Greeter.kind([1, 2]),
        "classmethod-through-instance": lambda: greeter.kind([3]),
        "staticmethod": lambda: Greeter.negate([1, 2]),
        "module-level-lambda": lambda: double([1, 2, 3]),
        "lambda-capturing": lambda: add_shift([1, 2]),
        "nested-function": lambda: nested([101, 102]),
        "ran-in-workers": lambda: os.getpid() not in where([1, 2]),
        "function-sent-by-reference": lambda: loads(dumps(square.func)) is square.func,
    }
    results: dict[str, Any] = {}
    for name, case in cases.items():
        try:
            results[name] = case()
        except Exception as exc:
            results[name] = f"error: {type(exc).__name__}: {exc}"[:300]
    return results


def main() -> None:
    start_method = sys.argv[1]
    multiprocessing.set_start_method(start_method)
    results = run_cases(start_method)
    results["leftovers"] = [describe(child) for child in wait_for_no_children()]
    print(json.dumps(results))


if __name__ == "__main__":
    main()

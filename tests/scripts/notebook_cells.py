"""Notebook cells: run with `python -c "$(cat notebook_cells.py)" <start_method>` or fed
on stdin to `python - <start_method>`, so that `__main__` is a module no worker can
import (as in Jupyter). Everything defined here must reach the workers by value.

There is no `if __name__ == "__main__":` guard: notebooks have none. Prints one JSON
object, case -> results (or "error: ..."), and the worker processes still alive at the
end under "leftovers".
"""

import json
import multiprocessing
import os
import sys

from leftovers import describe, wait_for_no_children

from parallelize import parallel
from parallelize._sending import dumps

multiprocessing.set_start_method(sys.argv[1])


@parallel(workers=2)
def square(x):
    return x * x


class Counter:
    def __init__(self, step):
        self.step = step

    @parallel(workers=2)
    def advance(self, x):
        return x + self.step

    @parallel(workers=2)
    @classmethod
    def kind(cls, x):
        return [cls.__name__, x]

    @parallel(workers=2)
    @staticmethod
    def negate(x):
        return -x


shift = 7
add_shift = parallel(workers=2)(lambda x: x + shift)


def make_closure(factor):
    @parallel(workers=2)
    def times(x):
        return x * factor

    return times


@parallel(workers=2)
def inner(x):
    return [os.getpid(), x * 10]


@parallel(workers=2)
def outer(x):
    results = inner([x, x + 1])
    return [x, all(pid == os.getpid() for pid, _ in results), [value for _, value in results]]


counter = Counter(100)
cases = {
    "function": lambda: square([1, 2, 3]),
    "function-unordered": lambda: sorted(square.options(ordered=False)([1, 2, 3])),
    "function-iter": lambda: list(square.iter([1, 2, 3])),
    "instance-method": lambda: counter.advance([1, 2]),
    "classmethod": lambda: Counter.kind([1]),
    "staticmethod": lambda: Counter.negate([1, 2]),
    "lambda-capturing-a-global": lambda: add_shift([1, 2]),
    "closure": lambda: make_closure(3)([1, 2]),
    "ran-in-workers": lambda: os.getpid() not in parallel(workers=2)(lambda x: os.getpid())([1]),
    "nested-parallel": lambda: outer([1, 5]),
    "function-sent-by-value": lambda: b"cloudpickle" in dumps(square.func),
}
results = {}
for name, case in cases.items():
    try:
        results[name] = case()
    except Exception as exc:
        results[name] = f"error: {type(exc).__name__}: {exc}"[:300]
results["leftovers"] = [describe(child) for child in wait_for_no_children()]
print(json.dumps(results))

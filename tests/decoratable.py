"""Everything a user may decorate with `@parallel` (API.md section 3), at module level.

Spawned and forkserver workers import this module by name (the tests folder is on
`sys.path`), so what is defined here at the top level travels by reference; what the
factories below return (lambdas, closures, nested functions, a local class) cannot be
imported and must travel by value.
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

import psutil

from parallelize import parallel

# How long an async item waits for its fellow items before giving up: far longer than
# a correct test needs, far shorter than the per-test timeout, so a scheduler that runs
# too few items at once fails with an assertion instead of a hang.
GATE_SECONDS = 10.0
# How long an async item stays in flight after its gate opened: time for a scheduler
# that ignores `workers` to start more items than allowed, so the high-water mark sees it.
LINGER_SECONDS = 0.01

# -- module-level functions: the module's name now holds the parallel function ------------


@parallel(workers=2)
def square(x: int) -> int:
    """Square one number."""
    return x * x


@parallel
def bare_cube(x: int) -> int:
    return x**3


# -- methods: decorated inside a class body ---------------------------------------------------


class Scaler:
    """Instance state (`factor`) the workers can only know if the object reaches them."""

    def __init__(self, factor: int) -> None:
        self.factor = factor

    @parallel(workers=2)
    def scale(self, x: int) -> int:
        """Multiply one number by this scaler's factor."""
        return x * self.factor

    @parallel(workers=2)
    @classmethod
    def tagged(cls, x: int) -> tuple[str, int]:
        """Pair one number with the name of the class the call went through."""
        return cls.__name__, x

    @parallel(workers=2)
    @staticmethod
    def negate(x: int) -> int:
        return -x


class SubScaler(Scaler):
    """Calls through a subclass: a class method must see `cls is SubScaler`."""


# -- by value: lambdas, closures, nested functions, a local class ----------------------------


def make_lambda(offset: int) -> Any:
    """A decorated lambda capturing `offset`."""
    return parallel(workers=2)(lambda x: x + offset)


def make_closure(factor: int, labels: dict[int, str]) -> Any:
    """A decorated closure capturing an int and a dict."""

    def label(x: int) -> str:
        return f"{labels.get(x, '?')}:{x * factor}"

    return parallel(workers=2)(label)


def make_nested() -> Any:
    """A nested function decorated where it is defined; it captures nothing."""

    @parallel(workers=2)
    def cube(x: int) -> int:
        return x**3

    return cube


def make_local_object(factor: int) -> Any:
    """An instance of a class defined inside a function, with a decorated method."""

    class Local:
        def __init__(self, factor: int) -> None:
            self.factor = factor

        @parallel(workers=2)
        def scale(self, x: int) -> int:
            return x * self.factor

    return Local(factor)


# -- nested parallelism -----------------------------------------------------------------------


def _here() -> dict[str, int]:
    """Where an item runs: process, thread, and how many child processes that process has."""
    return {
        "pid": os.getpid(),
        "thread": threading.get_ident(),
        "children": len(psutil.Process().children(recursive=True)),
    }


@parallel(workers=2)
def inner_where(x: int) -> dict[str, int]:
    """The inner function of a nested call: its value, and where it ran."""
    return {"value": x * 10, **_here()}


@parallel(workers=2)
def outer_calls_inner(x: int, start_method: str, mode: str) -> dict[str, Any]:
    """Call `inner_where` over three items from inside a worker, in the given mode."""
    inner = inner_where.options(start_method=start_method, ordered=mode != "unordered")
    items = [x, x + 1, x + 2]
    results = list(inner.iter(items)) if mode == "iter" else inner(items)
    if mode == "unordered":
        results.sort(key=lambda result: result["value"])
    return {"inner": results, **_here()}


def make_nested_closure(offset: int) -> Any:
    """A decorated closure whose items call another decorated closure (both by value)."""
    inner = parallel(workers=2)(lambda x: (os.getpid(), x + offset))

    def outer(x: int) -> tuple[int, list[tuple[int, int]]]:
        return os.getpid(), inner([x, x + 1])

    return parallel(workers=2)(outer)


# -- async def --------------------------------------------------------------------------------


@parallel(workers=3)
async def async_square(x: int) -> int:
    await asyncio.sleep(0)
    return x * x


@parallel(workers=2)
def outer_calls_async(x: int) -> tuple[int, list[int]]:
    """A process worker's item that calls a decorated `async def` function."""
    return os.getpid(), async_square([x, x + 1])


class AsyncScaler:
    def __init__(self, factor: int) -> None:
        self.factor = factor

    @parallel(workers=2)
    async def scale(self, x: int) -> int:
        await asyncio.sleep(0)
        return x * self.factor


def make_async_closure(offset: int) -> Any:
    async def shifted(x: int) -> int:
        await asyncio.sleep(0)
        return x + offset

    return parallel(workers=2)(shifted)


class Flight:
    """Counts the async items in flight and keeps the high-water mark.

    Every item of a call runs on the one event loop of that call, so plain counters
    are safe. `gate` opens once `parties` items are in flight at once.
    """

    def __init__(self, parties: int) -> None:
        self.parties = parties
        self.running = 0
        self.high = 0
        self.cancelled: list[int] = []
        self.gate: asyncio.Event | None = None  # made on the loop that runs the items


async def rendezvous(x: int, flight: Flight) -> tuple[int, bool]:
    """Wait until `flight.parties` items are in flight; return (x, whether they were).

    The first `parties` items can pass only if that many run at once; later items
    pass at once. The high-water mark must never exceed the allowed concurrency.
    """
    if flight.gate is None:
        flight.gate = asyncio.Event()
    flight.running += 1
    flight.high = max(flight.high, flight.running)
    if flight.running >= flight.parties:
        flight.gate.set()
    try:
        await asyncio.wait_for(flight.gate.wait(), GATE_SECONDS)
        passed = True
    except asyncio.TimeoutError:
        passed = False
    await asyncio.sleep(LINGER_SECONDS)
    flight.running -= 1
    return x, passed


async def async_fail_on(x: int, bad: int) -> int:
    await asyncio.sleep(0)
    if x == bad:
        raise ValueError(f"bad item {x!r}")
    return x


async def async_stuck_on(x: int, stuck: int, flight: Flight) -> int:
    """Item `stuck` sleeps far longer than any timeout; note it if it is cancelled."""
    if x == stuck:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            flight.cancelled.append(x)
            raise
    return x

"""The randomized fault campaign (issue 12): one random scenario, run, then checked.

A scenario is a call of `run_item` (or `run_item_async`) over up to 40 items with
random durations, faults at random items and random settings. `run(scenario)` makes
the call and checks API.md sections 2 and 5 on what came back: the call ended within
a bound (a watchdog turns a hang into a report), every index was reported exactly
once, each success equals the serial answer and each failure has a type the fault
could produce, no process or thread was left behind, and the next call of the same
function works. `test_campaign.py` runs a short campaign with hypothesis; the long
one is one command (from the repository root):

    .venv/bin/python tests/campaign.py --runs 2000 [--seed S] [--backends process,thread]

It prints every violation with the command that replays its scenario (`--scenario
JSON`), then a summary line; Ctrl-C stops it with the summary so far. Dask and Ray are
left out: each of their calls starts or reaches a cluster, and their faults are the
cluster's to handle (`test_clusters.py`).

The faults, by where they can be honoured (threads and the serial backend run in the
test process: nothing there may end a process, and a "hang" is a bounded sleep):

- every backend: an `Exception`, `SystemExit`, a `BaseException` (`faults.Abort`),
  a hang past `timeout`, an item or result that cannot be pickled, a result slow to
  pickle, one whose `__reduce__` calls `sys.exit()` or hangs (only processes pickle:
  elsewhere these are plain successes), Ctrl-C to the caller once an item runs,
  `close()` from another thread (or between the steps of `.iter()`) during a
  `keep_alive` call, `SIGCHLD` ignored by the caller;
- `async def` items: their own `asyncio.CancelledError` too;
- processes: `os._exit`, SIGKILL by the item itself or from outside, an item that
  starts a child process (forked, or a program) and then hangs or exits, one-page
  pipes that cannot be widened, and the caller itself killed (SIGKILL or SIGTERM)
  while items run, after which all its workers must end within 2 s.

Items wait on files (a gate the campaign opens, a trigger the campaign watches),
never on sleeps: spawned and forkserver workers see the same files as threads.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import json
import os
import pickle
import random
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import faults
import psutil
from faults import BASE_EXCEPTION, HANG, OS_EXIT, RAISE, SIGKILL, SYS_EXIT
from leftovers import (
    GRACE_SECONDS,
    describe,
    live_children,
    wait_for_no_children,
    wait_for_no_extra_threads,
)

import parallelize
from parallelize import TaskTimeoutError, WorkerLostError, parallel

# -- the vocabulary ---------------------------------------------------------------------

KINDS = ("process", "thread", "serial", "async")  # "async": an `async def` function
START_METHODS = ("fork", "spawn", "forkserver")

# Faults of an item (every attempt at it fails the same way). The first six are the
# matrix's own (`faults.do`); the others are the campaign's.
CANCELLED = "cancelled"  # an `async def` item raises asyncio.CancelledError itself
SIGKILL_OUTSIDE = "sigkill_outside"  # the item names its pid; the campaign kills it
UNPICKLABLE_ITEM = "unpicklable_item"  # the item holds a lock
UNPICKLABLE_RESULT = "unpicklable_result"  # the result holds a lock
SLOW_PICKLE = "slow_pickle"  # the result's __reduce__ takes SLOW_PICKLE_SECONDS
EXIT_IN_PICKLE = "exit_in_pickle"  # the result's __reduce__ calls sys.exit()
HANG_IN_PICKLE = "hang_in_pickle"  # the result's __reduce__ never returns
# The item starts a process (os.fork, or a program through subprocess) that would
# outlive it, then hangs or calls os._exit.
CHILD_FAULTS = {
    f"{starter}_child_{then}": (starter, then)
    for starter in ("fork", "popen")
    for then in (HANG, OS_EXIT)
}
GATED = "gated"  # the scenario's trigger item: notes that it started, waits for the gate

# The scenario's trigger: what happens once its trigger item started.
INTERRUPT = "interrupt"  # SIGINT to the caller's main thread: Ctrl-C
CLOSE = "close"  # f.close() from another thread (keep_alive)
CLOSE_BETWEEN_STEPS = "close_between_steps"  # f.close() after .iter()'s first result
CALLER_KILLS = {"caller_sigkill": signal.SIGKILL, "caller_sigterm": signal.SIGTERM}

PICKLING_ERRORS = (pickle.PicklingError, TypeError)
# The faults that end or kill a worker process: the items sent with it run again, so
# an attempt count is only a lower bound when one of these is in the call.
WORKER_ENDING = {OS_EXIT, SIGKILL, SIGKILL_OUTSIDE, HANG, EXIT_IN_PICKLE, HANG_IN_PICKLE}
WORKER_ENDING |= set(CHILD_FAULTS)
# Faults that only a timeout ends.
NEEDS_TIMEOUT = {HANG, HANG_IN_PICKLE} | {
    name for name, (_, then) in CHILD_FAULTS.items() if then == HANG
}
IN_THE_TEST_PROCESS = (
    RAISE,
    SYS_EXIT,
    BASE_EXCEPTION,
    HANG,
    UNPICKLABLE_ITEM,
    UNPICKLABLE_RESULT,
    SLOW_PICKLE,
    EXIT_IN_PICKLE,
    HANG_IN_PICKLE,
)
FAULTS_BY_KIND: dict[str, tuple[str, ...]] = {
    "process": (*IN_THE_TEST_PROCESS, OS_EXIT, SIGKILL, SIGKILL_OUTSIDE, *CHILD_FAULTS),
    "thread": IN_THE_TEST_PROCESS,
    "serial": IN_THE_TEST_PROCESS,
    "async": (*IN_THE_TEST_PROCESS, CANCELLED),
}

# -- timing ---------------------------------------------------------------------------

TIMEOUT = 1.0  # the `timeout` setting, when a scenario has one
# Longest honest item: its work plus a slow pickle stays well under TIMEOUT, even on a
# loaded 2-core machine.
LONGEST_ITEM_MS = 300
SLOW_PICKLE_SECONDS = 0.15
# A thread cannot be killed: its "hang" sleeps past the 1 s in which a timeout must
# fire, with room to spare. The serial backend checks the timeout when the item ends.
HANG_SECONDS = {"thread": TIMEOUT + 2.0, "serial": TIMEOUT + 0.3}
CHILD_SECONDS = 60.0  # an item's child process lives this long unless ended
GATE_SECONDS = 60.0  # a gated item gives up then: far past any bound below
POLL_SECONDS = faults.POLL_SECONDS
# A call of the campaign ends within this plus the time its items could take one by
# one; past it, the watchdog reports a hang and frees the call.
CALL_BOUND_SECONDS = 20.0
WORKER_START_SECONDS = 0.5  # a spawned worker's start, counted for each worker ending
UNSTICK_SECONDS = 5.0  # what each step of freeing a hung call gets
# The contract: Ctrl-C ends the call, and a killed caller's workers end, within 2 s.
CONTRACT_SECONDS = 2.0
SLACK_SECONDS = 1.0  # for a loaded 2-core machine
BULK_BYTES = 256 * 1024  # a bulky item or result: many one-page pipe writes
PIPE_PAGE = 4096

# What each kind of violation is called in the summary, in its order.
HANGS = "hangs"
LOST = "lost"
DUPLICATED = "duplicated"
WRONG = "wrong outcomes"
LATE = "late interrupts"
RETRIES = "miscounted retries"
LEFTOVER = "leftover processes"
BROKEN = "broken next calls"
VIOLATIONS = (HANGS, LOST, DUPLICATED, WRONG, RETRIES, LATE, LEFTOVER, BROKEN)

CAMPAIGN_FILE = Path(__file__).resolve()
# Set in the environment of a caller the campaign kills, so that its workers can be
# found after they were reparented away from it; finding them reads every process's
# environment, so it is done this often at most.
RUN_TAG = "PARALLELIZE_CAMPAIGN_RUN"
SCAN_SECONDS = 0.1


# -- scenarios --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ItemPlan:
    """One item of a scenario: how long it works, then how it fails (None: it does not)."""

    seconds: float = 0.0
    fault: str | None = None
    item_bytes: int = 0  # carried by the item to the worker
    result_bytes: int = 0  # carried by the result back


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One randomized call: its settings, its items, and what happens during it."""

    kind: str  # one of KINDS
    backend: str  # the `backend` setting ("async" runs on any local backend)
    start_method: str | None
    workers: int
    ordered: bool
    errors: str
    retries: int
    chunksize: int | None
    keep_alive: bool
    timeout: float | None
    shape: str  # "list": f(items); "iter": list(f.iter(items))
    items: tuple[ItemPlan, ...]
    trigger: str | None = None  # INTERRUPT, CLOSE, CLOSE_BETWEEN_STEPS, CALLER_KILLS
    trigger_at: int | None = None  # the GATED item the trigger waits for
    small_pipes: bool = False
    sigchld_ignored: bool = False

    def to_json(self) -> str:
        fields = dataclasses.asdict(self)
        fields["items"] = [list(dataclasses.astuple(item)) for item in self.items]
        return json.dumps(fields, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Scenario:
        fields = json.loads(text)
        fields["items"] = tuple(ItemPlan(*item) for item in fields["items"])
        return cls(**fields)

    def summary(self) -> str:
        """The settings, and the items that do more than return at once."""
        settings = {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if field.name != "items"
        }
        unusual = {
            index: "/".join(
                part
                for part in (
                    plan.fault,
                    f"{plan.seconds:g} s" if plan.seconds >= 0.05 else "",
                    "bulky item" if plan.item_bytes else "",
                    "bulky result" if plan.result_bytes else "",
                )
                if part
            )
            for index, plan in enumerate(self.items)
            if plan.fault or plan.seconds >= 0.05 or plan.item_bytes or plan.result_bytes
        }
        return f"{settings}; {len(self.items)} items, these not plain: {unusual}"

    def replay_command(self) -> str:
        return f"python tests/campaign.py --scenario {shlex.quote(self.to_json())}"


# Draws an int in [low, high], as `random.Random(seed).randint` does.
Draw = Callable[[int, int], int]


def draw_scenario(draw: Draw, kinds: Sequence[str] = KINDS) -> Scenario:
    """A random scenario, from `draw` alone: the same draws give the same scenario."""

    def chance(percent: int) -> bool:
        return draw(0, 99) >= 100 - percent  # low draws mean "no": the simpler scenario

    def pick(options: Sequence[Any]) -> Any:
        return options[draw(0, len(options) - 1)]

    kind = "process" if "process" in kinds and chance(40) else pick(kinds)
    process = kind == "process"
    backend = pick(("process", "thread", "serial")) if kind == "async" else kind
    start_method = pick(START_METHODS) if process else None
    workers = draw(1, {"process": 3, "thread": 4, "serial": 1, "async": 8}[kind])
    ordered, errors = chance(50), pick(("raise", "return"))
    retries, chunksize = draw(0, 2), (draw(1, 4) if chance(50) else None)
    keep_alive, timeout = chance(40), (TIMEOUT if chance(40) else None)
    shape = pick(("list", "iter"))
    count = draw(0, 40)
    trigger: str | None = None
    roll = draw(0, 99)
    if count and process and roll < 5:
        trigger, errors = pick(sorted(CALLER_KILLS)), "return"  # so the trigger item runs
    elif count and roll < 15:
        trigger = INTERRUPT
    elif count and keep_alive and roll < 40:
        trigger = CLOSE_BETWEEN_STEPS if shape == "iter" and chance(50) else CLOSE
    trigger_at = draw(0, count - 1) if trigger not in (None, CLOSE_BETWEEN_STEPS) else None
    small_pipes = process and chance(15)
    sigchld_ignored = chance(8)

    usable = [
        fault
        for fault in FAULTS_BY_KIND[kind]
        if (timeout is not None or fault not in NEEDS_TIMEOUT)
        and not (trigger in CALLER_KILLS and fault == SIGKILL_OUTSIDE)  # no killer there
    ]
    density = pick((0, 5, 10, 25))  # percent of faulty items
    bulk = 20 if small_pipes else 4  # percent of bulky items and results
    items = []
    hangs = 0
    for index in range(count):
        roll = draw(0, 99)
        milliseconds = 0 if roll < 70 else draw(1, 10) if roll < 90 else draw(50, LONGEST_ITEM_MS)
        fault = pick(usable) if chance(density) else None
        if fault in NEEDS_TIMEOUT:
            hangs += 1
            fault = fault if hangs <= 2 else None  # each costs a timeout per attempt
        if index == trigger_at:
            fault = GATED
        item_bytes = BULK_BYTES if process and chance(bulk) else 0
        result_bytes = BULK_BYTES if process and chance(bulk) else 0
        items.append(ItemPlan(milliseconds / 1000, fault, item_bytes, result_bytes))
    return Scenario(
        kind=kind,
        backend=backend,
        start_method=start_method,
        workers=workers,
        ordered=ordered,
        errors=errors,
        retries=retries,
        chunksize=chunksize,
        keep_alive=keep_alive,
        timeout=timeout,
        shape=shape,
        items=tuple(items),
        trigger=trigger,
        trigger_at=trigger_at,
        small_pipes=small_pipes,
        sigchld_ignored=sigchld_ignored,
    )


def expected_failure(plan: ItemPlan, scenario: Scenario) -> tuple[type[BaseException], ...]:
    """The exception types the item may fail with; empty if it must succeed."""
    process = scenario.kind == "process"
    fault = plan.fault
    if fault == RAISE:
        return (faults.FaultError,)
    if fault == SYS_EXIT:
        return (SystemExit,)
    if fault == BASE_EXCEPTION:  # API.md: it fails its item "like any other exception"
        return (faults.Abort,)
    if fault == CANCELLED:
        return (asyncio.CancelledError,)
    if fault in (OS_EXIT, SIGKILL) or (fault in CHILD_FAULTS and CHILD_FAULTS[fault][1] != HANG):
        return (WorkerLostError,)
    if fault == SIGKILL_OUTSIDE:  # killed at once; a timeout may still win on a slow day
        return (WorkerLostError, TaskTimeoutError) if scenario.timeout else (WorkerLostError,)
    if fault == HANG or fault in CHILD_FAULTS:
        return (TaskTimeoutError,)
    if not process:  # threads, serial, async: nothing is pickled
        return ()
    if fault in (UNPICKLABLE_ITEM, UNPICKLABLE_RESULT):
        return PICKLING_ERRORS
    if fault == EXIT_IN_PICKLE:  # fails the pickling, or is the item's exception
        return (SystemExit, *PICKLING_ERRORS)
    if fault == HANG_IN_PICKLE:
        return (TaskTimeoutError,)
    return ()


def serial_seconds(scenario: Scenario) -> float:
    """About how long the scenario's items take one by one: a bound's variable part."""
    attempts = scenario.retries + 1
    work = sum(plan.seconds for plan in scenario.items)
    work += sum(SLOW_PICKLE_SECONDS for plan in scenario.items if plan.fault == SLOW_PICKLE)
    hang = (scenario.timeout or 0.0) + HANG_SECONDS.get(scenario.kind, 1.0)
    hangs = sum(1 for plan in scenario.items if plan.fault in NEEDS_TIMEOUT)
    endings = sum(1 for plan in scenario.items if plan.fault in WORKER_ENDING)
    return attempts * (work + hangs * hang + endings * WORKER_START_SECONDS)


# -- what the items are and do (in the workers) ----------------------------------------


@dataclasses.dataclass(frozen=True)
class Item:
    """What the parallel function receives: the item's plan, and its index."""

    index: int
    seconds: float = 0.0
    fault: str | None = None
    payload: Any = b""  # bytes to carry, or an Unpicklable
    result_bytes: int = 0
    hang_seconds: float | None = None  # a bounded "hang" (threads, serial)

    def __repr__(self) -> str:  # short: error notes name the item
        return f"Item({self.index}, {self.fault!r})"


@dataclasses.dataclass(frozen=True)
class SlowPickle:
    """A result whose pickling takes `seconds`, as a large or complex object's does."""

    value: Any
    seconds: float

    def __reduce__(self) -> tuple[Any, ...]:
        time.sleep(self.seconds)  # the work of pickling, not a synchronisation
        return (SlowPickle, (self.value, self.seconds))


def make_items(scenario: Scenario) -> list[Item]:
    hang_seconds = HANG_SECONDS.get(scenario.kind)
    items = []
    for index, plan in enumerate(scenario.items):
        payload: Any = bytes(plan.item_bytes)
        if plan.fault == UNPICKLABLE_ITEM:
            payload = faults.Unpicklable(index)
        items.append(
            Item(index, plan.seconds, plan.fault, payload, plan.result_bytes, hang_seconds)
        )
    return items


def answer_of(item: Item) -> tuple[int, Any]:
    """What the item returns when it does not fail: the serial answer."""
    value: Any = bytes(item.result_bytes) if item.result_bytes else item.index * 10
    if item.fault == UNPICKLABLE_RESULT:
        value = faults.Unpicklable(value)
    elif item.fault == SLOW_PICKLE:
        value = SlowPickle(value, SLOW_PICKLE_SECONDS)
    elif item.fault == EXIT_IN_PICKLE:
        value = faults.ReduceFault(SYS_EXIT, value)
    elif item.fault == HANG_IN_PICKLE:
        value = faults.ReduceFault(HANG, value)
    return (item.index, value)


def comparable(result: Any) -> Any:
    """A result as a value that `==` compares (fault objects compare by their value)."""
    if isinstance(result, tuple) and len(result) == 2:
        index, value = result
        if isinstance(value, (faults.Unpicklable, faults.ReduceFault)):
            return (index, type(value).__name__, value.value)
        return (index, value)
    return result


def note_attempt(directory: str, index: int) -> None:
    """Leave one file per attempt at item `index`, counted by `faults.attempts`."""
    fd, _ = tempfile.mkstemp(prefix=f"try-{index}-", dir=directory)
    os.close(fd)


def ignores_sigint(pid: int) -> bool:
    """Whether process `pid` has SIGINT ignored (Linux: its /proc status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    ignored = re.search(r"^SigIgn:\s*([0-9a-f]+)$", status, re.MULTILINE)
    return bool(ignored and int(ignored.group(1), 16) & (1 << (signal.SIGINT - 1)))


def start_child(item: Item, starter: str, directory: str) -> None:
    """Start a process that would outlive the item; note its pid and whether it
    ignores SIGINT (`child-<index>-<pid>-<0 or 1>`)."""
    if starter == "fork":
        ready = Path(tempfile.mkdtemp(dir=directory), "ready")
        with warnings.catch_warnings():  # 3.12+: a fork in a threaded process warns
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child: holds every descriptor of the worker
            try:
                ready.touch()
                time.sleep(CHILD_SECONDS)
            finally:
                os._exit(0)
        faults.wait_for_path(ready)
    else:
        pid = subprocess.Popen(["sleep", str(CHILD_SECONDS)]).pid
    Path(directory, f"child-{item.index}-{pid}-{int(ignores_sigint(pid))}").touch()


def wait_for_gate(item: Item, directory: str) -> None:
    """Note that the item started (`trigger-<index>`), then wait for the gate."""
    Path(directory, f"trigger-{item.index}").touch()
    faults.wait_for_path(Path(directory, "gate"), GATE_SECONDS)


def run_item(item: Item, directory: str) -> tuple[int, Any]:
    """The campaign's function: work `item.seconds`, then fail as `item.fault` says."""
    fault = item.fault
    if fault is not None:
        note_attempt(directory, item.index)
    if item.seconds:
        time.sleep(item.seconds)  # the item's work
    if fault in (RAISE, SYS_EXIT, BASE_EXCEPTION, OS_EXIT, SIGKILL, HANG):
        faults.do(fault, item.hang_seconds)
    elif fault == SIGKILL_OUTSIDE:  # waits to be killed: its gate opens after the call
        Path(directory, f"victim-{item.index}-{os.getpid()}").touch()
        faults.wait_for_path(Path(directory, "end"), GATE_SECONDS)
    elif fault == GATED:
        wait_for_gate(item, directory)
    elif fault in CHILD_FAULTS:
        starter, then = CHILD_FAULTS[fault]
        start_child(item, starter, directory)
        faults.do(then)
    return answer_of(item)


async def run_item_async(item: Item, directory: str) -> tuple[int, Any]:
    """`run_item` for `async def`: awaits instead of sleeping, and a hang is endless
    (a coroutine can be cancelled)."""
    fault = item.fault
    if fault is not None:
        note_attempt(directory, item.index)
    if item.seconds:
        await asyncio.sleep(item.seconds)
    if fault == HANG:
        while True:
            await asyncio.sleep(POLL_SECONDS)
    if fault == CANCELLED:
        raise asyncio.CancelledError(f"item {item.index} cancelled itself")
    if fault == GATED:
        Path(directory, f"trigger-{item.index}").touch()
        gate = Path(directory, "gate")
        deadline = time.monotonic() + GATE_SECONDS
        while not gate.exists() and time.monotonic() < deadline:
            await asyncio.sleep(POLL_SECONDS)
    elif fault in (RAISE, SYS_EXIT, BASE_EXCEPTION):
        faults.do(fault)
    return answer_of(item)


def make_function(scenario: Scenario) -> Any:
    """The parallel function of the scenario's settings."""
    settings: dict[str, Any] = {
        "backend": scenario.backend,
        "workers": scenario.workers,
        "ordered": scenario.ordered,
        "errors": scenario.errors,
        "retries": scenario.retries,
        "chunksize": scenario.chunksize,
        "keep_alive": scenario.keep_alive,
        "timeout": scenario.timeout,
    }
    if scenario.start_method is not None:
        settings["start_method"] = scenario.start_method
    return parallel(**settings)(run_item_async if scenario.kind == "async" else run_item)


# -- calls under watch -----------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    """How one call ended."""

    results: list[Any] | None = None  # what a list call returned
    yielded: list[Any] = dataclasses.field(default_factory=list)  # what .iter() gave
    raised: BaseException | None = None
    ended_at: float = 0.0
    hung: bool = False
    stacks: str = ""  # every thread's stack when the watchdog found the call hung
    interrupted_at: float | None = None  # when our SIGINT raised KeyboardInterrupt in it

    @property
    def interrupted(self) -> bool:
        """Ctrl-C landed in the call (not after a list call had returned)."""
        return self.interrupted_at is not None and self.results is None


@dataclasses.dataclass
class _SigintState:
    """SIGINTs the campaign sent and handled, and the call they may interrupt."""

    sent: int = 0
    handled: int = 0
    call: Outcome | None = None
    real: bool = False  # a SIGINT the campaign did not send arrived: stop the campaign
    exit_when_stuck: bool = False  # the command line: a call that cannot be freed ends it


_SIGINT = _SigintState()


def _on_sigint(signum: int, frame: Any) -> None:
    """Raise KeyboardInterrupt for a SIGINT of ours that lands in a call, as Ctrl-C
    does; drop one that arrives after its call ended. A SIGINT the campaign did not
    send (a real Ctrl-C) is raised wherever it lands."""
    _SIGINT.handled += 1
    if _SIGINT.handled > _SIGINT.sent:
        _SIGINT.real = True
        raise KeyboardInterrupt
    if _SIGINT.call is not None:
        _SIGINT.call.interrupted_at = time.monotonic()
        raise KeyboardInterrupt("campaign: Ctrl-C")


def send_sigint() -> None:
    """Ctrl-C: SIGINT to the main thread, where the caller runs."""
    _SIGINT.sent += 1
    signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)


def all_stacks() -> str:
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    return "\n".join(
        f"thread {names.get(ident, ident)}:\n{''.join(traceback.format_stack(frame))}"
        for ident, frame in sys._current_frames().items()
    )


def _watch(
    outcome: Outcome, done: threading.Event, bound: float, unstick: Callable[[], None]
) -> None:
    """Report a call that outlives `bound`, then free it: Ctrl-C, then its processes
    killed and its gate opened; a call that still does not end ends the command line."""
    if done.wait(bound):
        return
    outcome.hung = True
    outcome.stacks = all_stacks()
    send_sigint()
    if done.wait(UNSTICK_SECONDS):
        return
    unstick()
    if done.wait(UNSTICK_SECONDS) or not _SIGINT.exit_when_stuck:
        return
    print(f"a call could not be freed; its stacks:\n{outcome.stacks}", file=sys.stderr, flush=True)
    os._exit(3)


def watched(body: Callable[[Outcome], None], bound: float, unstick: Callable[[], None]) -> Outcome:
    """Run `body` (a call, on this thread) under the watchdog; it fills the outcome."""
    outcome = Outcome()
    done = threading.Event()
    watchdog = threading.Thread(
        target=_watch, args=(outcome, done, bound, unstick), name="campaign-watchdog", daemon=True
    )
    watchdog.start()
    _SIGINT.call = outcome
    try:
        try:
            body(outcome)
        except BaseException as exc:  # what the call raised is the outcome under test
            if _SIGINT.real:
                raise  # a real Ctrl-C: the campaign stops
            outcome.raised = exc
        _SIGINT.call = None
    except KeyboardInterrupt as late:  # ours, landing between the call's end and here
        if _SIGINT.real:
            raise
        if outcome.raised is None and outcome.results is None:
            outcome.raised = late
    finally:
        _SIGINT.call = None
        outcome.ended_at = time.monotonic()
        done.set()
    watchdog.join()
    return outcome


def wait_until(
    ready: Callable[[], bool], stop: threading.Event, timeout: float = GATE_SECONDS
) -> bool:
    """Poll `ready` until it holds (True), or until `stop` is set or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while not stop.is_set() and time.monotonic() < deadline:
        if ready():
            return True
        stop.wait(POLL_SECONDS)
    return False


def is_descendant(pid: int) -> bool:
    try:
        return any(parent.pid == os.getpid() for parent in psutil.Process(pid).parents())
    except psutil.Error:
        return False


def kill_victims(directory: str, stop: threading.Event, killed: list[int]) -> None:
    """SIGKILL each worker that an item named (`victim-<index>-<pid>`), from outside."""
    while not stop.is_set():
        for path in Path(directory).glob("victim-*"):
            pid = int(path.name.split("-")[2])
            if pid not in killed and is_descendant(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        stop.wait(POLL_SECONDS)


@dataclasses.dataclass
class Closing:
    """What the scenario's `close()` during the call did, if it ran."""

    seconds: float | None = None
    error: BaseException | None = None

    def close(self, work: Any) -> None:
        began = time.monotonic()
        try:
            work.close()
        except BaseException as exc:  # close() must not raise: reported, never lost
            self.error = exc
        self.seconds = time.monotonic() - began


def close_when_triggered(work: Any, trigger: Path, stop: threading.Event, closing: Closing) -> None:
    """Once the trigger item runs, `work.close()` from this thread; then open the gate."""
    if wait_until(trigger.exists, stop):
        closing.close(work)
        Path(trigger.parent, "gate").touch()


def interrupt_when_triggered(trigger: Path, stop: threading.Event) -> None:
    if wait_until(trigger.exists, stop):
        send_sigint()


@contextlib.contextmanager
def small_pipes() -> Iterator[None]:
    """Pipes of one page that cannot be widened: a user over the kernel's pipe quota
    (`fs.pipe-user-pages-soft`) gets these. The campaign may run as root, who has no
    quota, so `os.pipe` and `fcntl` are wrapped while the call runs."""
    import fcntl

    real_pipe, real_fcntl = os.pipe, fcntl.fcntl

    def one_page_pipe() -> tuple[int, int]:
        read, write = real_pipe()
        real_fcntl(write, fcntl.F_SETPIPE_SZ, PIPE_PAGE)
        return read, write

    def over_quota(fd: Any, cmd: int, arg: Any = 0, /) -> Any:
        if cmd == fcntl.F_SETPIPE_SZ and isinstance(arg, int) and arg > PIPE_PAGE:
            raise PermissionError(errno.EPERM, "over the pipe quota (campaign)")
        return real_fcntl(fd, cmd, arg)

    os.pipe, fcntl.fcntl = one_page_pipe, over_quota
    try:
        yield
    finally:
        os.pipe, fcntl.fcntl = real_pipe, real_fcntl


@contextlib.contextmanager
def environment(scenario: Scenario) -> Iterator[None]:
    """The caller's conditions of the scenario: small pipes, SIGCHLD ignored, and the
    campaign's SIGINT handler (which makes Ctrl-C exact)."""
    with contextlib.ExitStack() as stack:
        if scenario.small_pipes:
            stack.enter_context(small_pipes())
        previous_sigint = signal.signal(signal.SIGINT, _on_sigint)
        stack.callback(signal.signal, signal.SIGINT, previous_sigint)
        if scenario.sigchld_ignored:
            previous_sigchld = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
            stack.callback(signal.signal, signal.SIGCHLD, previous_sigchld)
        yield


# -- one run ----------------------------------------------------------------------------


@dataclasses.dataclass
class Report:
    """The violations one run found."""

    scenario: Scenario
    violations: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    def add(self, kind: str, message: str) -> None:
        self.violations.append((kind, message))

    def describe(self) -> str:
        lines = [f"{kind}: {message}" for kind, message in self.violations]
        lines.append(f"scenario: {self.scenario.summary()}")
        lines.append(f"replay: {self.scenario.replay_command()}")
        return "\n".join(lines)


def note_index(exc: BaseException) -> int | None:
    """The index that parallelize's note names on a failed item's exception."""
    for note in getattr(exc, "__notes__", []):
        found = re.search(r"failed on item (\d+):", str(note))
        if found:
            return int(found.group(1))
    return None


def check_results(
    report: Report, scenario: Scenario, items: list[Item], results: list[Any], complete: bool
) -> None:
    """Each result belongs to one index, once, and is that item's right outcome;
    `complete`: every index is there, in input order when `ordered`."""
    seen: Counter[int] = Counter()
    for position, result in enumerate(results):
        if isinstance(result, BaseException):
            index = note_index(result)
            if index is None or not 0 <= index < len(items):
                report.add(WRONG, f"a failure without a note naming its item: {result!r}")
                continue
            allowed = expected_failure(scenario.items[index], scenario)
            if scenario.errors == "raise":
                report.add(WRONG, f"errors='raise' returned a failure: item {index}: {result!r}")
            elif not isinstance(result, allowed):
                wanted = "its result" if not allowed else " or ".join(t.__name__ for t in allowed)
                report.add(WRONG, f"item {index} failed with {result!r}, expected {wanted}")
        elif isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], int):
            index = result[0]
            if not 0 <= index < len(items):
                report.add(WRONG, f"a result for no item: {result!r:.200}")
                continue
            allowed = expected_failure(scenario.items[index], scenario)
            if allowed:
                report.add(WRONG, f"item {index} succeeded ({result!r:.80}) but must fail")
            elif comparable(result) != comparable(answer_of(items[index])):
                report.add(WRONG, f"item {index} gave {result!r:.80}, not the serial answer")
        else:
            report.add(WRONG, f"a result that no item returns: {result!r:.200}")
            continue
        seen[index] += 1
        if scenario.ordered and position != index:
            report.add(WRONG, f"ordered results: position {position} holds item {index}")
    doubled = sorted(index for index, times in seen.items() if times > 1)
    if doubled:
        report.add(DUPLICATED, f"items reported more than once: {doubled}")
    missing = sorted(set(range(len(items))) - set(seen))
    if complete and missing:
        report.add(LOST, f"items never reported: {missing} of {len(items)}")


def check_attempts(report: Report, scenario: Scenario, results: list[Any], directory: str) -> None:
    """Under errors="return", each failure that `retries` re-runs ran 1 + retries times
    (at least, when a worker died: the items sent with it ran again), and any other
    once: `retry_on` defaults to `Exception` (API.md section 1), so a `SystemExit` or
    another `BaseException` is final."""
    exact = not any(plan.fault in WORKER_ENDING for plan in scenario.items)
    for result in results:
        index = note_index(result) if isinstance(result, BaseException) else None
        if index is None or not 0 <= index < len(scenario.items):
            continue
        plan = scenario.items[index]
        if plan.fault == UNPICKLABLE_ITEM or not expected_failure(plan, scenario):
            continue  # never ran (it could not be sent), or a wrong outcome reported already
        wanted = scenario.retries + 1 if isinstance(result, Exception) else 1
        ran = faults.attempts(directory, index)
        if ran < wanted or (exact and ran != wanted):
            report.add(RETRIES, f"item {index} ran {ran} times, not {wanted} ({result!r:.80})")


def check_call(
    report: Report, scenario: Scenario, items: list[Item], outcome: Outcome, directory: str
) -> None:
    """The contract on how a call ended."""
    got = outcome.results if outcome.results is not None else outcome.yielded
    if outcome.hung:
        report.add(HANGS, f"the call outlived its bound; stacks:\n{outcome.stacks}")
        return
    if outcome.interrupted:
        if not isinstance(outcome.raised, KeyboardInterrupt):
            report.add(WRONG, f"Ctrl-C during the call, which ended with {outcome.raised!r:.200}")
        assert outcome.interrupted_at is not None
        late = outcome.ended_at - outcome.interrupted_at
        if late > CONTRACT_SECONDS + SLACK_SECONDS:
            report.add(LATE, f"the call ended {late:.1f} s after Ctrl-C")
        check_results(report, scenario, items, outcome.yielded, complete=False)
        return
    raised = outcome.raised
    if raised is None:
        check_results(report, scenario, items, got, complete=True)
        failing = [i for i, plan in enumerate(scenario.items) if expected_failure(plan, scenario)]
        if scenario.errors == "raise" and failing:
            report.add(WRONG, f"errors='raise' returned though items {failing} must fail")
        if scenario.errors == "return":
            check_attempts(report, scenario, got, directory)
        return
    check_results(report, scenario, items, outcome.yielded, complete=False)
    if scenario.errors == "return":
        report.add(WRONG, f"errors='return' raised {raised!r:.300}")
        return
    index = note_index(raised)
    allowed: tuple[type[BaseException], ...] = ()
    if index is not None and 0 <= index < len(items):
        allowed = expected_failure(scenario.items[index], scenario)
    if not isinstance(raised, allowed):
        report.add(WRONG, f"raised {raised!r:.300}, which no item's fault makes (item {index})")


def check_leftovers(
    report: Report, threads_before: set[threading.Thread], grace: float, when: str
) -> None:
    """No child process (zombies included) and no parallelize thread is left."""
    children = wait_for_no_children()
    if children:
        report.add(LEFTOVER, f"{when}: {'; '.join(describe(child) for child in children)}")
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.kill()
        psutil.wait_procs(children, timeout=GRACE_SECONDS)
    threads = wait_for_no_extra_threads(threads_before, timeout=grace)
    if threads:
        report.add(LEFTOVER, f"{when}: threads still running: {threads}")


def check_item_children(report: Report, directory: str) -> None:
    """The processes that items started ended with their workers, and never had
    SIGINT ignored."""
    records = [path.name.split("-") for path in Path(directory).glob("child-*")]
    pids = [int(pid) for _, _, pid, _ in records]
    stop = threading.Event()
    wait_until(lambda: not any(map(is_running, pids)), stop, GRACE_SECONDS)
    for _, index, pid, ignored in records:
        if is_running(int(pid)):
            report.add(LEFTOVER, f"item {index}'s child process {pid} outlived its worker")
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        if ignored == "1":
            report.add(WRONG, f"item {index}'s child process {pid} has SIGINT ignored")


def is_running(pid: int) -> bool:
    """Whether process `pid` runs (a zombie has ended)."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def call_body(
    work: Any, scenario: Scenario, items: list[Any], directory: str, closing: Closing
) -> Callable[[Outcome], None]:
    """The call itself, as `watched` runs it: a list call, or `.iter()` consumed (and
    closed, for CLOSE_BETWEEN_STEPS, once it gave its first result)."""

    def body(outcome: Outcome) -> None:
        if scenario.shape == "list":
            outcome.results = work(items, directory)
            return
        results = work.iter(items, directory)
        try:
            for result in results:
                outcome.yielded.append(result)
                if scenario.trigger == CLOSE_BETWEEN_STEPS and len(outcome.yielded) == 1:
                    closing.close(work)
        finally:
            results.close()

    return body


def run(scenario: Scenario) -> Report:
    """Run the scenario and check it; the report lists the violations found."""
    began = time.monotonic()
    report = Report(scenario)
    with tempfile.TemporaryDirectory(prefix="campaign-", ignore_cleanup_errors=True) as directory:
        if scenario.trigger in CALLER_KILLS:
            run_killed_caller(report, scenario, directory)
        else:
            run_here(report, scenario, directory)
    report.seconds = time.monotonic() - began
    return report


def run_here(report: Report, scenario: Scenario, directory: str) -> None:
    """The scenario's call in this process, then the next call, then the leftovers."""
    threads_before = set(threading.enumerate())
    grace = GRACE_SECONDS + HANG_SECONDS.get(scenario.kind, 0.0)
    items = make_items(scenario)
    work = make_function(scenario)
    gates = [Path(directory, "gate"), Path(directory, "end")]  # GATED's, the victims'
    stop = threading.Event()
    killed: list[int] = []
    closing = Closing()
    helpers = []
    if any(plan.fault == SIGKILL_OUTSIDE for plan in scenario.items):
        helpers.append(
            threading.Thread(target=kill_victims, args=(directory, stop, killed), daemon=True)
        )
    trigger = Path(directory, f"trigger-{scenario.trigger_at}")
    if scenario.trigger == INTERRUPT:
        helpers.append(
            threading.Thread(target=interrupt_when_triggered, args=(trigger, stop), daemon=True)
        )
    elif scenario.trigger == CLOSE:
        helpers.append(
            threading.Thread(
                target=close_when_triggered, args=(work, trigger, stop, closing), daemon=True
            )
        )

    def open_gates() -> None:
        for gate in gates:
            gate.touch()

    def unstick() -> None:
        open_gates()
        for child in live_children():
            with contextlib.suppress(psutil.Error):
                child.kill()

    bound = CALL_BOUND_SECONDS + serial_seconds(scenario)
    try:
        with environment(scenario):
            for helper in helpers:
                helper.start()
            try:
                outcome = watched(
                    call_body(work, scenario, items, directory, closing), bound, unstick
                )
            finally:
                stop.set()
                for helper in helpers:
                    helper.join()
                open_gates()
            check_call(report, scenario, items, outcome, directory)
            if closing.error is not None:
                report.add(WRONG, f"close() during the call raised {closing.error!r}")
            closed = closing.seconds is not None and closing.error is None
            # No worker may be left now. Ctrl-C ends "all workers", kept processes too
            # (kept threads are the pool's to keep: a thread cannot be ended).
            ended = outcome.interrupted and scenario.kind == "process"
            if not scenario.keep_alive or closed or ended:
                check_leftovers(report, threads_before, grace, "after the call")
            check_next_call(report, scenario, work, directory, unstick)
    finally:
        open_gates()
        work.close()
    check_leftovers(report, threads_before, grace, "after the next call and close()")
    check_item_children(report, directory)


def check_next_call(
    report: Report, scenario: Scenario, work: Any, directory: str, unstick: Callable[[], None]
) -> None:
    """The same function, called again on plain items, gives the serial answer."""
    items = [Item(index) for index in range(max(3, min(len(scenario.items), 12)))]
    outcome = watched(
        lambda o: setattr(o, "results", work(items, directory)), CALL_BOUND_SECONDS, unstick
    )
    wanted = [answer_of(item) for item in items]
    got = outcome.results or []
    if not scenario.ordered:  # completion order: compare as multisets
        got, wanted = sorted(got, key=repr), sorted(wanted, key=repr)
    if outcome.hung:
        report.add(BROKEN, f"the next call hung; stacks:\n{outcome.stacks}")
    elif outcome.raised is not None:
        report.add(BROKEN, f"the next call raised {outcome.raised!r:.300}")
    elif got != wanted:
        report.add(BROKEN, f"the next call gave {outcome.results!r:.300}")


# -- a caller that is killed --------------------------------------------------------------


def tagged_processes(tag: str) -> list[psutil.Process]:
    """Running processes whose environment carries the run's tag."""
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if process.environ().get(RUN_TAG) == tag and is_running(process.pid):
                found.append(process)
    return found


def run_killed_caller(report: Report, scenario: Scenario, directory: str) -> None:
    """The call in a program of its own, killed once its trigger item runs: every
    process it started must end within 2 s, idle or busy."""
    tag = uuid.uuid4().hex
    env = {**os.environ, RUN_TAG: tag, "PYTHONPATH": os.pathsep.join(sys.path)}
    trigger = Path(directory, f"trigger-{scenario.trigger_at}")
    stderr = Path(directory, "caller.stderr")
    with stderr.open("w") as errors:
        caller = subprocess.Popen(
            [sys.executable, str(CAMPAIGN_FILE), "--caller", directory, scenario.to_json()],
            stdout=subprocess.DEVNULL,
            stderr=errors,
            env=env,
            start_new_session=True,
        )
    bound = CALL_BOUND_SECONDS + serial_seconds(scenario)
    stop = threading.Event()
    started = wait_until(lambda: trigger.exists() or caller.poll() is not None, stop, bound)
    if not trigger.exists():
        if caller.poll() is None:
            report.add(HANGS, f"the caller's trigger item never ran within {bound:.0f} s")
            caller.kill()
        caller.wait()
        if started and caller.returncode != 0:
            report.add(WRONG, f"the caller failed: {stderr.read_text()[-2000:]}")
        return
    descendants = psutil.Process(caller.pid).children(recursive=True)
    caller.send_signal(CALLER_KILLS[str(scenario.trigger)])
    caller.wait()
    killed_at = time.monotonic()

    def survivors() -> list[psutil.Process]:
        """Its processes still running: those it had, then (a slower search) any that
        carries its tag, such as an item's child whose worker had died already."""
        known = [process for process in descendants if is_running(process.pid)]
        return known or tagged_processes(tag)

    deadline = killed_at + CONTRACT_SECONDS + SLACK_SECONDS
    while (left := survivors()) and time.monotonic() < deadline:
        stop.wait(SCAN_SECONDS)
    if left:
        after = time.monotonic() - killed_at
        names = "; ".join(describe(process) for process in left)
        report.add(LEFTOVER, f"{after:.1f} s after the caller was killed: {names}")
        for process in left:
            with contextlib.suppress(psutil.Error):
                process.kill()


def caller_main(directory: str, scenario_json: str) -> None:
    """The killed caller's program: make the scenario's call and wait to be killed."""
    scenario = Scenario.from_json(scenario_json)
    work = make_function(scenario)
    with environment(scenario):
        call_body(work, scenario, make_items(scenario), directory, Closing())(Outcome())


# -- the command line -----------------------------------------------------------------


def summary(runs: int, counts: Counter[str]) -> str:
    return f"{runs} randomized runs: " + ", ".join(f"{counts[kind]} {kind}" for kind in VIOLATIONS)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a long campaign; print each violation with its replay command, then the
    summary line. The exit status is 1 if any run found a violation."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=None, help="default: a new one, printed")
    parser.add_argument("--start", type=int, default=0, help="the first run's number")
    parser.add_argument("--backends", default=",".join(KINDS), help=f"some of {','.join(KINDS)}")
    parser.add_argument("--scenario", help="replay this scenario (JSON, as a report prints it)")
    parser.add_argument("--caller", nargs=2, help=argparse.SUPPRESS)  # the killed caller
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    if args.caller:
        caller_main(*args.caller)
        return 0
    _SIGINT.exit_when_stuck = True
    if args.scenario:
        report = run(Scenario.from_json(args.scenario))
        print(report.describe() if report.violations else f"no violation ({report.seconds:.1f} s)")
        return 1 if report.violations else 0
    kinds = [kind for kind in args.backends.split(",") if kind]
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds:
        parser.error(f"--backends takes some of {','.join(KINDS)}, got {args.backends!r}")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    where = Path(parallelize.__file__).parent
    print(f"seed {seed}, runs {args.start}..{args.start + args.runs - 1}, {where}", flush=True)
    counts: Counter[str] = Counter()
    began = time.monotonic()
    done = 0
    try:
        for number in range(args.start, args.start + args.runs):
            rng = random.Random(f"{seed}/{number}")
            report = run(draw_scenario(rng.randint, kinds))
            done += 1
            for kind in {kind for kind, _ in report.violations}:
                counts[kind] += 1
            if report.violations:
                print(f"\nrun {number} (--seed {seed} --start {number} --runs 1):", flush=True)
                print(report.describe(), flush=True)
            if not args.quiet and done % 25 == 0:
                rate = (time.monotonic() - began) / done
                print(f"{summary(done, counts)} ({rate:.2f} s a run)", flush=True)
    except KeyboardInterrupt:
        print("\ninterrupted", flush=True)
    print(summary(done, counts), flush=True)
    return 1 if counts else 0


if __name__ == "__main__":
    # Run as a program: the items' functions must be sent by the name `campaign`, not
    # `__main__`, for spawn and forkserver workers to find them.
    import campaign

    sys.exit(campaign.main())

"""How a worker process stands apart from its caller, set up before it runs anything.

- Its own process group, with the worker as leader, so that ending the worker
  (`killpg`) also ends every process its items started, however deep.
- The signal settings of a plain program, not the caller's or ours: SIGINT raises
  `KeyboardInterrupt` (a terminal's Ctrl-C reaches the caller's group only, and the
  caller ends the workers), SIGTERM ends the process (a forked worker would otherwise
  run the caller's handler: Ray's driver, for one, installs one that exits), and
  SIGCHLD is handled, so the items' own children can be waited for even if the
  caller ignores SIGCHLD. Processes the items start inherit these, not an ignored
  SIGINT.
- Its end when the caller dies, idle or busy, whatever the start method. The caller
  holds the only write end of a "lifeline" pipe to each worker and never writes to
  it: the pipe turns readable only when the caller is gone. On Linux the kernel then
  signals the worker (`O_ASYNC`), which costs nothing until it happens and needs no
  thread; elsewhere a thread waits on the pipe. Either way the worker's whole
  process group is killed. (`PR_SET_PDEATHSIG` would not do: under forkserver the
  parent is the fork server, which lives as long as its children do.)
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
from typing import Any

__all__ = ["detach_from_caller", "end_group"]

# A real-time signal that nothing else uses, sent when the lifeline turns readable.
_CALLER_GONE = signal.SIGRTMAX - 1 if sys.platform == "linux" else None


def detach_from_caller(lifeline: Any) -> None:
    """Give this worker its own process group and signals, and end it with the caller."""
    if sys.platform == "win32":
        return
    with contextlib.suppress(OSError):  # a group leader already: killpg covers it the same
        os.setpgid(0, 0)
    # The caller holds SIGINT back while it starts a worker; the mask is inherited.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    _end_with_caller(lifeline.fileno())


def end_group() -> None:
    """Kill this process and, if it leads its process group, everything in the group."""
    if os.getpgrp() == os.getpid():
        os.killpg(0, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def _caller_gone(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def _end_with_caller(fd: int) -> None:
    if _CALLER_GONE is not None:
        import fcntl

        def on_signal(signum: int, frame: Any) -> None:
            if _caller_gone(fd):
                end_group()

        signal.signal(_CALLER_GONE, on_signal)
        # To the whole group if the worker leads one: an item's forked child still
        # holding the pipe is told too (the signal ends it) should the worker be gone.
        leader = os.getpgrp() == os.getpid()
        fcntl.fcntl(fd, fcntl.F_SETOWN, -os.getpid() if leader else os.getpid())
        fcntl.fcntl(fd, fcntl.F_SETSIG, int(_CALLER_GONE))
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_ASYNC)
    else:

        def watch() -> None:
            select.select([fd], [], [])
            end_group()

        threading.Thread(target=watch, name="parallelize-caller-watch", daemon=True).start()
    if _caller_gone(fd):  # it died before we could be told
        end_group()

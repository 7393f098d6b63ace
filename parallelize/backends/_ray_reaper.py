"""A process that ends the Ray we started, and removes its session directory, if the
caller dies without shutting it down.

If the caller dies (SIGKILL, SIGTERM, `os._exit`), Ray's workers, raylet and GCS end
by themselves, but its agents wait a minute for a gRPC timeout and nothing removes
the session directory. So `_local_ray.start()` first starts a reaper, a process of
ours running the stdlib alone, whose stdin is a lifeline pipe that only the caller can
write to (close-on-exec, and closed in the caller's fork children):

    caller --lifeline--> reaper           sweep: SIGKILL each process of the caller's
      |                    |                     user that names the session directory
      +--ray.init-->  Ray's processes  <---------on its command line, or that Ray
                      (logs in the session       retitled and has a file open there
                       directory)                (its agents and workers: their logs)

`LocalRay.shutdown()` writes REAPER_STAND_DOWN and the reaper just exits. If the input ends
without it, the caller is gone (or its shutdown failed): the reaper sweeps, removes the
session directory and exits. It spares itself and the caller, and never touches another
session: every path it looks for is inside our own directory. The sweep reads /proc, so
it runs on Linux; elsewhere the reaper only removes the session directory. Without
`sys.executable` (an embedding application) no reaper starts.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading

__all__ = ["Reaper"]

# What `shutdown()` writes to the reaper once Ray is down and the directory removed.
REAPER_STAND_DOWN = b"stand down"
# How long `shutdown()` waits for its reaper to exit before killing it: it exits on
# reading REAPER_STAND_DOWN; a sweep of /proc takes well under a second.
REAPER_EXIT_SECONDS = 10.0
# The reaper's program: `python -I -S -c REAPER_CODE <session directory> <caller pid>`.
# Isolated, without `site` and importing no more than it needs, it starts in ~20 ms.
# A process is the session's if its command line names the directory (Ray's daemons),
# or if Ray retitled it ("ray::...", its agents and workers) and it has a file open in
# the directory. Open files alone would not do: the caller holds inheritable ones there
# (the driver's logs), so its own fork children have them too. A pidfd pins each
# process between the check and the signal, so a pid reused meanwhile is never
# signalled. Rounds catch a process forked while the sweep ran; the pids already
# killed are not counted again while they exit.
REAPER_CODE = """
import os, shutil, signal, sys

SWEEP_ROUNDS = 5

def names_session(pid, prefixes):
    proc = os.path.join("/proc", str(pid))
    if os.stat(proc).st_uid != os.getuid():
        return False
    with open(os.path.join(proc, "cmdline"), "rb") as file:
        command = os.fsdecode(file.read())
    if any(prefix in command for prefix in prefixes):
        return True
    if not command.startswith("ray::"):
        return False
    for fd in os.listdir(os.path.join(proc, "fd")):
        try:
            if os.readlink(os.path.join(proc, "fd", fd)).startswith(prefixes):
                return True
        except OSError:
            continue
    return False

def kill_if_in_session(pid, prefixes):
    handle = None
    try:
        if hasattr(os, "pidfd_open"):
            try:
                handle = os.pidfd_open(pid)
            except ProcessLookupError:
                return False
            except OSError:
                pass
        if not names_session(pid, prefixes):
            return False
        if handle is None:
            os.kill(pid, signal.SIGKILL)
        else:
            signal.pidfd_send_signal(handle, signal.SIGKILL)
        return True
    except OSError:
        return False
    finally:
        if handle is not None:
            os.close(handle)

def sweep(session, spared):
    prefixes = tuple({os.path.join(path, "") for path in (session, os.path.realpath(session))})
    killed = set(spared)
    for _ in range(SWEEP_ROUNDS):
        pids = {int(name) for name in os.listdir("/proc") if name.isdigit()} - killed
        found = {pid for pid in pids if kill_if_in_session(pid, prefixes)}
        if not found:
            return
        killed |= found

session, caller = sys.argv[1], int(sys.argv[2])
if sys.stdin.buffer.read() != STAND_DOWN:
    if sys.platform.startswith("linux"):
        sweep(session, {os.getpid(), caller})
    shutil.rmtree(session, ignore_errors=True)
""".replace("STAND_DOWN", repr(REAPER_STAND_DOWN))


class Reaper:
    """The process that ends our Ray session if the caller dies (module docstring).

    `stand_down()` or `sweep()` ends it; then the calls are no-ops.
    """

    def __init__(self, temp_dir: str) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._lifeline: int | None = None  # the write end; the reaper holds the read end
        if not sys.executable:
            return
        with _reapers_lock:  # no fork while the write end is not yet registered
            reading, self._lifeline = os.pipe()  # both close-on-exec (PEP 446)
            _reapers.add(self)
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", REAPER_CODE, temp_dir, str(os.getpid())],
                stdin=reading,
                stdout=subprocess.DEVNULL,
                cwd=os.path.abspath(os.sep),  # holds no directory of the caller's
                # Not in the caller's process group: a signal to the group (Ctrl-C, a
                # job control kill) must leave it to clean up after the caller.
                start_new_session=True,
            )
        except BaseException:
            self._close_lifeline()
            raise
        finally:
            os.close(reading)

    def stand_down(self) -> None:
        """Ray is down and the directory removed: the reaper exits, touching nothing."""
        self._end(REAPER_STAND_DOWN)

    def sweep(self) -> None:
        """Have the reaper kill what is left of the session and remove its directory."""
        self._end(b"")

    def _end(self, message: bytes) -> None:
        if self._lifeline is None or self._process is None:
            return  # ended already, or this is a fork child's copy
        with contextlib.suppress(BrokenPipeError):  # the reaper is gone already
            os.write(self._lifeline, message)
        self._close_lifeline()
        try:
            self._process.wait(REAPER_EXIT_SECONDS)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def _close_lifeline(self) -> None:
        with _reapers_lock:
            _reapers.discard(self)
            if self._lifeline is not None:
                os.close(self._lifeline)
                self._lifeline = None

    def _forget_in_fork_child(self) -> None:
        """In a fork child: close the inherited write end (which would keep the reaper
        waiting for the child too) and leave the reaper to the caller."""
        if self._lifeline is not None:
            os.close(self._lifeline)
        self._lifeline = None
        self._process = None


# The reapers whose write end is open, closed in fork children. Reentrant: a signal
# handler that forks while this thread holds the lock must not wait for itself.
_reapers: set[Reaper] = set()
_reapers_lock = threading.RLock()


def _after_fork_in_child() -> None:
    for reaper in _reapers:
        reaper._forget_in_fork_child()
    _reapers.clear()
    _reapers_lock.release()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(
        before=_reapers_lock.acquire,
        after_in_parent=_reapers_lock.release,
        after_in_child=_after_fork_in_child,
    )

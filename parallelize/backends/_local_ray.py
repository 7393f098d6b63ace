"""The local Ray that the Ray backend starts when none is connected: private.

`ray.init(_node_ip_address="127.0.0.1")` alone is not enough (API.md section 6,
issue 16). `ray.init` swaps a loopback address for the machine's, and Ray's servers
(GCS, raylet, object manager, workers, agents) bind to loopback alone only when the
node's address is exactly 127.0.0.1; given another one they listen on it and on
`::`. So `start()` runs `ray.init` in Ray's local-only mode, with a token of its
own for Ray's token authentication, and a session directory only the caller's user
can enter; `LocalRay.shutdown()` ends that Ray and puts back what `ray.init` set.


If the caller dies without a shutdown, a reaper of ours (`_ray_reaper`) ends what is
left of that Ray and removes its session directory.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping

import ray

from ._ray_reaper import Reaper

__all__ = ["LocalRay", "start"]

# The only address a Ray we start listens on.
LOOPBACK = "127.0.0.1"
# Token authentication (on for a local `ray.init` since Ray 2.59) takes the token
# from this variable first. The daemons read it when they start, so it is set only
# while `ray.init` starts them, and no token file is written to ~/.ray.
TOKEN_VARIABLE = "RAY_AUTH_TOKEN"
TOKEN_BYTES = 32
# Ray makes every directory of its session world-writable (0777, for clusters shared
# between users), the one it is given included: it gets a subdirectory of ours,
# which is 0700, so no other user can reach into it.
TEMP_PREFIX = "parallelize-ray-"
RAY_SUBDIRECTORY = "ray"
EnvironmentChanges = dict[str, tuple["str | None", "str | None"]]


class LocalRay:
    """A Ray that `start()` started; `shutdown()` ends it and cleans up after it."""

    def __init__(self, temp_dir: str, changes: EnvironmentChanges, reaper: Reaper) -> None:
        self._temp_dir = temp_dir
        self._changes = changes
        self._reaper = reaper

    def shutdown(self) -> None:
        """End Ray, then the reaper: told to stand down, or to sweep if this failed."""
        try:
            ray.shutdown()
            _forget_cached_token()
            _undo(self._changes)
            shutil.rmtree(self._temp_dir, ignore_errors=True)
        except BaseException:
            self._reaper.sweep()
            raise
        self._reaper.stand_down()


def start(num_cpus: int | None) -> LocalRay:
    """`ray.init` on loopback, with a token and a session directory of its own.

    Another thread's child process started during `ray.init` would inherit the
    token: the environment is the process's, not the thread's.
    """
    temp_dir = tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=_temp_root())  # mode 0700
    try:
        reaper = Reaper(temp_dir)  # before Ray starts a process it would have to end
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    before = dict(os.environ)
    try:
        with _loopback_node(), _variable_set(TOKEN_VARIABLE, secrets.token_hex(TOKEN_BYTES)):
            _forget_cached_token()
            ray.init(
                num_cpus=num_cpus,
                _node_ip_address=LOOPBACK,
                _temp_dir=os.path.join(temp_dir, RAY_SUBDIRECTORY),
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
    except BaseException:
        LocalRay(temp_dir, _changes_since(before), reaper).shutdown()
        raise
    return LocalRay(temp_dir, _changes_since(before), reaper)


def _temp_root() -> str | None:
    """Where our session directory goes: Ray's own choice, where that differs from
    Python's, because Ray's socket paths must fit in AF_UNIX's 104-108 bytes."""
    if "RAY_TMPDIR" in os.environ:
        return os.environ["RAY_TMPDIR"]
    return "/tmp" if sys.platform == "darwin" else None  # macOS's TMPDIR is long


@contextlib.contextmanager
def _loopback_node() -> Iterator[None]:
    """Ray's local-only mode while `ray.init` runs: it then keeps the loopback node
    address it is given, and passes it to every daemon it starts.

    Ray reads the mode from RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, when ray is
    imported, so its module flag is set instead, and put back after.
    """
    from ray._private import ray_constants

    saved = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    if saved is None:  # a Ray without the mode
        yield
        return
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


@contextlib.contextmanager
def _variable_set(name: str, value: str) -> Iterator[None]:
    """`os.environ[name] = value` for the block only (for the processes started in it)."""
    saved = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        _set_variable(name, saved)


def _set_variable(name: str, value: str | None) -> None:
    """Set `name` in `os.environ`, or remove it for None."""
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def _forget_cached_token() -> None:
    """Make this process read its Ray token again at the next `ray.init`.

    The driver keeps the first token it reads for the life of the process; each Ray
    we start has a new one, and a Ray the caller starts later has its own.
    """
    loader = getattr(ray._raylet, "AuthenticationTokenLoader", None)  # Ray >= 2.52
    if loader is not None:
        loader.instance().reset_cache()


def _changes_since(before: Mapping[str, str]) -> EnvironmentChanges:
    """The variables set, changed or removed since `before`: name -> (old, new)."""
    names = before.keys() | os.environ.keys()
    changes = {name: (before.get(name), os.environ.get(name)) for name in names}
    return {name: (old, new) for name, (old, new) in changes.items() if old != new}


def _undo(changes: EnvironmentChanges) -> None:
    """Put back what `ray.init` set in `os.environ` (auth mode, usage stats, the
    breakpoint hook), except where the caller has changed it again since."""
    for name, (old, new) in changes.items():
        if os.environ.get(name) == new:
            _set_variable(name, old)

"""API.md section 6, "Private by default": what parallelize starts lets no one else in.

A Ray or a Dask cluster that a call starts for itself listens on loopback only,
IPv4 and IPv6, in every one of its processes; the Dask one refuses a client
without its credentials; the process backend opens no network socket; what
parallelize creates (shared slots, pipes, Ray's session directory) is its user's
alone. Each call runs in a fresh interpreter (where the suite's own settings for
Ray do not apply) and holds its items running while this test looks at the
processes from outside, as another user of the machine would see them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import json
import os
import re
import socket
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import helpers
import psutil
import pytest

import parallelize
from parallelize import parallel

# Other processes' sockets and descriptors are read from /proc (psutil needs root for
# them on macOS); CI runs on Linux.
pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads other processes' sockets in /proc"
)

PACKAGE_ROOT = str(Path(parallelize.__file__).resolve().parent.parent)
TESTS_DIR = str(Path(__file__).resolve().parent)

# Starting Ray takes ~10 s on two loaded cores, a Dask cluster a few; the held call,
# the checks and the shutdown add a few more.
CLUSTER_TEST_SECONDS = 150
# How long the script may take to end once its items are let go.
SCRIPT_END_SECONDS = 60
# conftest.py sets this for the whole suite (Ray's local-only mode); the scripts
# here run without it, so that only parallelize's own settings keep Ray on loopback.
SUITE_RAY_VARIABLES = ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS")
# What parallelize makes for a cluster's files is a directory its user alone enters.
OWNER_ONLY_DIRECTORY = 0o700
RAY_TEMP_PREFIX = "parallelize-ray-"
# What /proc/<pid>/fd shows for shared memory, and for the process backend's pipes.
SHARED_MEMORY = ("/memfd:", "/dev/shm/")
PIPES = ("pipe:",)

needs_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason='needs the "ray" extra'
)
needs_dask = pytest.mark.skipif(
    importlib.util.find_spec("distributed") is None, reason='needs the "dask" extra'
)

HELD_SCRIPT = """
    import json, os, sys
    from pathlib import Path
    import helpers
    from parallelize import parallel

    def held(x, directory, backend):
        '''Tell the test which worker runs item x (and its cluster), then wait for the
        test to open the gate.'''
        seen = {"pid": os.getpid()}
        if backend == "dask":
            import distributed

            worker = distributed.get_worker()
            seen["scheduler"] = worker.scheduler.address
            seen["local_directory"] = worker.local_directory
        Path(directory, f"running-{x}.tmp").write_text(json.dumps(seen))
        os.replace(Path(directory, f"running-{x}.tmp"), Path(directory, f"running-{x}"))
        helpers.wait_for_path(Path(directory, "gate"))
        return os.getpid()

    def current_pid():
        return os.getpid()

    def pid_of_a_ray_worker():
        import ray

        return ray.get(ray.remote(current_pid).remote())

    def changed_variables(before):
        names = before.keys() | os.environ.keys()
        return sorted(name for name in names if before.get(name) != os.environ.get(name))

    if __name__ == "__main__":
        backend, directory, *start_method = sys.argv[1:]
        settings = {"backend": backend, "workers": 2, "chunksize": 1}
        if start_method:
            settings["start_method"] = start_method[0]
        if backend == "ray":
            import ray  # what importing it sets (RAY_CLIENT_MODE) is not the call's doing
        before = dict(os.environ)
        pids = parallel(**settings)(held)(range(2), directory, backend)
        report = {"pids": pids, "changed_variables": changed_variables(before)}
        if backend == "ray":
            import ray
            from ray._private import ray_constants

            report["connected"] = ray.is_initialized()
            report["ray_cluster_mode"] = ray_constants.ENABLE_RAY_CLUSTER
            # The caller's own Ray, its way, after ours: no token or setting of ours left.
            ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
            report["own_ray_runs"] = pid_of_a_ray_worker() != os.getpid()
            ray.shutdown()
        print(json.dumps(report))
"""

INTRUDER_SCRIPT = """
    import json, sys
    import distributed

    def attempt(address, security):
        '''What a client without our credentials gets from our scheduler.'''
        try:
            with distributed.Client(address, security=security, timeout="5s"):
                return "connected"
        except Exception as exc:
            return type(exc).__name__

    if __name__ == "__main__":
        tls_address = sys.argv[1]
        plain_address = tls_address.replace("tls://", "tcp://")
        print(json.dumps({
            "plain": attempt(plain_address, None),
            "other_credentials": attempt(tls_address, distributed.Security.temporary()),
        }))
"""


class Bound(NamedTuple):
    """A TCP socket listening, or a UDP socket bound, in one process."""

    pid: int
    name: str
    kind: str
    ip: str
    port: int

    def __str__(self) -> str:
        return f"{self.name} (pid {self.pid}) {self.kind} {self.ip}:{self.port}"


class HeldCall:
    """A call running in a fresh interpreter, both of its items held on a gate."""

    def __init__(self, process: subprocess.Popen[str], directory: Path) -> None:
        self.process = process
        self.directory = directory
        self.running: list[dict[str, Any]] = []
        self.report: dict[str, Any] = {}

    def tree(self) -> list[psutil.Process]:
        """The script's process and every descendant."""
        root = psutil.Process(self.process.pid)
        return [root, *root.children(recursive=True)]

    def worker_pids(self) -> set[int]:
        return {seen["pid"] for seen in self.running}


def script_environment(home: Path) -> dict[str, str]:
    """The caller's environment without the suite's Ray settings, with an empty home
    (so a file written to ~ on our behalf would show)."""
    env = {name: value for name, value in os.environ.items() if name not in SUITE_RAY_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join([PACKAGE_ROOT, TESTS_DIR])
    env["HOME"] = str(home)
    return env


def start_script(tmp_path: Path, script: str, *args: str) -> subprocess.Popen[str]:
    path = tmp_path / f"script-{len(list(tmp_path.glob('script-*')))}.py"
    path.write_text(textwrap.dedent(script))
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return subprocess.Popen(
        [sys.executable, str(path), *args],
        cwd=tmp_path,
        env=script_environment(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def end_script(process: subprocess.Popen[str]) -> tuple[str, str]:
    """Wait for the script to end; kill its whole tree if it does not."""
    try:
        return process.communicate(timeout=SCRIPT_END_SECONDS)
    except subprocess.TimeoutExpired:
        kill_tree(process.pid)
        _, err = process.communicate()
        raise AssertionError(f"the script did not end: {err[-2000:]}") from None


def kill_tree(pid: int) -> None:
    with contextlib.suppress(psutil.NoSuchProcess):
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(processes, timeout=10)


def wait_for_item(call: HeldCall, index: int) -> dict[str, Any]:
    """What the worker running item `index` said about itself, once it runs."""
    marker = call.directory / f"running-{index}"
    deadline = time.monotonic() + CLUSTER_TEST_SECONDS / 2
    while not marker.exists():
        if call.process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"item {index} never ran")
        time.sleep(helpers.POLL_SECONDS)
    seen: dict[str, Any] = json.loads(marker.read_text())
    return seen


@contextlib.contextmanager
def held_call(tmp_path: Path, backend: str, *args: str) -> Iterator[HeldCall]:
    """Run HELD_SCRIPT's call; yield once both items run; then let them finish and
    keep the script's report on the `HeldCall`."""
    directory = tmp_path / "gates"
    directory.mkdir()
    call = HeldCall(start_script(tmp_path, HELD_SCRIPT, backend, str(directory), *args), directory)
    try:
        call.running = [wait_for_item(call, index) for index in range(2)]
    except AssertionError as exc:
        (directory / "gate").touch()
        _, err = end_script(call.process)
        raise AssertionError(f"{exc}; the script said: {err[-4000:]}") from None
    try:
        yield call
    finally:
        (directory / "gate").touch()
        out, err = end_script(call.process)
    assert call.process.returncode == 0, err[-4000:]
    call.report = json.loads(out.splitlines()[-1])


def bound_sockets(processes: list[psutil.Process]) -> list[Bound]:
    """Every TCP socket listening and every UDP socket bound, IPv4 and IPv6."""
    found = []
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):  # a process that ended meanwhile
            name = process.name()
            for conn in process.net_connections(kind="inet"):
                tcp = conn.type == socket.SOCK_STREAM
                if tcp and conn.status != psutil.CONN_LISTEN:
                    continue  # a connection, not a server
                kind = ("tcp" if tcp else "udp") + ("6" if conn.family == socket.AF_INET6 else "")
                found.append(Bound(process.pid, name, kind, conn.laddr.ip, conn.laddr.port))
    return found


def network_sockets(processes: list[psutil.Process]) -> list[str]:
    """Every IPv4 or IPv6 socket of `processes`, in whatever state."""
    found = []
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            found += [
                f"{process.name()} (pid {process.pid}) {conn}"
                for conn in process.net_connections(kind="inet")
            ]
    return found


def is_loopback(ip: str) -> bool:
    """127.0.0.0/8 or ::1, also as an IPv4-mapped IPv6 address; never a wildcard."""
    address = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_loopback


def assert_loopback_only(sockets: list[Bound]) -> None:
    exposed = [str(bound) for bound in sockets if not is_loopback(bound.ip)]
    assert not exposed, "listening beyond loopback:\n" + "\n".join(exposed)


def mode(path: str | os.PathLike[str]) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def is_owner_only(path: str | os.PathLike[str]) -> bool:
    """No permission bit for the group or others (what `path` points to, for a link)."""
    return mode(path) & 0o077 == 0


def descriptor_targets(pid: int) -> dict[str, str]:
    """/proc/<pid>/fd entry -> what it points to (a pipe, a memfd, a file)."""
    fd_dir = Path(f"/proc/{pid}/fd")
    targets = {}
    for entry in fd_dir.iterdir():
        with contextlib.suppress(FileNotFoundError):  # closed meanwhile
            targets[str(entry)] = os.readlink(entry)
    return targets


def loose_descriptors(processes: list[psutil.Process], kinds: tuple[str, ...]) -> list[str]:
    """Descriptors of `kinds` open in `processes` that someone other than their owner
    may open."""
    loose = []
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess, FileNotFoundError):  # ended meanwhile
            for entry, target in descriptor_targets(process.pid).items():
                if target.startswith(kinds) and not is_owner_only(entry):
                    loose.append(f"{process.name()} (pid {process.pid}) {target} {mode(entry):o}")
    return loose


def slot_holders(processes: list[psutil.Process]) -> set[int]:
    """The processes that have the process backend's shared slots open."""
    return {
        process.pid
        for process in processes
        if any(
            target.startswith("/memfd:parallelize-slots")
            for target in descriptor_targets(process.pid).values()
        )
    }


# -- Ray -----------------------------------------------------------------------------------


def ray_temp_dir(processes: list[psutil.Process]) -> str:
    """The session root our Ray was given, read from its daemons' command lines."""
    pattern = re.compile(rf"(/[^\s=]*/{RAY_TEMP_PREFIX}[^/\s]+)")
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            if match := pattern.search(" ".join(process.cmdline())):
                return match.group(1)
    raise AssertionError("no Ray process names a parallelize-ray- session directory")


def ray_session_processes(temp_dir: str, tree: list[psutil.Process]) -> list[psutil.Process]:
    """Processes of our Ray session outside the script's tree (re-parented ones)."""
    inside = {process.pid for process in tree}
    outside = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if process.pid not in inside and temp_dir in " ".join(process.cmdline()):
                outside.append(process)
    return outside


def is_ray_dashboard(process: psutil.Process) -> bool:
    """The head's dashboard server, or its per-node agent (named by its title)."""
    with contextlib.suppress(psutil.Error):
        scripts = ("dashboard/dashboard.py", "dashboard/agent.py")
        named = process.name() == "ray::DashboardAgent"
        return named or any(arg.endswith(scripts) for arg in process.cmdline())
    return False


@needs_ray
@pytest.mark.timeout(CLUSTER_TEST_SECONDS)
def test_ray_we_start_listens_on_loopback_only(tmp_path: Path) -> None:
    with held_call(tmp_path, "ray") as call:
        tree = call.tree()
        temp_dir = ray_temp_dir(tree)
        others = ray_session_processes(temp_dir, tree)
        sockets = bound_sockets(tree + others)
        assert_loopback_only(sockets)
        names = {bound.name for bound in sockets}
        # Not a vacuous pass: the daemons and the workers running our items listen.
        assert {"gcs_server", "raylet"} <= names, sockets
        assert call.worker_pids() <= {bound.pid for bound in sockets}, sockets
        # Ray always starts its API server (dashboard.py --minimal); no dashboard serves.
        dashboards = {process.pid for process in tree if is_ray_dashboard(process)}
        assert not [bound for bound in sockets if bound.pid in dashboards], sockets
        assert mode(temp_dir) == OWNER_ONLY_DIRECTORY  # Ray's own session is inside
        assert not loose_descriptors(tree, SHARED_MEMORY)  # the object store's segment
        assert not (tmp_path / "home" / ".ray").exists()  # no token file written for us
        # Nothing in Ray's shared default root, /tmp/ray (session names end in the pid).
        assert not list(Path("/tmp/ray").glob(f"session_*_{call.process.pid}"))
    assert not Path(temp_dir).exists()  # removed at shutdown
    assert call.report == {
        "pids": [seen["pid"] for seen in call.running],
        "changed_variables": [],
        "connected": False,
        "ray_cluster_mode": True,  # Ray's own mode is back for the caller's next ray.init
        "own_ray_runs": True,
    }


@needs_ray
def test_ray_cluster_connected_by_the_user_is_used_as_configured(ray_cluster: None) -> None:
    """The suite's Ray (conftest.py) keeps its session, and the call changes nothing
    of the caller's environment or of Ray's settings."""
    import ray
    from ray._private import ray_constants

    environment, cluster_mode = dict(os.environ), ray_constants.ENABLE_RAY_CLUSTER
    session = ray.get_runtime_context().gcs_address
    assert parallel(backend="ray", workers=2)(helpers.square)(range(4)) == [0, 1, 4, 9]
    assert ray.is_initialized()
    assert ray.get_runtime_context().gcs_address == session
    assert dict(os.environ) == environment
    assert ray_constants.ENABLE_RAY_CLUSTER is cluster_mode


# -- Dask ----------------------------------------------------------------------------------


@needs_dask
@pytest.mark.timeout(CLUSTER_TEST_SECONDS)
def test_dask_cluster_we_start_listens_on_loopback_only_over_tls(tmp_path: Path) -> None:
    with held_call(tmp_path, "dask") as call:
        sockets = bound_sockets(call.tree())
        assert_loopback_only(sockets)
        scheduler = call.running[0]["scheduler"]
        assert scheduler.startswith("tls://127.0.0.1:"), scheduler
        # Scheduler and nannies listen in the caller's process, each worker in its own.
        listening = {bound.pid for bound in sockets}
        assert {call.process.pid, *call.worker_pids()} <= listening, sockets
        for seen in call.running:
            assert mode(seen["local_directory"]) == OWNER_ONLY_DIRECTORY
    assert call.report["pids"] == [seen["pid"] for seen in call.running]


@needs_dask
@pytest.mark.timeout(CLUSTER_TEST_SECONDS)
def test_dask_cluster_we_start_refuses_clients_without_its_credentials(tmp_path: Path) -> None:
    with held_call(tmp_path, "dask") as call:
        intruder = start_script(tmp_path, INTRUDER_SCRIPT, call.running[0]["scheduler"])
        out, err = end_script(intruder)
        assert intruder.returncode == 0, err[-4000:]
        attempts = json.loads(out.splitlines()[-1])
    assert "connected" not in attempts.values(), attempts
    assert call.report["pids"] == [seen["pid"] for seen in call.running]  # ours was served


# -- the process backend -------------------------------------------------------------------


@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
def test_process_backend_opens_no_network_socket_and_shares_owner_only(
    tmp_path: Path, start_method: str
) -> None:
    with held_call(tmp_path, "process", start_method) as call:
        tree = call.tree()
        assert not network_sockets(tree)
        assert not loose_descriptors(tree, SHARED_MEMORY + PIPES)
        if hasattr(os, "memfd_create"):  # not a vacuous pass: the slots were looked at
            assert slot_holders(tree) >= {call.process.pid, *call.worker_pids()}
    assert call.report["pids"] == [seen["pid"] for seen in call.running]
    assert call.report["changed_variables"] == []

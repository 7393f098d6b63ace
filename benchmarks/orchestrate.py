"""Runs each (implementation, workload) pair in a fresh process, with a time limit.

The pair is started in a new session, so it and every process it starts share one
process group: on timeout the whole group is killed (a hang shows as TIMEOUT, not
as a stuck run), and after a normal exit any process it left behind is killed too.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["REPO", "run_in_fresh_process"]

REPO = Path(__file__).resolve().parent.parent
STDERR_TAIL = 2000  # characters of a crashed pair's stderr kept in the results


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _environment() -> dict[str, str]:
    """This environment, with the checkout first on the path: it benchmarks this tree."""
    env = dict(os.environ)
    paths = [str(REPO), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def run_in_fresh_process(
    spec: dict[str, Any], time_limit: float, workdir: Path, tag: str
) -> dict[str, Any]:
    """Run one pair (`spec`, see pair.py) and return its result dict, never raising."""
    spec_path = workdir / f"{tag}.spec.json"
    result_path = workdir / f"{tag}.result.json"
    stderr_path = workdir / f"{tag}.stderr.txt"
    spec_path.write_text(json.dumps(spec))
    command = [sys.executable, "-m", "benchmarks.pair", str(spec_path), str(result_path)]
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=_environment(),
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
            start_new_session=True,
        )
        try:
            process.wait(timeout=time_limit)
        except subprocess.TimeoutExpired:
            _kill_group(process.pid)
            process.wait()
            return {
                "status": "TIMEOUT",
                "error": f"no result within {time_limit:.0f} s; its process group was killed",
            }
        except BaseException:  # Ctrl-C: leave nothing behind
            _kill_group(process.pid)
            process.wait()
            raise
        finally:
            _kill_group(process.pid)
    if result_path.exists():
        result: dict[str, Any] = json.loads(result_path.read_text())
        return result
    tail = stderr_path.read_text(errors="replace")[-STDERR_TAIL:]
    return {
        "status": "FAIL",
        "error": f"the pair's process exited with code {process.returncode} and no result",
        "traceback": tail,
    }

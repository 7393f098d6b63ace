"""What the results were measured on: CPU, cores, Python, package versions, date, load."""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["machine_info", "tree_digest"]

REPO = Path(__file__).resolve().parent.parent
PACKAGES = (
    "tqdm",
    "wrapt",
    "cloudpickle",
    "joblib",
    "mpire",
    "pebble",
    "dask",
    "distributed",
    "ray",
    "numpy",
    "threadpoolctl",
    "psutil",
    "matplotlib",
)


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return found.group(1).strip() if found else platform.processor() or "unknown"


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _parallelize_version() -> str:
    """The version in this checkout's `parallelize/__init__.py`, and its git commit."""
    source = (REPO / "parallelize" / "__init__.py").read_text()
    found = re.search(r'^__version__\s*=\s*"([^"]+)"', source, re.M)
    version = found.group(1) if found else "unknown"
    try:
        commit = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no", "parallelize")
    except (OSError, subprocess.CalledProcessError):
        return f"{version} (files {tree_digest()})"
    state = f", modified: files {tree_digest()}" if dirty or _untracked() else ""
    return f"{version} ({commit}{state})"


def _untracked() -> bool:
    """Whether parallelize/ has files git does not track (new, not yet committed)."""
    try:
        return bool(_git("ls-files", "--others", "--exclude-standard", "parallelize"))
    except (OSError, subprocess.CalledProcessError):
        return False


def _git(*args: str) -> str:
    """What a git command prints about this checkout, stripped; raises if it fails."""
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def tree_digest() -> str:
    """A short hash of parallelize/*.py as they are on disk: which code was measured."""
    digest = hashlib.sha256()
    for path in sorted((REPO / "parallelize").rglob("*.py")):
        digest.update(str(path.relative_to(REPO)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def machine_info() -> dict[str, Any]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    packages = {name: _version(name) for name in PACKAGES}
    packages["parallelize"] = _parallelize_version()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "packages": packages,
    }

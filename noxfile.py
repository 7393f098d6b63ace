"""The version matrix: the package built once, then tested as users install it.

`nox` builds the sdist and the wheel and checks them, then, on every CPython the
project claims, installs the wheel (with the test, Dask and Ray extras) in a fresh
virtual environment and runs the whole suite against it from outside the checkout,
followed by `mypy --strict` on a program that imports the installed package.
A missing interpreter fails the run: a version we claim is a version we test.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
DIST = ROOT / "dist"
# Every CPython that pyproject.toml's requires-python admits and that is released.
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]

nox.options.sessions = ["build", "tests"]
nox.options.error_on_missing_interpreters = True


@nox.session
def build(session: nox.Session) -> None:
    """Build the sdist and the wheel once, check their metadata and contents."""
    for stale in (DIST, ROOT / "build"):  # setuptools would pack old files left in build/
        shutil.rmtree(stale, ignore_errors=True)
    session.install("build", "twine")
    session.run("python", "-m", "build", "--outdir", str(DIST), str(ROOT))
    session.run("twine", "check", "--strict", *map(str, sorted(DIST.iterdir())))
    missing = _missing_from_wheel(_wheel())
    if missing:
        session.error(f"the wheel lacks files of the package: {', '.join(missing)}")


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The whole suite and the typing check, against the wheel installed in a new venv."""
    wheel = _wheel()
    session.install(f"parallelize[test,dask,ray] @ {wheel.as_uri()}", "mypy")
    # Run from a folder outside the checkout, so `import parallelize` can only find the
    # installed copy; conftest.py refuses to run otherwise (PARALLELIZE_TEST_INSTALLED).
    # Not nox's own tmp folder: that is inside the venv, where Ray refuses its temp_dir.
    outside = Path(tempfile.mkdtemp(prefix=f"parallelize-{session.name}-"))
    session.chdir(outside)
    session.run(
        "pytest",
        str(ROOT / "tests"),
        "-p",
        "no:cacheprovider",
        *session.posargs,
        env={"PARALLELIZE_TEST_INSTALLED": "1"},
    )
    # mypy finds the package through its py.typed marker, or reports it untyped.
    program = Path("uses_installed_parallelize.py")
    shutil.copyfile(ROOT / "tests" / "test_typing.py", program)
    session.run("mypy", "--strict", "--no-incremental", str(program))
    session.chdir(ROOT)
    shutil.rmtree(outside)


def _wheel() -> Path:
    """The one wheel that the build session made."""
    wheels = sorted(DIST.glob("parallelize-*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"expected one wheel in {DIST}, found {wheels}: run `nox -s build`")
    return wheels[0]


def _missing_from_wheel(wheel: Path) -> list[str]:
    """Files of the package in the checkout that the wheel does not contain."""
    package = ROOT / "parallelize"
    wanted = {
        path.relative_to(ROOT).as_posix()
        for path in package.rglob("*")
        if path.is_file() and (path.suffix == ".py" or path.name == "py.typed")
    }
    with zipfile.ZipFile(wheel) as archive:
        return sorted(wanted - set(archive.namelist()))

"""API.md section 1: the decorator, its settings and the public surface of the package."""

from __future__ import annotations

import importlib.metadata
import inspect
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import helpers
import pytest

import parallelize
from parallelize import ParallelError, TaskTimeoutError, WorkerLostError, parallel

PACKAGE_ROOT = str(Path(parallelize.__file__).resolve().parent.parent)
TESTS_DIR = str(Path(__file__).resolve().parent)

# (setting, invalid value, a fragment of the message saying what is accepted)
INVALID_SETTINGS = [
    ("workers", 0, ">= 1"),
    ("workers", -1, ">= 1"),
    ("workers", "4", ">= 1"),
    ("ordered", "yes", "True or False"),
    ("backend", "gpu", "'process'"),
    ("errors", "ignore", "'return'"),
    ("retries", -1, ">= 0"),
    ("timeout", 0, "> 0"),
    ("timeout", -1.5, "> 0"),
    ("chunksize", 0, ">= 1"),
    ("start_method", "teleport", "'spawn'"),
]


def invalid_id(case: tuple[str, object, str]) -> str:
    return f"{case[0]}={case[1]!r}"


def test_bare_and_called_forms_are_equivalent() -> None:
    bare = parallel(helpers.square)
    called = parallel()(helpers.square)
    for function in (bare, called):
        assert function(range(5)) == [0, 1, 4, 9, 16]
        assert list(function.iter(range(3))) == [0, 1, 4]
        assert function.func is helpers.square
    assert helpers.bare_square(range(4)) == [0, 1, 4, 9]


def test_api_example_calls() -> None:
    """The calls shown at the top of section 1: list, extra args, iter, func, options."""
    add = parallel(workers=2, ordered=False)(helpers.add)
    assert sorted(add([1, 2, 3], 10)) == [11, 12, 13]
    assert sorted(add([1, 2, 3], 10, scale=3)) == [33, 36, 39]
    assert sorted(add.iter([1, 2], 1)) == [2, 3]
    assert add.func(1, 2) == 3
    assert add.options(ordered=True)(range(6), 1) == [1, 2, 3, 4, 5, 6]


def test_settings_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        parallel(4)  # type: ignore[call-overload]
    with pytest.raises(TypeError):
        parallel(helpers.square, 4)  # type: ignore[call-overload]


@pytest.mark.parametrize("case", INVALID_SETTINGS, ids=invalid_id)
def test_invalid_setting_fails_at_decoration(case: tuple[str, object, str]) -> None:
    name, value, accepted = case
    with pytest.raises((ValueError, TypeError), match=re.escape(name)) as caught:
        parallel(**{name: value})(helpers.square)
    message = str(caught.value)
    assert repr(value) in message
    assert accepted in message


@pytest.mark.parametrize("case", INVALID_SETTINGS, ids=invalid_id)
def test_options_validates_like_the_decorator(case: tuple[str, object, str]) -> None:
    name, value, accepted = case
    function = parallel(backend="serial")(helpers.square)
    with pytest.raises((ValueError, TypeError), match=re.escape(name)) as caught:
        function.options(**{name: value})
    assert repr(value) in str(caught.value)
    assert accepted in str(caught.value)
    assert function([1, 2]) == [1, 4]


@pytest.mark.parametrize("misspelt", ["worker", "order", "progres", "nonsense"])
def test_unknown_setting_is_a_type_error(misspelt: str) -> None:
    with pytest.raises(TypeError, match=misspelt):
        parallel(**{misspelt: True})(helpers.square)
    function = parallel(backend="serial")(helpers.square)
    with pytest.raises(TypeError, match=f"'{misspelt}'"):
        function.options(**{misspelt: True})


def test_options_returns_a_new_function_and_leaves_the_original_unchanged() -> None:
    serial = parallel(backend="serial")(helpers.current_pid)
    on_processes = serial.options(backend="process", workers=2)
    assert on_processes is not serial
    assert os.getpid() not in on_processes(range(4))
    assert serial(range(4)) == [os.getpid()] * 4
    assert on_processes.func is serial.func is helpers.current_pid


def test_metadata_is_kept() -> None:
    function = parallel(workers=2)(helpers.documented)
    original = helpers.documented
    assert function.__name__ == "documented"
    assert function.__qualname__ == original.__qualname__
    assert function.__doc__ == "Scale one number."
    assert function.__module__ == "helpers"
    assert inspect.signature(function) == inspect.signature(original)
    assert function.__wrapped__ is original
    assert function.func is original
    assert function.func(3, 3, offset=1) == 10


def test_metadata_is_kept_when_decorated_at_module_level() -> None:
    function = helpers.decorated_square
    assert function.__name__ == "decorated_square"
    assert function.__qualname__ == "decorated_square"
    assert function.__doc__ == "Square one number."
    assert function.__module__ == "helpers"
    assert function.__wrapped__ is function.func
    assert inspect.signature(function) == inspect.signature(function.func)
    assert function.func(7) == 49


def test_close_is_a_no_op_without_keep_alive() -> None:
    function = parallel(workers=2)(helpers.square)
    function.close()
    assert function([1, 2, 3]) == [1, 4, 9]
    function.close()
    assert function([4]) == [16]


def test_public_names() -> None:
    assert {"parallel", "ParallelError", "TaskTimeoutError", "WorkerLostError"} <= set(
        parallelize.__all__
    )
    for name in parallelize.__all__:
        assert hasattr(parallelize, name)


def test_version_is_the_installed_distributions() -> None:
    """`__version__` is written once: the package metadata is built from it."""
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", parallelize.__version__)
    assert parallelize.__version__ == importlib.metadata.version("parallelize")


def test_error_classes_inherit_the_standard_ones() -> None:
    assert issubclass(TaskTimeoutError, TimeoutError)
    assert issubclass(TaskTimeoutError, ParallelError)
    assert issubclass(WorkerLostError, RuntimeError)
    assert issubclass(WorkerLostError, ParallelError)
    assert issubclass(ParallelError, Exception)


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter that imports this package and the test helpers."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([PACKAGE_ROOT, TESTS_DIR])}
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30
    )


def test_import_does_not_import_dask_or_ray() -> None:
    """Neither importing the package nor choosing a cluster backend imports one."""
    code = (
        "import sys, helpers, parallelize\n"
        "on_dask = parallelize.parallel(backend='dask')(helpers.square)\n"
        "on_ray = on_dask.options(backend='ray', keep_alive=True)\n"
        "on_ray.close()\n"
        "loaded = [m for m in ('dask', 'distributed', 'ray') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    done = run_python(code)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(("backend", "module"), [("dask", "distributed"), ("ray", "ray")])
def test_missing_optional_backend_says_what_to_install(backend: str, module: str) -> None:
    """The module is made unimportable (`sys.modules[name] = None`), installed or not."""
    code = textwrap.dedent(
        f"""
        import sys, helpers
        from parallelize import parallel

        sys.modules[{module!r}] = None
        function = parallel(backend={backend!r})(helpers.square)
        try:
            function([1, 2])
        except ImportError as exc:
            print(exc)
        else:
            print("no ImportError")
        """
    )
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    assert f'pip install "parallelize[{backend}]"' in done.stdout
    assert done.stdout.rstrip("\n").endswith(f'pip install "parallelize[{backend}]"')

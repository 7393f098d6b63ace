"""What the pool does, on `logging.getLogger("parallelize")` at DEBUG (issue 14).

Workers started, ended, killed (and why) and replaced; chunk sizes as they change;
retries. A healthy call logs nothing at INFO or above.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from helpers import exit_at, fail_on, square

from parallelize import parallel

pytestmark = pytest.mark.timeout(60)


def hang_on_two(x: int) -> int:
    if x == 2:
        time.sleep(30)
    return x


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "parallelize"]


@pytest.fixture
def debug(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="parallelize")
    return caplog


def test_workers_starting_and_ending_are_logged(
    process_settings: dict[str, Any], debug: pytest.LogCaptureFixture
) -> None:
    parallel(**process_settings)(square)(range(50))
    logged = messages(debug)
    method = process_settings["start_method"]
    for slot in range(process_settings["workers"]):
        assert any(m.startswith(f"worker {slot} started: pid ") and method in m for m in logged)
        assert any(m.startswith(f"worker {slot} ended: pid ") for m in logged)


def test_a_death_says_how_the_worker_ended(
    process_settings: dict[str, Any], debug: pytest.LogCaptureFixture
) -> None:
    parallel(**process_settings, errors="return")(exit_at)(range(4), 2)
    assert any("exited with code 3; replacing it" in m for m in messages(debug))


def test_a_timeout_kill_says_why(
    process_settings: dict[str, Any], debug: pytest.LogCaptureFixture
) -> None:
    parallel(**process_settings, timeout=0.5, errors="return")(hang_on_two)(range(4))
    assert any("killed: its item ran past timeout=0.5 s" in m for m in messages(debug))


def test_a_spent_worker_is_replaced(
    process_settings: dict[str, Any], debug: pytest.LogCaptureFixture
) -> None:
    parallel(**process_settings, max_tasks_per_worker=2, chunksize=1)(square)(range(8))
    assert any("replaced: it ran max_tasks_per_worker=2 items" in m for m in messages(debug))


def test_retries_and_chunk_sizes_are_logged(
    settings: dict[str, Any], debug: pytest.LogCaptureFixture
) -> None:
    parallel(**settings, retries=2, errors="return")(fail_on)(range(2000), 2)
    logged = messages(debug)
    assert "item 2 failed (ValueError); retry 1 of 2" in logged
    assert "item 2 failed (ValueError); retry 2 of 2" in logged
    if settings["backend"] == "process":  # threads take items one at a time
        assert any(m.startswith("chunk size 1 -> ") for m in logged)


def test_a_healthy_call_logs_nothing_at_info_or_above(
    settings: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    parallel(**settings)(square)(range(1000))
    loud = [r for r in caplog.records if r.name.startswith("parallelize")]
    assert all(r.levelno < logging.INFO for r in loud)

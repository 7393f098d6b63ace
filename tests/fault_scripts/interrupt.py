"""Start a parallel call of long items, print "ready" once they run, wait for Ctrl-C.

Run by `tests/test_interrupt.py` as `python interrupt.py BACKEND START_METHOD MODE DIR`:
the test sends SIGINT once "ready" is printed, and checks that this process ends
with KeyboardInterrupt, promptly, quietly, and leaves no worker behind.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

from parallelize import parallel

WORKERS = 2
# Far longer than the test waits: an item that finishes on its own is a failure.
ITEM_SECONDS = 30.0
GATE_SECONDS = 20.0


def long_item(x: int, directory: str) -> int:
    """Announce that the item started (with the pid running it), then work a long time."""
    Path(directory, f"started-{x}-{os.getpid()}").touch()
    time.sleep(ITEM_SECONDS)
    return x


def announce_when_running(directory: str) -> None:
    """Print "ready" once WORKERS items have started (the items write the files)."""
    deadline = time.monotonic() + GATE_SECONDS
    while sum(1 for p in Path(directory).iterdir() if p.name.startswith("started-")) < WORKERS:
        if time.monotonic() > deadline:
            print("never ready", flush=True)
            return
        time.sleep(0.01)
    print("ready", flush=True)


def main() -> None:
    backend, start_method, mode, directory = sys.argv[1:]
    settings: dict[str, object] = {"backend": backend, "workers": WORKERS}
    if backend == "process":
        settings["start_method"] = start_method
    if mode == "unordered":
        settings["ordered"] = False
    work = parallel(**settings)(long_item)  # type: ignore[call-overload]
    threading.Thread(target=announce_when_running, args=(directory,), daemon=True).start()
    items = range(4 * WORKERS)
    if mode == "iter":
        for result in work.iter(items, directory):
            print(result, flush=True)
    else:
        print(work(items, directory), flush=True)


if __name__ == "__main__":
    main()

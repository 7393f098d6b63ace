"""Use a kept-alive pool, print its worker pids, and exit without calling `close()`.

Run by `tests/test_faults.py` as `python keep_alive_exit.py START_METHOD DIR`; the
test checks that the workers end with the program.
"""

from __future__ import annotations

import sys
from typing import Literal, cast

import faults

from parallelize import parallel

WORKERS = 2
StartMethod = Literal["fork", "spawn", "forkserver"]


def main() -> None:
    start_method = cast(StartMethod, sys.argv[1])
    directory = sys.argv[2]
    work = parallel(workers=WORKERS, keep_alive=True, start_method=start_method)(faults.meet)
    pids = set(work(range(WORKERS), directory, WORKERS))
    print(*sorted(pids), flush=True)


if __name__ == "__main__":
    main()

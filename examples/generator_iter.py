"""f.iter() is lazy: it draws from an endless generator only as workers free up,
and breaking out of the loop stops the remaining work and the workers."""

import itertools
import multiprocessing
import time
from collections.abc import Iterator

from parallelize import parallel


@parallel(workers=4)
def square(n: int) -> int:
    time.sleep(0.01)  # some real work per item
    return n * n


def endless(drawn: list[int]) -> Iterator[int]:
    """Yield 0, 1, 2, ... forever, recording in `drawn` each number handed out."""
    for n in itertools.count():
        drawn.append(n)
        yield n


if __name__ == "__main__":
    drawn: list[int] = []
    consumed = 0
    for result in square.iter(endless(drawn)):
        consumed += 1
        if result > 1000:  # the first square above 1000 is 32 * 32
            break
    print(f"results consumed:               {consumed}")
    print(f"items drawn from the generator: {len(drawn)} (only what the busy workers hold)")

    drawn_at_break = len(drawn)
    deadline = time.monotonic() + 2  # the workers should be gone well before this
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    print(f"items drawn since the break:    {len(drawn) - drawn_at_break}")
    print(f"worker processes still alive:   {len(multiprocessing.active_children())}")

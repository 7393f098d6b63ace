"""Results in completion order: ordered=False returns the fastest items first,
and .iter() hands each result over the moment it is ready."""

import time

from parallelize import parallel


@parallel(workers=4, ordered=False)
def wait(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


if __name__ == "__main__":
    delays = [0.4, 0.1, 0.3, 0.2]
    print("input order:     ", delays)
    print("completion order:", wait(delays))

    print("handled as they arrive with .iter():")
    start = time.perf_counter()
    for seconds in wait.iter(delays):
        print(f"  the {seconds} s item, after {time.perf_counter() - start:.2f} s")

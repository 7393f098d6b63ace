"""backend="thread" for I/O-bound work: 20 simulated 0.1 s requests on 10 threads
take about 0.2 s instead of 2 s."""

import time

from parallelize import parallel


@parallel(workers=10, backend="thread")
def fetch(url: str) -> int:
    time.sleep(0.1)  # stands in for a network call: waiting on I/O releases the GIL
    return len(url)


if __name__ == "__main__":
    urls = [f"https://example.com/page/{i}" for i in range(20)]
    start = time.perf_counter()
    sizes = fetch(urls)
    elapsed = time.perf_counter() - start
    print(f"fetched {len(sizes)} pages in {elapsed:.2f} s on 10 threads")
    print(f"one after another it would take {0.1 * len(urls):.1f} s")

"""Progress bars (drawn on stderr by tqdm): on/off, a description, tqdm options,
or an outer bar that you own and that several calls advance."""

import time

from tqdm import tqdm

from parallelize import parallel


@parallel(workers=4, progress=True)  # the bar's description is the function's name
def download(n: int) -> int:
    time.sleep(0.05)  # stands in for real work
    return n


if __name__ == "__main__":
    files = range(20)
    download(files)
    download.options(progress="Downloading")(files)  # a str sets the description
    download.options(progress={"unit": "file", "desc": "Fetching"})(files)  # tqdm kwargs

    # A bar you own: each call advances it and leaves it open; you close it (here with `with`).
    batches = [range(0, 20), range(20, 40)]
    with tqdm(total=sum(len(b) for b in batches), desc="All batches", unit="file") as bar:
        for batch in batches:
            download.options(progress=bar)(batch)
    print(f"done: {bar.n} files counted on the outer bar")

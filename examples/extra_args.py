"""Extra positional and keyword arguments are passed to every call;
star=True unpacks each item, a tuple, into the function's arguments."""

from parallelize import parallel


@parallel(workers=2)
def scale(x: int, factor: int, offset: int = 0) -> int:
    return x * factor + offset


@parallel(workers=2, star=True)
def area(width: int, height: int) -> int:
    return width * height


if __name__ == "__main__":
    items = [1, 2, 3]
    # Each result is scale(x, 10, offset=1).
    print("scale(items, 10, offset=1)   ->", scale(items, 10, offset=1))

    # Each result is area(*pair).
    pairs = [(2, 3), (4, 5), (10, 10)]
    print("area(pairs)   [star=True]    ->", area(pairs))

    # Both together: each result is scale(*pair, offset=5).
    pairs = [(1, 10), (2, 100)]
    print("scale with star=True, offset ->", scale.options(star=True)(pairs, offset=5))

"""Large data between the caller and process workers: intact, writable, every start method."""

from __future__ import annotations

import multiprocessing
import os
import threading
from typing import Any

import helpers
import numpy as np
import pytest

from parallelize import parallel
from parallelize.backends import _wire


def test_large_arrays_cross_both_ways_intact_and_writable(
    process_settings: dict[str, Any],
) -> None:
    """Arrays far over the out-of-band size arrive writable and come back whole,
    among small ones and in every order setting."""
    arrays = [np.arange(n, dtype=np.float64) for n in (3, 300_000, 10, 600_000, 0)]
    expected = [a * 2 for a in arrays]
    for ordered in (True, False):
        scaled = parallel(**process_settings, ordered=ordered)(helpers.scaled_in_place)
        results = scaled(arrays, 2.0)
        want = expected if ordered else sorted(expected, key=len)
        if not ordered:  # any order: the lengths differ, so compare by length
            results.sort(key=len)
        assert [r.tolist() for r in results] == [w.tolist() for w in want]
    assert arrays[1][5] == 5.0  # the caller's arrays were copies on the way out


def test_large_bytes_like_items_and_results(process_settings: dict[str, Any]) -> None:
    blobs = [bytearray(b"x" * 200_000), b"y" * 300_000, memoryview(b"z" * 5).tobytes()]
    doubled = parallel(**process_settings)(helpers.double)(blobs)
    assert doubled == [blob * 2 for blob in blobs]


def _pipe() -> tuple[Any, Any]:
    reader, writer = multiprocessing.Pipe(duplex=False)
    _wire.widen(writer)
    return reader, writer


def test_wire_carries_an_envelope_and_buffers_of_any_size() -> None:
    reader, writer = _pipe()
    big = np.arange(2_000_000, dtype=np.uint8) % 251
    parts = [b"", b"small", memoryview(big)]
    sender = threading.Thread(target=_wire.send, args=(writer, b"envelope", parts))
    sender.start()
    envelope, buffers = _wire.receive(reader)
    sender.join()
    assert envelope == b"envelope"
    assert [bytes(b) for b in buffers[:2]] == [b"", b"small"]
    assert np.array_equal(np.frombuffer(buffers[2], dtype=np.uint8), big)
    reader.close()
    writer.close()


@pytest.mark.skipif(not _wire._RAW, reason="framing is Connection's own without raw pipes")
def test_wire_raises_eof_when_the_sender_dies_mid_message() -> None:
    reader, writer = _pipe()
    head = _wire._HEAD.pack(8 + 4 + 1000, 4, 1) + _wire._SIZE.pack(1000)
    os.write(writer.fileno(), head + b"env!" + b"partial")  # its buffer never comes
    writer.close()
    with pytest.raises(EOFError):
        _wire.receive(reader)
    reader.close()

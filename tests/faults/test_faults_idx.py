"""Fault cases of IDX files, the MNIST format (npvae.data.idx)."""
import gzip

import numpy as np
import pytest
from _faults import lib_error

from npvae.data.idx import read_idx, write_idx

_GOOD = bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3]) + bytes(range(6))
_ANY = "IDX|truncated|dtype|dimensions|trailing"

BAD = [
    ("IDX shorter than a header", b"\x00\x00", "too short", False),
    ("IDX with a wrong magic number (an HTML page)", b"<html>not idx</html>", "magic", False),
    ("IDX with an unknown dtype code", bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 5]), "dtype code", False),
    ("IDX with 0 dimensions", bytes([0, 0, 8, 0]), "0 dimensions", False),
    ("IDX with a truncated header", bytes([0, 0, 8, 3, 0, 0, 0, 1]), "truncated header", False),
    ("IDX with truncated data", _GOOD[:-2], "truncated", False),
    ("IDX with trailing bytes", _GOOD + b"\x00", "trailing", False),
    ("IDX header claiming 4 G x 4 G items", bytes([0, 0, 8, 2]) + b"\xff" * 8 + b"\x00", "truncated", False),
    ("gzip IDX cut in half", gzip.compress(_GOOD * 50)[:40], "gzip", True),
] + [(f"IDX of random bytes (seed {seed})",
      bytes([0, 0]) + np.random.default_rng(seed).integers(0, 256, 30, dtype=np.uint8).tobytes(), _ANY, False)
     for seed in range(8)]


@pytest.mark.fault("idx", "{description}", "clear error")
@pytest.mark.parametrize("description, data, match, gz", BAD, ids=[b[0] for b in BAD])
def test_damaged_idx(tmp_path, description, data, match, gz):
    p = tmp_path / ("x.idx.gz" if gz else "x.idx")
    p.write_bytes(data)
    with lib_error(match):
        read_idx(p)


@pytest.mark.fault("idx", "IDX round trip of every dtype", "correct result")
def test_round_trip(tmp_path):
    for dt in (np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64):
        a = (np.arange(24).reshape(2, 3, 4) - 5).astype(dt)
        back = read_idx(write_idx(tmp_path / f"a_{np.dtype(dt).name}.idx.gz", a))
        assert back.dtype == np.dtype(dt) and np.array_equal(back, a), dt


@pytest.mark.fault("idx", "read_idx of a missing file", "clear error")
def test_missing(tmp_path):
    with lib_error("not found"):
        read_idx(tmp_path / "nope.idx")

"""Read and write IDX files, the format of MNIST and Fashion-MNIST.

An IDX file is a header followed by the raw array, big-endian::

    bytes 0-1   zero
    byte  2     dtype code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64)
    byte  3     number of dimensions, ndim
    4 * ndim    each dimension as a big-endian uint32
    rest        prod(dims) items of that dtype, row-major

Files may be gzip-compressed (recognised by their first two bytes, not their
name). Anything that does not add up raises :class:`npvae.errors.DatasetError`
naming the file, what is wrong and how to fix it.
"""
from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from ..files.atomic import atomic_path
from ..errors import DatasetError

DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dt.newbyteorder("="): code for code, dt in DTYPES.items()}

_GZIP_MAGIC = b"\x1f\x8b"
DEFAULT_FIX = "delete it and download it again, or point NPVAE_DATA (or --data-dir) at a good copy"


def read_idx(path: str | os.PathLike, fix: str = DEFAULT_FIX) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) into an array.

    Parameters
    ----------
    path : path of the file
    fix : how to repair a bad file; it ends every error message

    Returns
    -------
    ndarray of the shape and dtype the header gives (native byte order)

    Raises
    ------
    DatasetError
        if the file is missing, not gzip or IDX, or its size disagrees with its header.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found; {fix}") from None
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DatasetError(f"{path}: corrupt or truncated gzip data ({e}); {fix}") from None
    return parse_idx(raw, name=str(path), fix=fix)


def parse_idx(raw: bytes, name: str = "<bytes>", fix: str = DEFAULT_FIX) -> np.ndarray:
    """Parse the bytes of an uncompressed IDX file (see :func:`read_idx`)."""
    def bad(what: str) -> DatasetError:
        return DatasetError(f"{name}: {what}; {fix}")

    if len(raw) < 4:
        raise bad(f"only {len(raw)} bytes, too short for an IDX header (truncated?)")
    if raw[0] != 0 or raw[1] != 0:
        raise bad(f"wrong magic number 0x{raw[:4].hex()} (an IDX file starts with two zero bytes); "
                  "it is not an IDX file (an HTML error page or another format?)")
    code, ndim = raw[2], raw[3]
    if code not in DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in DTYPES)
        raise bad(f"unknown IDX dtype code 0x{code:02X} in the magic number (known: {known})")
    if ndim == 0:
        raise bad("header gives 0 dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise bad(f"truncated header: {ndim} dimensions need {header} bytes, file has {len(raw)}")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = DTYPES[code]
    expected = header + math.prod(dims) * dtype.itemsize
    if len(raw) < expected:
        raise bad(f"truncated: header says shape {dims} ({expected} bytes in all) but the data has "
                  f"only {len(raw)} bytes")
    if len(raw) > expected:
        raise bad(f"{len(raw) - expected} bytes of trailing data after the {expected} bytes the "
                  f"header (shape {dims}) accounts for")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="), copy=True)


def idx_bytes(array: np.ndarray) -> bytes:
    """The uncompressed IDX encoding of ``array`` (dtype uint8, int8, int16, int32, float32 or float64)."""
    array = np.asarray(array)
    dt = array.dtype.newbyteorder("=")
    if dt not in _CODES:
        raise ValueError(f"IDX cannot store dtype {array.dtype}; use one of "
                         f"{sorted(str(d) for d in _CODES)}")
    if array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"IDX needs 1 to 255 dimensions, got {array.ndim}")
    code = _CODES[dt]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=DTYPES[code]).tobytes()


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write ``array`` as an IDX file, gzip-compressed if ``compress`` (default: name ends in ``.gz``).

    Written to a temporary file beside ``path`` and moved into place, so an
    interrupted write never leaves a partial file under ``path``.
    """
    path = Path(path)
    if compress is None:
        compress = path.suffix == ".gz"
    data = idx_bytes(array)
    if compress:
        data = gzip.compress(data, compresslevel=6, mtime=0)
    with atomic_path(path, path.suffix) as tmp:
        tmp.write_bytes(data)
    return path

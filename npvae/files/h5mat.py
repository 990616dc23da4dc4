"""Nested Python trees in HDF5 files that are also MATLAB v7.3 MAT-files.

One file is one tree: dicts become groups, leaves become datasets. The file opens
with ``h5py`` (:func:`read_tree`), with MATLAB's ``load``/``h5read`` and with GNU
Octave's ``load``; ``matlab/npvae_load.m`` reads it into a struct with NumPy's
dimension order. The layout is documented in ``docs/hdf5_schema.md``.

Leaves and how they are stored (``MATLAB_class`` attribute in brackets):

- float64/float32/int*/uint* arrays -> dataset of that dtype (double, single, int32...)
- bool arrays -> uint8 dataset (logical)
- Python int/float/bool and 0-d arrays -> (1, 1) dataset; read back as Python scalars
- 1-D arrays ``(n,)`` -> ``(1, n)`` dataset, which MATLAB sees as an n-by-1 column
- empty arrays -> MATLAB's convention: a uint64 dataset of the MATLAB dims plus
  ``MATLAB_empty = 1``
- str -> UTF-16 code units, uint16 ``(n, 1)`` (char, ``MATLAB_int_decode = 2``)
- list of str -> one char dataset of the items joined by newlines, ``npvae_type = "strlist"``

Every numeric dataset carries HDF5's fletcher32 checksum, which the HDF5 library checks
on every read (h5py, MATLAB, Octave): a changed byte is refused as a FileFormatError
naming the tensor. Files written without it (npvae 0.1.0) read as before, unchecked.

Arrays are written in C order unchanged, so MATLAB and Octave see the dims
reversed: NumPy ``(N, 28, 28)`` is MATLAB ``28x28xN``. ``npvae_load`` permutes
them back. Padded or empty shapes carry the NumPy shape in ``npvae_shape``.

Keys that are not MATLAB field names (``"encoder.0.W"``, ``"0"``) are stored
under :func:`matlab_name` (``encoder_0_W``, ``x0``) with the original key in the
``npvae_name`` attribute, which :func:`read_tree` restores.
"""
from __future__ import annotations

import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np

from .atomic import atomic_path
from ..errors import FileFormatError

SCHEMA_VERSION = 1
USERBLOCK_SIZE = 512
MAX_CHUNK_BYTES = 1 << 30       # HDF5 chunks must stay below 4 GiB; a larger dataset gets several
KNOWN_KINDS = ("model", "mnist_results", "music_results", "loss_study")
RESERVED = ("npvae_kind", "npvae_schema_version", "npvae_manifest")

_CLASS_OF_DTYPE = {
    "float64": "double", "float32": "single", "bool": "logical",
    "int8": "int8", "int16": "int16", "int32": "int32", "int64": "int64",
    "uint8": "uint8", "uint16": "uint16", "uint32": "uint32", "uint64": "uint64",
}
_DTYPE_OF_CLASS = {cls: np.dtype(dt) for dt, cls in _CLASS_OF_DTYPE.items()}
_FIELD = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,62}\Z")
_KIND = re.compile(r"[a-z][a-z0-9_]*\Z")


# -- names ---------------------------------------------------------------------------------
def matlab_name(key: str) -> str:
    """The MATLAB field name a tree key is stored under.

    Valid names (a letter, then letters, digits, ``_``; at most 63) are kept; otherwise
    every other character becomes ``_`` and a leading non-letter gets an ``x`` prefix:
    ``"encoder.0.W" -> "encoder_0_W"``, ``"0" -> "x0"``, ``"_tmp" -> "x_tmp"``.
    """
    if _FIELD.match(key):
        return key
    name = re.sub(r"[^A-Za-z0-9_]", "_", key)
    if not name[:1].isalpha():
        name = "x" + name
    return name[:63]


# -- writing -------------------------------------------------------------------------------
def _mat_header() -> bytes:
    """The first 128 bytes of the user block: the MAT-file text, subsystem offset, version, 'IM'."""
    created = time.strftime("%a %b %d %H:%M:%S %Y")
    text = f"MATLAB 7.3 MAT-file, Platform: npvae (Python/h5py), Created on: {created} HDF5 schema 1.00 ."
    return text.encode("ascii").ljust(116, b" ") + bytes(8) + b"\x00\x02" + b"IM"


def _char_codes(text: str) -> np.ndarray:
    """MATLAB char data: UTF-16 code units."""
    return np.frombuffer(text.encode("utf-16-le"), dtype="<u2")


def _set_class(obj, cls: str) -> None:
    obj.attrs["MATLAB_class"] = np.bytes_(cls)


def _write_empty(group, name: str, mat_dims, cls: str):
    """MATLAB's empty-array convention: the data is the MATLAB dims, flagged MATLAB_empty."""
    ds = group.create_dataset(name, data=np.asarray(mat_dims, dtype=np.uint64))
    _set_class(ds, cls)
    ds.attrs["MATLAB_empty"] = np.uint8(1)
    return ds


def _write_text(group, name: str, text: str):
    """One str as a MATLAB char row vector: uint16 dataset of shape (n, 1)."""
    codes = _char_codes(text)
    if codes.size == 0:
        ds = _write_empty(group, name, (0, 0), "char")
    else:
        ds = group.create_dataset(name, data=codes.reshape(-1, 1))
        _set_class(ds, "char")
    ds.attrs["MATLAB_int_decode"] = np.int32(2)
    return ds, codes.size


def _write_strlist(group, name: str, items, where: str):
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"{where}: a list may hold only str, got {type(item).__name__}; "
                            "store numbers as a NumPy array")
        if "\n" in item:
            raise ValueError(f"{where}: list items may not contain a newline (they are joined by newlines)")
    ds, _ = _write_text(group, name, "\n".join(items))
    ds.attrs["npvae_type"] = np.bytes_("strlist")
    ds.attrs["npvae_len"] = np.int64(len(items))
    return ds


def _as_array(value, where: str) -> np.ndarray:
    if isinstance(value, bool):
        return np.asarray(value, dtype=bool)
    if isinstance(value, int):
        if not -2**63 <= value < 2**63:
            raise ValueError(f"{where}: integer {value} does not fit in int64")
        return np.asarray(value, dtype=np.int64)
    if isinstance(value, float):
        return np.asarray(value, dtype=np.float64)
    if isinstance(value, (np.ndarray, np.generic)):
        return np.asarray(value)
    raise TypeError(f"{where}: cannot store a {type(value).__name__}; use a dict, str, list of str, "
                    "Python number or NumPy array")


def _write_array(group, name: str, arr: np.ndarray, where: str):
    """Returns (dataset, MATLAB class)."""
    cls = _CLASS_OF_DTYPE.get(arr.dtype.name)
    if cls is None:
        raise TypeError(f"{where}: dtype {arr.dtype} has no MATLAB class here; "
                        f"convert to one of {sorted(_CLASS_OF_DTYPE)}")
    shape = arr.shape
    h5shape = shape if arr.ndim >= 2 else (1,) * (2 - arr.ndim) + shape
    if arr.size == 0:
        ds = _write_empty(group, name, h5shape[::-1], cls)
    else:
        data = np.ascontiguousarray(arr).reshape(h5shape)
        # fletcher32: HDF5's per-dataset checksum, verified on every read (MATLAB and Octave too);
        # it needs chunks: one for the whole dataset (read whole anyway; no padded edge chunks)
        chunks = h5shape if data.nbytes < MAX_CHUNK_BYTES else True
        ds = group.create_dataset(name, data=data.view(np.uint8) if cls == "logical" else data, chunks=chunks,
                                  fletcher32=True)
        _set_class(ds, cls)
    if h5shape != shape or arr.size == 0:
        ds.attrs["npvae_shape"] = np.asarray(shape, dtype=np.int64)
    return ds, cls


def _write_group(group, tree: dict, manifest: list[str], where: str) -> None:
    seen: dict[str, str] = {}
    for key, value in tree.items():
        if not isinstance(key, str):
            raise TypeError(f"{where}: keys must be str, got {key!r}")
        name = matlab_name(key)
        if name in seen:
            raise ValueError(f"{where}: keys {seen[name]!r} and {key!r} both map to MATLAB name {name!r}; rename one")
        if group.name == "/" and name in RESERVED:
            raise ValueError(f"top-level key {key!r} is reserved for npvae's own bookkeeping")
        seen[name] = key
        path = f"{where.rstrip('/')}/{key}"
        h5path = f"{group.name.rstrip('/')}/{name}"
        if isinstance(value, dict):
            obj = group.create_group(name, track_order=True)
            _set_class(obj, "struct")
            manifest.append(f"{h5path} struct 0")
            _write_group(obj, value, manifest, path)
        elif isinstance(value, str):
            obj, n = _write_text(group, name, value)
            manifest.append(f"{h5path} char 1 {n}")
        elif isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.dtype.kind == "U"
                                                  and value.ndim == 1):
            items = [str(v) for v in value] if isinstance(value, np.ndarray) else list(value)
            obj = _write_strlist(group, name, items, path)
            manifest.append(f"{h5path} strlist 1 {len(items)}")
        elif isinstance(value, np.ndarray) and value.dtype.kind == "U" and value.ndim == 0:
            obj, n = _write_text(group, name, str(value))
            manifest.append(f"{h5path} char 1 {n}")
        else:
            obj, cls = _write_array(group, name, _as_array(value, path), path)
            shape = np.shape(value)
            manifest.append(" ".join([h5path, cls, str(len(shape)), *map(str, shape)]))
        if name != key:
            obj.attrs["npvae_name"] = np.bytes_(key.encode("utf-8"))


def write_tree(path: str | os.PathLike, tree: dict, kind: str) -> Path:
    """Write ``tree`` to ``path`` as an HDF5 / MATLAB v7.3 file of the given ``kind``, atomically.

    ``kind`` names what the file holds (``"model"``, ``"mnist_results"``, ``"music_results"``).
    The file is written beside ``path`` and renamed over it, so a crash never leaves half a file.
    Returns ``path``.
    """
    if not isinstance(tree, dict):
        raise TypeError(f"tree must be a dict, got {type(tree).__name__}")
    if not isinstance(kind, str) or not _KIND.match(kind):
        raise ValueError(f"kind must be a lower-case identifier such as 'model', got {kind!r}")
    path = Path(path)
    with atomic_path(path, path.suffix) as tmp:
        manifest: list[str] = []
        with h5py.File(tmp, "w", userblock_size=USERBLOCK_SIZE, track_order=True) as f:
            f.attrs["npvae_kind"] = np.bytes_(kind)
            f.attrs["npvae_schema_version"] = np.int32(SCHEMA_VERSION)
            _write_group(f, tree, manifest, "/")
            # Octave's load sees datasets but no attributes: the same facts as datasets.
            _write_text(f, "npvae_kind", kind)
            ds = f.create_dataset("npvae_schema_version", data=np.full((1, 1), SCHEMA_VERSION, np.int32))
            _set_class(ds, "int32")
            _write_text(f, "npvae_manifest", "\n".join(manifest))
        with open(tmp, "r+b") as fh:
            fh.write(_mat_header())
    return path


# -- reading -------------------------------------------------------------------------------
def _attr_str(value, default: str = "") -> str:
    if value is None:
        return default
    if isinstance(value, np.ndarray):
        value = value.item() if value.size == 1 else value.tobytes()
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class Leaf(NamedTuple):
    """What a dataset holds, known from its metadata alone: the NumPy ``shape`` and
    ``dtype`` :func:`read_tree` returns it as (``None`` for text), and the bytes that
    reading it takes."""
    shape: tuple | None
    dtype: np.dtype | None
    nbytes: int


MAX_EMPTY_DIMS = 32     # a MATLAB empty's dims dataset longer than this is damage


def _empty_dims(ds) -> tuple[int, ...]:
    """The NumPy shape of a dataset stored with MATLAB's empty convention."""
    if ds.size > MAX_EMPTY_DIMS:
        raise ValueError(f"{ds.name} is flagged MATLAB_empty but holds {ds.size} dims")
    return tuple(int(d) for d in np.ravel(ds[()])[::-1])


_ATTRS = ("MATLAB_class", "MATLAB_empty", "MATLAB_int_decode", "npvae_shape", "npvae_type", "npvae_len",
          "npvae_name")


def _attrs(obj) -> dict:
    """The attributes this module reads, of those ``obj`` has (listing names is cheap in h5py,
    looking up a missing one is not)."""
    a = obj.attrs
    return {k: a[k] for k in a if k in _ATTRS}


def _leaf(ds, attrs) -> Leaf:
    cls = _attr_str(attrs.get("MATLAB_class"))
    nbytes = int(ds.size) * ds.dtype.itemsize
    if cls == "char":
        return Leaf(None, None, nbytes)
    empty = bool(np.any(attrs.get("MATLAB_empty", 0)))
    # what _read_dataset returns: the stored dtype (bool for logical), the class's for an empty
    dtype = _DTYPE_OF_CLASS[cls] if cls == "logical" or (empty and cls in _DTYPE_OF_CLASS) else ds.dtype
    shape = _empty_dims(ds) if empty else ds.shape
    if "npvae_shape" in attrs:
        named = tuple(int(d) for d in np.ravel(attrs["npvae_shape"]))
        # the attribute may not vouch for more or fewer values than the dataset holds: a reader
        # checks the stored shape then (a (1, n) bias re-declared as (2**31, 1) is refused as that)
        if empty or int(np.prod(named, dtype=object)) == int(ds.size):
            shape = named
    if empty:
        nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    return Leaf(tuple(shape), np.dtype(dtype), nbytes)


def _read_dataset(ds, attrs):
    cls = _attr_str(attrs.get("MATLAB_class"))
    empty = bool(np.any(attrs.get("MATLAB_empty", 0)))
    if cls == "char":
        text = "" if empty else np.asarray(ds[()], dtype="<u2").ravel().tobytes().decode("utf-16-le")
        if _attr_str(attrs.get("npvae_type")) == "strlist":
            return text.split("\n") if int(attrs["npvae_len"]) else []
        return text
    if cls not in _DTYPE_OF_CLASS:  # a dataset not written by npvae: hand it over as h5py reads it
        value = ds[()]
        return value.decode("utf-8") if isinstance(value, bytes) else value
    dtype = _DTYPE_OF_CLASS[cls]
    if empty:
        dims = _empty_dims(ds)
        if 0 not in dims:
            raise ValueError(f"{ds.name} is flagged MATLAB_empty but its dims {dims} are not empty")
        arr = np.zeros(dims, dtype=dtype)
    else:
        arr = ds[()]
        arr = arr.astype(bool) if cls == "logical" else arr
    if "npvae_shape" in attrs:
        arr = arr.reshape(tuple(int(d) for d in attrs["npvae_shape"]))
    return arr.item() if arr.ndim == 0 else arr


def _read_node(obj, attrs_of=_attrs):
    if isinstance(obj, h5py.Dataset):
        try:
            return _read_dataset(obj, attrs_of(obj))
        except OSError as exc:      # HDF5 reports a failed checksum (or unreadable data) as OSError
            key = _attr_str(attrs_of(obj).get("npvae_name"), obj.name.rsplit("/", 1)[-1])
            name = f"{obj.parent.name.rstrip('/')}/{key}"
            why = ("fails its checksum: its bytes changed since it was written" if obj.fletcher32
                   else f"cannot be read ({exc})")
            raise FileFormatError(f"{obj.file.filename}: tensor {name.lstrip('/')} {why}; the file is damaged: "
                                  "re-create it with the npvae script that wrote it (or use another copy)") from exc
    out = {}
    for name, child in obj.items():
        if obj.name == "/" and name in RESERVED:
            continue
        out[_attr_str(attrs_of(child).get("npvae_name"), name)] = _read_node(child, attrs_of)
    return out


def _describe_node(obj, attrs_of=_attrs):
    if isinstance(obj, h5py.Dataset):
        return _leaf(obj, attrs_of(obj))
    return {_attr_str(attrs_of(child).get("npvae_name"), name): _describe_node(child, attrs_of)
            for name, child in obj.items() if not (obj.name == "/" and name in RESERVED)}


def _largest(node, where: str = "") -> tuple[int, int, str]:
    """(total bytes, bytes of the largest dataset, its path) of a described node."""
    if isinstance(node, Leaf):
        return node.nbytes, node.nbytes, where
    total, big, name = 0, -1, where
    for key, child in node.items():
        t, b, n = _largest(child, f"{where}/{key}")
        total += t
        if b > big:
            big, name = b, n
    return total, max(big, 0), name


def _kinds_text(kinds: tuple[str, ...]) -> str:
    return " or ".join(kinds)


def _check_header(f, path: Path, expected_kind) -> tuple[str, int]:
    if "npvae_kind" not in f.attrs or "npvae_schema_version" not in f.attrs:
        raise FileFormatError(f"{path} is an HDF5 file but not an npvae file (no npvae_kind / "
                              "npvae_schema_version attributes); pass a file written by npvae")
    kind = _attr_str(f.attrs["npvae_kind"])
    try:
        version = int(np.ravel(f.attrs["npvae_schema_version"])[0])
    except (TypeError, ValueError, IndexError):
        raise FileFormatError(f"{path}: unreadable npvae_schema_version "
                              f"{f.attrs['npvae_schema_version']!r}") from None
    if version > SCHEMA_VERSION:
        raise FileFormatError(f"{path} uses npvae schema version {version}, but this npvae reads up to "
                              f"version {SCHEMA_VERSION}: update npvae to read it")
    if version < 1:
        raise FileFormatError(f"{path} has unknown npvae schema version {version} (expected 1..{SCHEMA_VERSION})")
    if expected_kind is not None:
        kinds = (expected_kind,) if isinstance(expected_kind, str) else tuple(expected_kind)
        if kind not in kinds:
            raise FileFormatError(f"expected a {_kinds_text(kinds)} file, got {kind}: {path} holds "
                                  f"{kind}; pass the {_kinds_text(kinds)} file instead")
    return kind, version


def _open(path) -> tuple[Path, h5py.File]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; check the path or re-run the script that writes it")
    try:
        return path, h5py.File(path, "r")
    except OSError as exc:
        raise FileFormatError(f"{path} is not a readable HDF5 file (truncated, corrupt, or another format: "
                              f"{exc}); re-create it with the npvae script that wrote it") from exc


def file_kind(path: str | os.PathLike) -> tuple[str, int]:
    """``(kind, schema_version)`` of an npvae file, without reading its data."""
    path, f = _open(path)
    with f, _corrupt_as_format_error(path):
        return _check_header(f, path, None)


def read_tree(path: str | os.PathLike, expected_kind: str | tuple[str, ...] | None = None,
              subtree: str | None = None, max_bytes: int | None = None):
    """Read a file written by :func:`write_tree` back into the same nested dict.

    Arrays come back as NumPy arrays of the written dtype and shape, 0-d values as Python
    scalars, strings as ``str``, lists of strings as ``list[str]``; keys as written.
    ``expected_kind`` (a kind or tuple of kinds) rejects files of another kind.
    ``subtree`` (HDF5 path of stored names, e.g. ``"model/params"``) reads only that part.
    ``max_bytes`` refuses, before reading anything, a part whose datasets declare more
    bytes than that (a small damaged file can declare a huge compressed dataset).

    Raises ``FileNotFoundError`` if ``path`` is missing and ``FileFormatError`` if it is not
    a readable npvae file of the expected kind and a schema version this code knows.
    """
    with TreeReader(path, expected_kind) as tree:
        return tree.read(subtree, max_bytes)


class TreeReader:
    """An npvae file held open, whose parts are described (:meth:`describe`, from the
    metadata alone) or read (:meth:`read`) one at a time: a reader checks what a part
    declares before it reads it. A context manager; the header and kind are checked on
    opening, and damage anywhere raises :class:`FileFormatError` naming the file."""

    def __init__(self, path: str | os.PathLike, expected_kind: str | tuple[str, ...] | None = None):
        self.path, self._file = _open(path)
        self._attrs: dict[str, dict] = {}     # attributes by object name, read once
        try:
            with _corrupt_as_format_error(self.path):
                self.kind, self.version = _check_header(self._file, self.path, expected_kind)
        except BaseException:
            self._file.close()
            raise

    def __enter__(self) -> "TreeReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def __contains__(self, subtree: str) -> bool:
        with _corrupt_as_format_error(self.path):
            return subtree.strip("/") in self._file

    def _attrs_of(self, obj) -> dict:
        attrs = self._attrs.get(obj.name)
        if attrs is None:
            attrs = self._attrs[obj.name] = _attrs(obj)
        return attrs

    def _node(self, subtree):
        where = (subtree or "").strip("/") or "/"
        if where not in self._file:
            top = [name for name in self._file if name not in RESERVED]
            raise FileFormatError(f"{self.path} has no '{subtree}'; its top level holds {top}")
        return self._file[where]

    def describe(self, subtree: str | None = None):
        """The part's tree with every dataset as a :class:`Leaf` (shape, dtype, bytes),
        read from the metadata only."""
        with _corrupt_as_format_error(self.path):
            return _describe_node(self._node(subtree), self._attrs_of)

    def read(self, subtree: str | None = None, max_bytes: int | None = None):
        """The part as :func:`read_tree` returns it; ``max_bytes`` as there."""
        with _corrupt_as_format_error(self.path):
            node = self._node(subtree)
            if max_bytes is not None:
                total, big, name = _largest(_describe_node(node, self._attrs_of), "/" + (subtree or "").strip("/"))
                if total > max_bytes:
                    raise FileFormatError(
                        f"{self.path}: '{(subtree or '/').strip('/') or '/'}' declares {total:,} bytes of data "
                        f"(the largest, {name.replace('//', '/')}, {big:,}), more than the {max_bytes:,} "
                        "such a part can hold; the file is damaged: re-create it with the npvae script "
                        "that wrote it")
            return _read_node(node, self._attrs_of)


@contextmanager
def _corrupt_as_format_error(path: Path):
    """Damaged HDF5 metadata surfaces from h5py as many exception types; report them as one."""
    try:
        yield
    except FileFormatError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError, TypeError, AttributeError, IndexError,
            MemoryError) as exc:
        raise FileFormatError(f"{path} is corrupt ({type(exc).__name__}: {exc}); "
                              "re-create it with the npvae script that wrote it") from exc


__all__ = ["write_tree", "read_tree", "TreeReader", "Leaf", "file_kind", "matlab_name", "SCHEMA_VERSION", "KNOWN_KINDS"]

"""Training checkpoints, written atomically (:mod:`npvae.files.atomic`).

A checkpoint is one ``.npz`` holding named arrays plus a JSON ``meta`` record
(epoch, config, history, RNG state...). It is written to a temporary file in the
same directory, flushed to disk, then renamed over the old one.

Reading checks before it trusts: every array's declared shape and dtype (its ``.npy``
header) against the model's spec (:mod:`npvae.files.modelcheck`) before any data is read,
then each array against the CRC-32 of its bytes that the writer stored in the record
(``meta["crc32"]``; checkpoints written before it carry none and are read unchecked,
as far as the zip container's own CRC goes). A failure names the array.
"""
from __future__ import annotations

import json
import math
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import FileFormatError
from ..files import modelcheck
from ..files.atomic import atomic_path

CHECKPOINT_FILE = "checkpoint.npz"   # its name in a run directory
MODEL_PREFIX = "model/"      # checkpoint arrays of the model's parameters: "model/<parameter path>"
OPT_PREFIX = "opt/"          # the optimiser's: "opt/<slot>/<parameter path>", each shaped as its parameter
CHECKSUM_KEY = "crc32"       # meta[CHECKSUM_KEY]: {array name: CRC-32 of its bytes}
MAX_META_BYTES = 64 << 20    # the JSON record: kilobytes (a long run's history, a normaliser)


def _jsonable(value):
    """JSON for what ``json`` cannot write itself: arrays as (nested) lists, NumPy scalars."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"checkpoint meta holds a {type(value).__name__}, which JSON cannot store")


def array_crc(a: np.ndarray) -> int:
    """CRC-32 of an array's bytes in C order."""
    return zlib.crc32(np.ascontiguousarray(a).reshape(-1).view(np.uint8))


def save_checkpoint(path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write ``arrays`` and the JSON-able ``meta`` (plus each array's CRC-32 under
    :data:`CHECKSUM_KEY`) to ``path`` (.npz) atomically."""
    payload = {f"a/{k}": np.asarray(v) for k, v in arrays.items()}
    meta = {**meta, CHECKSUM_KEY: {k[2:]: array_crc(v) for k, v in payload.items()}}
    payload["meta"] = np.array(json.dumps(meta, default=_jsonable))
    with atomic_path(path, ".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **payload)


def _header(zf: zipfile.ZipFile, member: str) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype an ``.npy`` member declares, from its header alone."""
    with zf.open(member) as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
    return tuple(int(d) for d in shape), np.dtype(dtype)


def _read(zf: zipfile.ZipFile, member: str) -> np.ndarray:
    with zf.open(member) as f:
        return np.lib.format.read_array(f, allow_pickle=False)


_DAMAGED = "the file is damaged: delete it to start afresh, or resume from another copy"


def check_arrays(path, meta: dict, declared: dict[str, tuple[tuple[int, ...], np.dtype]]) -> None:
    """Compare the arrays a checkpoint declares with what its record says they are, before
    any is read: the model's parameters with the shapes of ``meta["model_spec"]``, each
    optimiser array with its parameter's shape; without a spec, the count is bounded."""
    for name, (shape, dtype) in declared.items():
        if dtype.kind not in "fiub" or dtype.hasobject:
            raise FileFormatError(f"checkpoint {path}: array {name} holds dtype {dtype}, not numbers; {_DAMAGED}")
    model = {k[len(MODEL_PREFIX):]: v for k, v in declared.items() if k.startswith(MODEL_PREFIX)}
    spec = meta.get("model_spec")
    expected = None
    if isinstance(spec, dict):
        modelcheck.check_spec_depth(path, spec)
        expected = modelcheck.expected_shapes(path, spec)
        modelcheck.check_declared(path, expected, model)
    shapes = expected if expected is not None else {k: s for k, (s, _) in model.items()}
    others = 0
    for name, (shape, _) in declared.items():
        if name.startswith(OPT_PREFIX) and name.count("/") >= 2:
            param = name.split("/", 2)[2]
            if param not in shapes or tuple(shapes[param]) != shape:
                want = f"the shape {tuple(shapes[param])} of its parameter" if param in shapes else "no parameter"
                raise FileFormatError(f"checkpoint {path}: optimiser array {name} declares shape {shape}, but the "
                                      f"model has {want}; {_DAMAGED}")
        elif not name.startswith(MODEL_PREFIX) or expected is None:
            others += math.prod(shape)
    modelcheck.check_count(path, others, "it declares")


def load_checkpoint(path) -> tuple[dict[str, np.ndarray], dict]:
    """Read a checkpoint written by :func:`save_checkpoint`: ``(arrays, meta)``, every array
    checked before it is read (:func:`check_arrays`) and against its CRC-32 after."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; start without --resume or point at a run directory")
    member = "meta.npy"
    try:
        with zipfile.ZipFile(path) as zf:
            members = {n[:-4]: n for n in zf.namelist() if n.endswith(".npy")}
            if "meta" not in members:
                raise KeyError("it holds no meta record")
            shape, dtype = _header(zf, member)
            if shape != () or dtype.kind != "U" or dtype.itemsize > MAX_META_BYTES:
                raise ValueError(f"its meta record declares {dtype} {shape}, not a JSON text of at most "
                                 f"{MAX_META_BYTES:,} bytes")
            meta = json.loads(str(_read(zf, member)))
            if not isinstance(meta, dict):
                raise ValueError("its meta record is not a JSON object")
            declared = {}
            for key, member in members.items():
                if key.startswith("a/"):
                    declared[key[2:]] = _header(zf, member)
            check_arrays(path, meta, declared)
            sums = meta.pop(CHECKSUM_KEY, None)
            arrays = {}
            for key in declared:
                member = members["a/" + key]
                arrays[key] = a = _read(zf, member)
                if isinstance(sums, dict) and key in sums and array_crc(a) != sums[key]:
                    raise FileFormatError(f"checkpoint {path}: array {key} fails its checksum (its bytes changed "
                                          f"since it was written); {_DAMAGED}")
    except FileFormatError:
        raise
    except RecursionError:
        raise FileFormatError(f"checkpoint {path}: its metadata nests deeper than Python can parse; "
                              f"{_DAMAGED}") from None
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError, MemoryError) as exc:
        where = f" (array {member[2:-4]})" if member.startswith("a/") else ""
        raise FileFormatError(f"checkpoint {path} is corrupt or not an npvae checkpoint{where} ({exc}); "
                              "delete it to start afresh, or resume from another copy") from exc
    return arrays, meta


def model_arrays(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A model's ``state_dict`` as checkpoint arrays (keys under :data:`MODEL_PREFIX`)."""
    return {MODEL_PREFIX + k: v for k, v in state.items()}


def model_state(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model's ``state_dict`` back from a checkpoint's arrays."""
    return {k[len(MODEL_PREFIX):]: v for k, v in arrays.items() if k.startswith(MODEL_PREFIX)}


def rng_state(rng: np.random.Generator) -> dict:
    """JSON-able state of a Generator (for checkpoints)."""
    return rng.bit_generator.state


def restore_rng(state: dict) -> np.random.Generator:
    """A Generator continuing exactly from ``state``."""
    bitgen = getattr(np.random, state["bit_generator"])()
    bitgen.state = state
    return np.random.Generator(bitgen)

"""Atomic files: nothing half-written ever stands in place of a good file.

A checkpoint is one ``.npz`` holding named arrays plus a JSON ``meta`` record
(epoch, config, history, RNG state...). It is written to a temporary file in the
same directory, flushed to disk, then renamed over the old one.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .errors import FileFormatError


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path beside ``path``; on success rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_checkpoint(path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write ``arrays`` and the JSON-able ``meta`` to ``path`` (.npz) atomically."""
    payload = {f"a/{k}": np.asarray(v) for k, v in arrays.items()}
    payload["meta"] = np.array(json.dumps(meta))
    with atomic_path(path, ".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **payload)


def load_checkpoint(path) -> tuple[dict[str, np.ndarray], dict]:
    """Read a checkpoint written by :func:`save_checkpoint`: ``(arrays, meta)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; start without --resume or point at a run directory")
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            arrays = {k[2:]: data[k] for k in data.files if k.startswith("a/")}
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as exc:
        raise FileFormatError(f"checkpoint {path} is corrupt or not an npvae checkpoint ({exc}); "
                              "delete it to start afresh, or resume from another copy") from exc
    return arrays, meta


def rng_state(rng: np.random.Generator) -> dict:
    """JSON-able state of a Generator (for checkpoints)."""
    return rng.bit_generator.state


def restore_rng(state: dict) -> np.random.Generator:
    """A Generator continuing exactly from ``state``."""
    bitgen = getattr(np.random, state["bit_generator"])()
    bitgen.state = state
    return np.random.Generator(bitgen)

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

CHECKPOINT_FILE = "checkpoint.npz"   # its name in a run directory
MODEL_PREFIX = "model/"      # checkpoint arrays of the model's parameters: "model/<parameter path>"


def _jsonable(value):
    """JSON for what ``json`` cannot write itself: arrays as (nested) lists, NumPy scalars."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"checkpoint meta holds a {type(value).__name__}, which JSON cannot store")


TMP_TAG = ".npvae-tmp"


def _umask() -> int:
    """The process's umask (read without changing it where /proc allows)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove temporary files that a killed npvae process left in ``folder``.

    Temporaries are named ``.<name>.<pid>.<random><TMP_TAG>...``; one whose process is
    gone (kill -9, power cut) is removed. Returns the paths removed.
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if not name.startswith(".") or TMP_TAG not in name:
            continue
        parts = name[:name.index(TMP_TAG)].rsplit(".", 2)
        try:
            pid = int(parts[-2])
        except (ValueError, IndexError):
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass
    return removed


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    The temporary carries this process's id in its name, so one left by a killed
    process is removed by the next write into the same folder
    (:func:`sweep_stale_temporaries`). The file gets the permissions of a normally
    created file (0666 minus the umask), not mkstemp's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temporaries(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=TMP_TAG + suffix,
                               dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (JSON records, tables)."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
    return Path(path)


def save_checkpoint(path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write ``arrays`` and the JSON-able ``meta`` to ``path`` (.npz) atomically."""
    payload = {f"a/{k}": np.asarray(v) for k, v in arrays.items()}
    payload["meta"] = np.array(json.dumps(meta, default=_jsonable))
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

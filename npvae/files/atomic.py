"""Atomic files: nothing half-written ever stands in place of a good file.

A file is written to a temporary beside it, flushed to disk, then renamed over the old
one; a temporary left by a killed process is swept by the next write into its folder.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

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

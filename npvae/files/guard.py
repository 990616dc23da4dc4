"""Checks made before any work starts, so that nothing is lost and nothing fails late.

Every writer of user-visible outputs (training runs, separated songs, evaluation
files) asks here first: is the folder writable, is there room, would a file be
replaced? A refusal is an :class:`~npvae.errors.OutputError` naming the fix.
"""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
import time
from pathlib import Path

from .atomic import TMP_TAG
from ..errors import OutputError


def _existing_ancestor(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_writable_dir(folder: str | os.PathLike, need_bytes: int = 0) -> Path:
    """Make sure ``folder`` is (or can be created as) a writable folder with ``need_bytes`` free.

    Nothing is created. Raises OutputError when ``folder`` or one of its parents is a
    file, when it cannot be written, or when the file system has less free space than
    ``need_bytes`` (when the free space can be known).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder} is a file, not a folder; pass a folder name (it is created if needed)")
    base = _existing_ancestor(folder)
    if not base.is_dir():
        raise OutputError(f"cannot create {folder}: {base} is a file; choose another folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write into {base} (permission denied); choose a folder you can write to")
    if need_bytes > 0:
        try:
            free = shutil.disk_usage(base).free
        except OSError:
            free = None
        if free is not None and free < need_bytes:
            raise OutputError(f"not enough free space in {base}: {need_bytes / 1e6:.1f} MB needed, "
                              f"{free / 1e6:.1f} MB free; free some space or choose another folder")
    return folder


# Room a training run needs besides the checkpoint's share: figures, sound snippets, logs.
RUN_MARGIN_BYTES = 16 * 2 ** 20


def run_space_needed(parameter_bytes: int) -> int:
    """Bytes a training run of a model with ``parameter_bytes`` of parameters may hold on
    disk at its peak: the checkpoint (weights and Adam's two moments, 3x) twice while an
    atomic write replaces it, model.h5 and results.h5 (about 1x each), and
    :data:`RUN_MARGIN_BYTES` for figures and snippets."""
    return 8 * int(parameter_bytes) + RUN_MARGIN_BYTES


def _visible_entries(folder: Path) -> list[str]:
    """What a folder holds, leaving out temporaries of killed runs."""
    return sorted(e for e in os.listdir(folder) if TMP_TAG not in e and e != LOCK_FILE)


def prepare_run_dir(out: str | os.PathLike, resume: bool = False, overwrite: bool = False) -> Path:
    """Check a training run's output folder before anything is loaded or trained.

    A new run (no ``resume``) refuses a folder that already holds files, unless
    ``overwrite`` (then the old files are replaced as the run writes its own).
    ``resume`` needs nothing here; the trainer checks the checkpoint itself.
    """
    out = Path(out)
    check_writable_dir(out)
    if out.is_dir() and not resume:
        entries = _visible_entries(out)
        if entries and not overwrite:
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise OutputError(f"run folder {out} is not empty ({shown}); pass --resume to continue "
                              "that run, --overwrite to replace it, or another --out")
        if entries:
            clear_run_artefacts(out)
    return out


# What a training run writes; --overwrite removes these (and nothing else) first, so
# that no file of the old run is left beside the new run's files.
RUN_ARTEFACTS = ("checkpoint.npz", "config.json", "history.json", "metrics.json", "model.h5", "results.h5",
                 "provenance.json",                       # the command that trained it (npvae ship reads it)
                 "grid.png", "loss_curves.png", "figures", "snippets",
                 "latent_groups.png", "example.png",      # the blind runs' pictures
                 "index.html", "page")                    # the run's page and its sounds
RUN_EVENT_FILES = "events.out.tfevents.*"                 # TensorBoard's (--tensorboard)


def clear_run_artefacts(out: Path) -> list[Path]:
    """Remove what a training run writes from ``out`` (nothing else); returns what went."""
    events = sorted(p.name for p in Path(out).glob(RUN_EVENT_FILES) if p.is_file() and not p.is_symlink())
    return remove_named(out, RUN_ARTEFACTS + tuple(events))


def remove_named(folder: str | os.PathLike, names) -> list[Path]:
    """Remove the files and folders ``names`` of ``folder`` that exist (a link itself,
    never what it points to); returns what went."""
    removed = []
    for name in names:
        p = Path(folder) / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
        else:
            continue
        removed.append(p)
    return removed


def unique_run_dir(prefix: str | os.PathLike) -> Path:
    """Create and return a new folder ``<prefix>-<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``...
    appended when that exists), so two runs started together never share one."""
    base = Path(f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}")
    check_writable_dir(base.parent)
    cand, k = base, 2
    while True:
        try:
            cand.mkdir(parents=True, exist_ok=False)
            return cand
        except FileExistsError:
            cand, k = Path(f"{base}-{k}"), k + 1


# ----------------------------------------------------------------------------- run lock

LOCK_FILE = ".npvae-lock"


class RunLock:
    """An exclusive lock on a run folder while a run uses it (``with RunLock(folder): ...``).

    The lock is an ``flock`` on ``<folder>/.npvae-lock``, which also records who holds
    it (process, host, command, start time). The operating system drops it when the
    holder ends, however it ends (kill -9 included), so a stale file never blocks a
    later run. A second run in the same folder, or a second process of an ``mpirun``
    that is not using MPI, is refused with an :class:`OutputError` naming the holder.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        import fcntl
        import json
        import socket
        import sys
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise OutputError(f"run folder {self.folder} is in use by another run ({self.holder()}); wait for "
                                  "it to end, stop it, or choose another --out") from None
            except OSError:                      # a file system without locks: carry on unlocked
                os.close(fd)
                return self
            try:                                 # the file may have been removed by its last holder meanwhile
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "command": " ".join([os.path.basename(sys.argv[0] or "python"), *sys.argv[1:]]),
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
        self._fd = fd
        return self

    def holder(self) -> str:
        """Who holds the lock, as recorded in its file."""
        import json
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            info = {}
        if not info:
            return "holder unknown"
        return (f"process {info.get('pid')} on {info.get('host')}, started {info.get('started')}: "
                f"{info.get('command')}")

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink()
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# ----------------------------------------------------------------------------- files a command writes

def file_key(path: str | os.PathLike):
    """What identifies a file however it is named (``../x``, a symbolic or a hard link):
    its device and inode; a path that does not exist (yet), its absolute form."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return Path(os.path.abspath(path))
    return st.st_dev, st.st_ino


class Inputs:
    """The files a command reads. :meth:`check` refuses an output that is one of them,
    even with --overwrite: writing it would destroy what the command reads (an evaluation
    written over the model it scores)."""

    def __init__(self, paths=()):
        self._keys = {file_key(p): Path(p) for p in paths}

    def check(self, output: str | os.PathLike, flag: str = "--out") -> Path:
        """``output``, or OutputError when it would replace an input (``flag`` named it)."""
        found = self._keys.get(file_key(output))
        if found is not None:
            given = f"{flag} " if flag else ""
            raise OutputError(f"{given}{output} would replace the input {found}; choose another "
                              f"{flag or 'output'}")
        return Path(output)


def check_output_file(path: str | os.PathLike, overwrite: bool = False, flag: str = "", inputs=()) -> Path:
    """Make sure ``path`` can be written as a file: not one of the command's ``inputs``
    (paths, or an :class:`Inputs`; refused even with ``overwrite``), not a folder, its
    folder writable (or creatable), and no file there already unless ``overwrite``.
    Nothing is created.

    Raises OutputError naming the path and the fix (``flag``: the option that named it,
    for the message).
    """
    path = Path(path)
    (inputs if isinstance(inputs, Inputs) else Inputs(inputs)).check(path, flag)
    given = f"{flag} " if flag else ""
    if path.is_dir():
        raise OutputError(f"{given}{path} is a folder; give a file name")
    if (path.exists() or path.is_symlink()) and not overwrite:
        other = f" or another {flag}" if flag else ""
        raise OutputError(f"{path} exists; pass --overwrite to replace it{other}")
    check_writable_dir(path.parent)
    return path


def check_existing_dir(folder: str | os.PathLike, flag: str = "") -> Path:
    """Make sure ``folder`` exists and is a writable folder (an option that must name one).
    A file is made there and removed: the one test that also holds for root and for file
    systems that take no files (``/proc``)."""
    folder = Path(folder)
    given = f"{flag} " if flag else ""
    if not folder.exists():
        raise OutputError(f"{given}{folder} does not exist; create it first or choose an existing folder")
    check_writable_dir(folder)
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".npvae-probe-"):
            pass
    except OSError as exc:
        raise OutputError(f"{given}cannot write into {folder} ({exc.strerror or exc}); "
                          "choose a folder you can write to") from None
    return folder


_WRITE_FAILURES = {   # errno: (what happened, the fix); {flag} is the option naming the output
    errno.ENOSPC: ("no space left on device", "free some space or choose another {flag}"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or choose another {flag}"),
    errno.EFBIG: ("file too large for the file system or the file size limit (ulimit -f)",
                  "raise the limit or choose another {flag}"),
    errno.EROFS: ("read-only file system", "choose another {flag}"),
    errno.EACCES: ("permission denied", "choose another {flag}"),
    errno.EPERM: ("operation not permitted", "choose another {flag}"),
    errno.EIO: ("input/output error (a failing or removed disk)", "check the disk or choose another {flag}"),
}


def write_failure(path: str | os.PathLike, error: int | BaseException, flag: str = "--out") -> OutputError:
    """The OutputError to raise when writing ``path`` failed with ``error`` (an errno or an
    exception): names the file, the cause (``no space left on device ... (ENOSPC)``) and the fix."""
    code = error if isinstance(error, int) else getattr(error, "errno", None)
    name = errno.errorcode.get(code) if code else None
    if code in _WRITE_FAILURES:
        what, fix = _WRITE_FAILURES[code]
    else:
        what = (os.strerror(code) if code else str(error)) or type(error).__name__
        fix = "check that folder or choose another {flag}"
    return OutputError(f"writing {path} failed: {what}{f' ({name})' if name else ''}; it was not written "
                       f"(nothing is left in its place): {fix.format(flag=flag)}")


def run_holder(folder: str | os.PathLike) -> str | None:
    """Who is running in run folder ``folder`` (the :class:`RunLock` holder, as recorded),
    or None when no run holds it. Nothing is created."""
    import fcntl
    path = Path(folder) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return RunLock(folder).holder()
    except OSError:
        return None
    finally:
        os.close(fd)
    return None

"""Where npvae looks for datasets.

The search order is the same for every dataset: an explicit ``data_dir``
(the scripts' ``--data-dir`` flag), the ``NPVAE_DATA`` environment variable,
then the user cache directory (``$XDG_CACHE_HOME/npvae`` or ``~/.cache/npvae``).
Each root holds one sub-folder per dataset (``mnist/``, ``fashion-mnist/``,
``MIR-1K/``, ``IRMAS-TrainingData/``...).

A relative ``NPVAE_DATA`` (``NPVAE_DATA=../shared/data``) is relative to the folder
the program started in, where the shell that set it was: a program that changes
folder later still finds the same data.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import DatasetError

ENV_VAR = "NPVAE_DATA"


def _start_dir() -> str | None:
    try:
        return os.getcwd()
    except OSError:         # started in a folder that has since been removed
        return None


START_DIR = _start_dir()    # the folder this process started in (npvae is imported early)


def cache_dir() -> Path:
    """The per-user cache root where downloads go, ``~/.cache/npvae`` by default."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "npvae"


def env_root() -> Path | None:
    """``$NPVAE_DATA`` as a path (a relative one taken from :data:`START_DIR`), or None
    when it is unset or empty."""
    env = os.environ.get(ENV_VAR)
    if not env:
        return None
    root = Path(env).expanduser()
    if not root.is_absolute() and START_DIR is not None:
        root = Path(START_DIR) / root
    return root


def data_roots(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Candidate data roots, most specific first (duplicates removed).

    An explicit ``data_dir`` is the only root searched: a typo must not fall back
    silently to ``$NPVAE_DATA`` or the cache. It must exist (DatasetError otherwise).
    """
    roots: list[Path] = []
    if data_dir:
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            what = "is a file, not a folder" if root.exists() else "does not exist"
            raise DatasetError(f"data folder {root} (--data-dir) {what}; check the spelling, or leave "
                               f"--data-dir out to use ${ENV_VAR} or {cache_dir()}")
        return [root]
    root = env_root()
    if root is not None:
        if not root.is_dir():
            env = os.environ.get(ENV_VAR)
            where = "" if str(root) == env else f" (taken from the folder npvae started in: {root})"
            raise DatasetError(f"{ENV_VAR}={env}{where} is not a folder; set it to the data root (the folder "
                               "holding mnist/, MIR-1K/...) or unset it to use the cache "
                               f"{cache_dir()}")
        roots.append(root)
    roots.append(cache_dir())
    seen, unique = set(), []
    for r in roots:
        key = str(r.resolve()) if r.exists() else str(r)
        if key not in seen:
            seen.add(key)
            unique.append(r)
    return unique


def find_dataset(subdir: str, data_dir: str | os.PathLike | None = None,
                 extra: list[Path] | None = None) -> Path | None:
    """First ``root/subdir`` that exists among :func:`data_roots` (then ``extra``), or None."""
    for root in data_roots(data_dir):
        cand = root / subdir
        if cand.is_dir():
            return cand
    for cand in extra or []:
        if Path(cand).is_dir():
            return Path(cand)
    return None

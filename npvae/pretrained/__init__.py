"""Trained models that ship with npvae (package data: ``npvae/pretrained/<name>.h5``).

Each file is an ordinary model file (kind ``model``, see ``docs/hdf5_schema.md``) with
one more group, ``/provenance``: the command, commit and seed that trained it, the
scores ``scripts/ship_model.py`` measured on its whole test set (``scores``) and on
the small slice the tests re-score (``slice_scores``, with ``slice``: how the slice is
drawn). ::

    npvae.list_models()                   # ['mnist-dense', 'mnist-unet', 'music-mir1k', ...]
    model = npvae.load_model("mnist-unet")
    npvae.pretrained.info("mnist-unet")   # the /provenance group as a dict

Only the standard library and :mod:`npvae.h5mat` are imported here, so that
:mod:`npvae.io` can resolve names without an import cycle.
"""
from __future__ import annotations

from pathlib import Path

DIR = Path(__file__).resolve().parent
SUFFIX = ".h5"
DEFAULT_MUSIC_MODEL = "music-mir1k"


def list_models() -> list[str]:
    """Names of the shipped models, sorted (``load_model`` takes any of them)."""
    return sorted(p.name[:-len(SUFFIX)] for p in DIR.glob("*" + SUFFIX))


def is_name(value) -> bool:
    """True if ``value`` is the name of a shipped model (not a path)."""
    return isinstance(value, str) and value in list_models()


def looks_like_name(value: str) -> bool:
    """True for a bare name such as ``"mnist-unet"`` (no folder, no file suffix)."""
    return bool(value) and all(c.isalnum() or c == "-" for c in value)


def path(name: str) -> Path:
    """The file of shipped model ``name``; a clear error lists the names that exist."""
    p = DIR / f"{name}{SUFFIX}"
    if not p.is_file():
        names = ", ".join(list_models()) or "none (this installation has no model files)"
        raise FileNotFoundError(f"no shipped model named {name!r}; shipped models: {names}. "
                                "Pass one of them, or the path of a run directory / model.h5")
    return p


def info(name: str) -> dict:
    """The ``/provenance`` group of shipped model ``name`` (command, commit, seed, scores...)."""
    from .. import h5mat
    return h5mat.read_tree(path(name), expected_kind="model", subtree="provenance")


__all__ = ["list_models", "is_name", "looks_like_name", "path", "info", "DEFAULT_MUSIC_MODEL", "DIR"]

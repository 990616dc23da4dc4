"""Trained models that ship with npvae (package data: ``npvae/pretrained/<name>.h5``), and
those a user ships (``npvae ship``) into their own folder, :func:`user_dir`.

Each file is an ordinary model file (kind ``model``, see ``docs/hdf5_schema.md``) with
one more group, ``/provenance``: the command, commit and seed that trained it, the
scores ``npvae ship`` measured on its whole test set (``scores``) and on
the small slice the tests re-score (``slice_scores``, with ``slice``: how the slice is
drawn). ::

    npvae.list_models()                   # ['mnist-dense', 'mnist-unet', 'music-mir1k', ...]
    model = npvae.load_model("mnist-unet")
    npvae.pretrained.info("mnist-unet")   # the /provenance group as a dict

Only the standard library and :mod:`npvae.files.h5mat` are imported here, so that
:mod:`npvae.files.model_file` can resolve names without an import cycle.
"""
from __future__ import annotations

import os
from pathlib import Path

DIR = Path(__file__).resolve().parent     # the models that come with npvae (read-only)
USER_ENV = "NPVAE_MODELS"
SUFFIX = ".h5"
DEFAULT_MUSIC_MODEL = "music-mir1k"


def user_dir() -> Path:
    """The folder ``npvae ship`` writes a user's models into by default: ``$NPVAE_MODELS``,
    else ``$XDG_DATA_HOME/npvae/models`` (``~/.local/share/npvae/models``)."""
    if os.environ.get(USER_ENV):
        return Path(os.environ[USER_ENV]).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home) / "npvae" / "models"


def folders() -> list[Path]:
    """Where model names are looked up, first match wins: the user's folder, then npvae's own."""
    return [user_dir(), DIR]


def list_models() -> list[str]:
    """Names of the shipped models, npvae's and the user's, sorted (``load_model`` takes any of them)."""
    return sorted({p.name[:-len(SUFFIX)] for folder in folders() for p in folder.glob("*" + SUFFIX)})


def is_name(value) -> bool:
    """True if ``value`` is the name of a shipped model (not a path)."""
    return isinstance(value, str) and value in list_models()


def looks_like_name(value: str) -> bool:
    """True for a bare name such as ``"mnist-unet"`` (no folder, no file suffix)."""
    return bool(value) and all(c.isalnum() or c == "-" for c in value)


def path(name: str) -> Path:
    """The file of shipped model ``name``; a clear error lists the names that exist."""
    for folder in folders():
        p = folder / f"{name}{SUFFIX}"
        if p.is_file():
            return p
    names = ", ".join(list_models()) or "none (this installation has no model files)"
    raise FileNotFoundError(f"no shipped model named {name!r}; shipped models: {names}. "
                            "Pass one of them, or the path of a run directory / model.h5")


def info(name: str) -> dict:
    """The ``/provenance`` group of shipped model ``name`` (command, commit, seed, scores...)."""
    from ..files import h5mat
    return h5mat.read_tree(path(name), expected_kind="model", subtree="provenance")


def _score_text(rec: dict) -> tuple[str, str]:
    """(whole test set, latent at the prior mean) of one record, as table cells."""
    s, z = rec["scores"], rec.get("scores_latent_at_prior_mean") or {}
    if rec["task"] == "music":
        whole = (f"vocals GNSDR **{s['vocals_gnsdr']:.2f}** dB, accompaniment {s['accompaniment_gnsdr']:.2f} dB "
                 f"(GSIR {s['vocals_gsir']:.2f} / {s['accompaniment_gsir']:.2f}, "
                 f"GSAR {s['vocals_gsar']:.2f} / {s['accompaniment_gsar']:.2f})")
        zero = (f"{z['vocals_gnsdr']:.2f} / {z['accompaniment_gnsdr']:.2f} dB" if z else "-")
    else:
        whole = (f"mean PSNR **{s['mean_psnr']:.2f}** dB (digit {s['digit_psnr']:.2f}, fashion "
                 f"{s['fashion_psnr']:.2f}; SSIM {s['mean_ssim']:.3f}; MSE over both outputs "
                 f"{s['mean_mse']:.5f}, i.e. {s['psnr_of_mean_mse']:.2f} dB)")
        zero = f"{z['mean_psnr']:.2f} dB" if z else "-"
    return whole, zero


def models_table() -> str:
    """The shipped models as a Markdown table, every cell read from the files' ``/provenance``.

    ``docs/models.md`` holds this table verbatim (a test checks it); after shipping a
    model, paste the output of ``python -c "import npvae; print(npvae.pretrained.models_table())"``.
    """
    lines = ["| name | trained by | commit, seed | training time | score on the whole test set "
             "| latent at the prior mean | shipped |",
             "|---|---|---|---|---|---|---|"]
    for name in list_models():
        rec = info(name)
        whole, zero = _score_text(rec)
        lines.append(f"| `{name}` | `{rec['command']}` | {rec['commit']}, {int(rec['seed'])} "
                     f"| {rec['train_seconds']:.0f} s | {whole} | {zero} | {str(rec.get('shipped', '-'))[:10]} |")
    return "\n".join(lines) + "\n"


__all__ = ["list_models", "is_name", "looks_like_name", "path", "info", "models_table",
           "DEFAULT_MUSIC_MODEL", "DIR"]

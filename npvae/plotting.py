"""Every figure npvae draws, with one matplotlib set-up (:func:`pyplot`).

Images: :func:`save_grid` (mixtures, true and estimated sources as image rows) and
:func:`save_loss_curves` (one panel per loss term). Music: :func:`plot_example`
(mixture, true and estimated spectrograms in dB) and :func:`plot_history` (loss terms,
KL and SI-SDR improvement per epoch); :func:`save_spectrogram` (one sound's, for the
separation page). All save PNG files and return their path.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

GRID_ROWS = ("mixture", "digit", "digit_hat", "fashion", "fashion_hat", "mixture_hat")
ROW_TITLES = ("mixture", "true digit", "estimated digit", "true fashion", "estimated fashion",
              "reconstructed mixture")
_FILE_BACKENDS = ("agg", "pdf", "svg", "ps", "cairo", "pgf", "template")


def has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def pyplot():
    """``matplotlib.pyplot``, on the Agg (file-only) backend unless a display is there.

    Imported here rather than at module level: matplotlib is slow to import, and the
    backend must be chosen before pyplot is first imported. A backend the user chose
    (``MPLBACKEND``) is kept when it can work.
    """
    import matplotlib
    if not has_display() and matplotlib.get_backend().lower() not in _FILE_BACKENDS:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path, **kw) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, **kw)
    return path


# ----------------------------------------------------------------------------- images

def save_grid(path, images: dict, title: str = "", show: bool = False) -> Path:
    """The six-row grid (mixture, true/estimated digit, true/estimated fashion,
    reconstructed mixture) of ``images[row]`` arrays (K, 28, 28), saved as PNG."""
    plt = pyplot()
    k = len(images["mixture"])
    fig, axes = plt.subplots(len(GRID_ROWS), k, figsize=(0.9 * k + 1.6, 0.9 * len(GRID_ROWS) + 0.4),
                             squeeze=False)
    for r, (row, label) in enumerate(zip(GRID_ROWS, ROW_TITLES)):
        for c in range(k):
            ax = axes[r, c]
            ax.imshow(images[row][c], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(left=0.16, right=0.99, bottom=0.01, top=0.93 if title else 0.99, wspace=0.05, hspace=0.05)
    path = _save(fig, path, dpi=80)
    if show and has_display():
        plt.show(block=False)
        plt.pause(0.5)
    plt.close(fig)
    return path


def save_loss_curves(path, history: dict) -> Path:
    """Training and validation curves of every loss term, one panel per term, plus PSNR."""
    plt = pyplot()
    terms = [k[6:] for k in history if k.startswith("train_")]
    panels = terms + (["psnr"] if "val_psnr" in history else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 2.8), squeeze=False)
    epochs = history["epoch"]
    for ax, term in zip(axes[0], panels):
        for prefix, style in (("train_", "-"), ("val_", "--")):
            if prefix + term in history:
                ax.plot(epochs, history[prefix + term], style, label=prefix[:-1])
        ax.set_title(term if term != "psnr" else "validation PSNR (dB)", fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        if term not in ("psnr", "kl") and min(history.get("train_" + term, [1])) > 0:
            ax.set_yscale("log")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    path = _save(fig, path, dpi=80)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- music

def plot_example(ex: dict, path, stft_cfg, title: str = "") -> Path:
    """Figure: mixture, true and estimated vocals and accompaniment spectrograms (dB).

    ``ex`` holds ``<key>_mag`` magnitudes (F, T) for mixture, vocals, vocals_hat,
    accompaniment, accompaniment_hat; ``stft_cfg`` gives the axes' units (s, kHz).
    """
    plt = pyplot()
    panels = [("mixture", "mixture"), ("vocals", "true vocals"), ("vocals_hat", "estimated vocals"),
              ("accompaniment", "true accompaniment"), ("accompaniment_hat", "estimated accompaniment")]
    fig, axes = plt.subplots(1, 5, figsize=(15, 3.2), sharey=True)
    ref = float(np.max(ex["mixture_mag"])) or 1.0
    T = ex["mixture_mag"].shape[1]
    extent = [0, T * stft_cfg.hop / stft_cfg.sample_rate, 0, stft_cfg.sample_rate / 2000]
    for ax, (key, label) in zip(axes, panels):
        db = 20 * np.log10(np.maximum(ex[key + "_mag"], 1e-8) / ref)
        im = ax.imshow(db, origin="lower", aspect="auto", vmin=-80, vmax=0, cmap="magma", extent=extent)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("time (s)")
    axes[0].set_ylabel("frequency (kHz)")
    fig.colorbar(im, ax=axes, fraction=0.015, label="dB")
    fig.suptitle(title or ex.get("name", ""), fontsize=10, y=1.04)
    path = _save(fig, path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_history(history: dict, path) -> Path:
    """Loss curves: training and validation totals and terms per epoch, plus the SI-SDR improvement."""
    plt = pyplot()
    ep = history["epoch"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    for key in ("total", "vocals", "accompaniment", "mixture"):
        for split, style in (("train", "-"), ("val", "--")):
            if f"{split}_{key}" in history:
                axes[0].plot(ep, history[f"{split}_{key}"], style, label=f"{split} {key}")
    axes[0].set_title("reconstruction terms (per bin)")
    for split, style in (("train", "-"), ("val", "--")):
        if f"{split}_kl" in history:
            axes[1].plot(ep, history[f"{split}_kl"], style, label=f"{split} KL (nats/bin)")
    axes[1].set_title("latent KL")
    for key in ("vocals_si_sdri", "accompaniment_si_sdri"):
        if f"val_{key}" in history:
            axes[2].plot(ep, history[f"val_{key}"], label=f"val {key}")
    axes[2].set_title("validation SI-SDR improvement (dB)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = _save(fig, path, dpi=80)
    plt.close(fig)
    return path


def save_spectrogram(path, db: np.ndarray, seconds: float, sample_rate: int, title: str = "") -> Path:
    """One spectrogram image: ``db`` (F, T) in dB (0 at the reference, shown down to -80)
    over ``seconds`` of sound sampled at ``sample_rate`` Hz, saved as PNG."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 2.0))
    ax.imshow(db, origin="lower", aspect="auto", vmin=-80, vmax=0, cmap="magma",
              extent=[0, seconds, 0, sample_rate / 2000])
    ax.set_xlabel("time (s)", fontsize=8)
    ax.set_ylabel("kHz", fontsize=8)
    ax.tick_params(labelsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = _save(fig, path, dpi=80)
    plt.close(fig)
    return path

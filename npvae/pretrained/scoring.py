"""Scores of a trained model on its task's test set, or on the small slice CI re-scores.

* image models (``mnist``): MSE / PSNR / SSIM per source on the fixed 10,000
  evaluation pairs (the pairs of the model's seed and mixing rule, as
  ``scripts/train_mnist.py`` scores them); the slice is the first
  :data:`MNIST_SLICE` of those pairs.
* music models (``music``): BSS Eval v3 GNSDR / GSIR / GSAR per source on the MIR-1K
  validation singers (length-weighted, as ``npvae evaluate``); the
  slice is the first :data:`MUSIC_SLICE_CLIPS` validation clips, cut to
  :data:`MUSIC_SLICE_SECONDS` seconds each.

Every score is a float in a flat dict; the headline score of each task
(:data:`HEADLINE`) is the one ``docs/models.md`` shows in bold.
"""
from __future__ import annotations

import numpy as np

from ..models.ablation import zero_latent_mean  # noqa: F401  (re-exported: npvae ship uses it)

MNIST_SLICE = 500
MUSIC_SLICE_CLIPS = 3
MUSIC_SLICE_SECONDS = 4.0
HEADLINE = {"mnist": "mean_psnr", "music": "vocals_gnsdr"}
SLICE_TEXT = {
    "mnist": f"the first {MNIST_SLICE} of the 10,000 fixed evaluation pairs",
    "music": f"the first {MUSIC_SLICE_CLIPS} MIR-1K validation clips, first {MUSIC_SLICE_SECONDS:g} s of each",
}


def task_of(model) -> str:
    """``"music"`` for a Separator (music), ``"mnist"`` for an image model."""
    return "music" if hasattr(model, "stft_cfg") else "mnist"


def score_mnist(model, config: dict, data_dir=None, limit: int | None = None) -> dict:
    """MSE / PSNR (dB) / SSIM per source and their means on the evaluation pairs
    (all 10,000, or the first ``limit``)."""
    from ..data.mixtures import load_mixture_data
    from ..metrics.image import separation_report
    data = load_mixture_data(data_dir, rule=str(config.get("rule", "average")), seed=int(config.get("seed", 0)))
    mixture, digit, fashion = (a[:limit] for a in data.evaluation_set())
    d_hat, f_hat, _ = model.separate(mixture, batch_size=500)
    report = separation_report(d_hat, f_hat, digit, fashion)
    out = {k: float(v) for k, v in report.items() if np.ndim(v) == 0}
    # mean_mse is the MSE over both outputs (the figure U-Net papers on this task quote);
    # the PSNR of that MSE differs from the mean of per-image PSNRs (mean_psnr)
    out["psnr_of_mean_mse"] = float(10 * np.log10(1.0 / out["mean_mse"]))
    out["n_pairs"] = float(len(mixture))
    return out


def score_music(sep, data_dir=None, clips: int | None = None, seconds: float | None = None) -> dict:
    """GNSDR / GSIR / GSAR / GSDR (dB) of vocals and accompaniment on the MIR-1K
    validation clips (all, or the first ``clips``, each cut to ``seconds``)."""
    from ..audio.datasets import Track, load_tracks
    from ..tasks.music import evaluate
    tracks = load_tracks("mir1k", "validation", data_dir)[:clips]
    if seconds is not None:
        tracks = [Track(t.name, t.voice[:int(seconds * t.sr)], t.accompaniment[:int(seconds * t.sr)], t.sr)
                  for t in tracks]
    res = evaluate(sep, tracks, baselines=False)
    out = {}
    for src in ("vocals", "accompaniment"):
        for m in ("gnsdr", "gsir", "gsar", "gsdr", "mean_si_sdr"):
            out[f"{src}_{m}"] = float(res[f"model_{src}_{m}"])
    out["n_clips"] = float(len(tracks))
    out["seconds"] = float(sum(t.duration for t in tracks))
    return out


def score(model, config: dict | None = None, data_dir=None, slice: bool = False) -> dict:
    """Scores of ``model`` (an image model or a music Separator) on its whole test
    set, or on the CI slice when ``slice`` is true."""
    if task_of(model) == "music":
        if slice:
            return score_music(model, data_dir, MUSIC_SLICE_CLIPS, MUSIC_SLICE_SECONDS)
        return score_music(model, data_dir)
    return score_mnist(model, config or {}, data_dir, MNIST_SLICE if slice else None)

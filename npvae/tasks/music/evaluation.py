"""Scoring a music separator: BSS Eval and SI-SDR per clip beside the ideal-ratio-mask
oracle (the ceiling) and the unprocessed mixture (the floor), their length-weighted
summaries, a plain-text table, the cheap per-epoch check, and one clip's example.
"""
from __future__ import annotations

import numpy as np

from ...audio.stft import STFTConfig, ideal_ratio_mask, istft, stft
from ...metrics.audio import gnsdr, separation_scores, si_sdr, weighted_mean
from ...separation.separator import SOURCES, Separator


def _scores(refs, ests, mix):
    s = separation_scores(refs, ests, mix)
    s["si_sdr"] = si_sdr(refs, ests)
    return s


def oracle_estimates(track, stft_cfg: STFTConfig) -> np.ndarray:
    """Ideal-ratio-mask (magnitude ratio) estimates of voice and accompaniment, (2, n)."""
    V, A = stft(track.voice, stft_cfg), stft(track.accompaniment, stft_cfg)
    m = ideal_ratio_mask(V, A, power=1.0)
    X = V + A
    return istft(np.stack([m * X, (1 - m) * X]).astype(np.complex64), stft_cfg, length=track.n_samples)


def evaluate(sep: Separator, tracks, wiener: bool = False, baselines: bool = True,
             progress=None, shifts: int = 1) -> dict:
    """Separation scores over ``tracks`` for the model, the IRM oracle and the mixture.

    Returns ``{"clip_names": [...], "clip_seconds": (C,), "<system>_<metric>": (C, 2)}``
    for systems "model", "oracle", "mixture" and metrics sdr, sir, sar, nsdr, si_sdr
    (columns: vocals, accompaniment), plus the summaries of :func:`summarize` and
    ``"skipped_clips"`` (clips left out because a reference source is silent; an error if
    that leaves none).
    """
    systems = ("model", "oracle", "mixture") if baselines else ("model",)
    per: dict[str, list] = {}
    names, seconds, skipped = [], [], []
    for tr in tracks:
        mix = tr.mixture()
        refs = tr.sources()
        silent = [SOURCES[j] for j in range(len(refs)) if not np.any(refs[j])]
        if silent:
            # BSS Eval has no SDR for a silent reference: leave the clip out, and say so.
            skipped.append(f"{tr.name} (silent {' and '.join(silent)})")
            if progress:
                progress(f"{tr.name}: skipped, its {' and '.join(silent)} reference is silent")
            continue
        ests = {"model": sep.separate_mono(mix, wiener=wiener, shifts=shifts)}
        if baselines:
            ests["oracle"] = oracle_estimates(tr, sep.stft_cfg)
            ests["mixture"] = np.stack([mix, mix])
        for sysname in systems:
            for metric, val in _scores(refs, ests[sysname], mix).items():
                if metric == "mixture_sdr":      # the floor row carries it as its own sdr
                    continue
                per.setdefault(f"{sysname}_{metric}", []).append(np.asarray(val, np.float64))
        names.append(tr.name)
        seconds.append(tr.duration)
        if progress:
            progress(tr.name)
    if not names:
        raise ValueError(f"no clip can be scored: every clip has a silent reference source "
                         f"({', '.join(skipped)}); BSS Eval needs both sources to have energy")
    out = {"clip_names": names, "clip_seconds": np.asarray(seconds), "skipped_clips": skipped}
    out.update({k: np.stack(v) for k, v in per.items()})
    out.update(summarize(out, systems))
    return out


def summarize(per_clip: dict, systems=("model", "oracle", "mixture")) -> dict:
    """Length-weighted summaries per system and source: ``<system>_<source>_gnsdr``,
    ``_gsir``, ``_gsar``, ``_gsdr`` and the plain means ``_mean_sdr``, ``_mean_si_sdr``."""
    w = per_clip["clip_seconds"]
    out = {}
    for sysname in systems:
        for j, src in enumerate(SOURCES):
            p = f"{sysname}_{src}_"
            out[p + "gnsdr"] = float(gnsdr(per_clip[f"{sysname}_nsdr"][:, j], w))
            out[p + "gsir"] = float(weighted_mean(per_clip[f"{sysname}_sir"][:, j], w))
            out[p + "gsar"] = float(weighted_mean(per_clip[f"{sysname}_sar"][:, j], w))
            out[p + "gsdr"] = float(weighted_mean(per_clip[f"{sysname}_sdr"][:, j], w))
            out[p + "mean_sdr"] = float(np.mean(per_clip[f"{sysname}_sdr"][:, j]))
            out[p + "mean_si_sdr"] = float(np.mean(per_clip[f"{sysname}_si_sdr"][:, j]))
    return out


def by_group(per_clip: dict, group_of, system: str = "model") -> dict:
    """GNSDR of ``system`` per group of clips (per singer, say): ``{"groups": [...],
    "group_clips": (G,), "group_vocals_gnsdr": (G,), "group_accompaniment_gnsdr": (G,)}``,
    groups sorted by name; ``group_of(clip_name) -> str``. Says how much a summary over
    all clips depends on a few voices."""
    names = list(per_clip["clip_names"])
    labels = np.asarray([group_of(n) for n in names])
    groups = sorted(set(labels.tolist()))
    w, nsdr = np.asarray(per_clip["clip_seconds"]), per_clip[f"{system}_nsdr"]
    out = {"groups": groups, "group_clips": np.asarray([int(np.sum(labels == g)) for g in groups])}
    for j, src in enumerate(SOURCES):
        out[f"group_{src}_gnsdr"] = np.asarray([gnsdr(nsdr[labels == g, j], w[labels == g]) for g in groups])
    return out


def format_groups(groups: dict, what: str = "singer") -> str:
    """A plain-text table of :func:`by_group`, with the spread across groups."""
    head = f"{what:14s} {'clips':>5s} " + " ".join(f"{src + ' GNSDR':>20s}" for src in SOURCES)
    lines = [head, "-" * len(head)]
    for i, g in enumerate(groups["groups"]):
        lines.append(f"{g:14s} {groups['group_clips'][i]:5d} "
                     + " ".join(f"{groups[f'group_{src}_gnsdr'][i]:20.2f}" for src in SOURCES))
    if len(groups["groups"]) > 1:
        spread = ", ".join(f"{src} {np.min(v):.2f} to {np.max(v):.2f} (std {np.std(v):.2f})"
                           for src in SOURCES for v in [groups[f"group_{src}_gnsdr"]])
        lines.append(f"across {what}s: {spread}")
    return "\n".join(lines)


def format_table(summary: dict, systems=("model", "oracle", "mixture")) -> str:
    """A plain-text table of the summaries, one row per system and source."""
    labels = {"model": "VAE (this model)", "oracle": "ideal ratio mask (ceiling)",
              "mixture": "unprocessed mixture (floor)"}
    head = f"{'system':30s} {'source':14s} {'GNSDR':>7s} {'GSIR':>7s} {'GSAR':>7s} {'GSDR':>7s} {'SI-SDR':>7s}"
    lines = [head, "-" * len(head)]
    for sysname in systems:
        for src in SOURCES:
            p = f"{sysname}_{src}_"
            if p + "gnsdr" not in summary:
                continue
            lines.append(f"{labels.get(sysname, sysname):30s} {src:14s} {summary[p + 'gnsdr']:7.2f} "
                         f"{summary[p + 'gsir']:7.2f} {summary[p + 'gsar']:7.2f} "
                         f"{summary[p + 'gsdr']:7.2f} {summary[p + 'mean_si_sdr']:7.2f}")
    return "\n".join(lines) + "\n(dB; G* = length-weighted means over clips, SI-SDR = plain mean)"


def quick_validation(sep: Separator, tracks) -> dict:
    """Cheap per-epoch check: mean SI-SDR improvement (dB) of the vocals and accompaniment."""
    imp = []
    for tr in tracks:
        mix = tr.mixture()
        refs = tr.sources()
        est = sep.separate_mono(mix)
        if not np.any(est[0]) or not np.any(est[1]):
            imp.append([-np.inf, -np.inf])
            continue
        imp.append(si_sdr(refs, est) - si_sdr(refs, np.stack([mix, mix])))
    imp = np.asarray(imp)
    return {"vocals_si_sdri": float(np.mean(imp[:, 0])), "accompaniment_si_sdri": float(np.mean(imp[:, 1]))}


def example(sep: Separator, track, seconds: float | None = None, wiener: bool = False, shifts: int = 1) -> dict:
    """Waveforms and magnitude spectrograms of one clip and its estimates (schema's /examples)."""
    n = track.n_samples if seconds is None else min(track.n_samples, int(seconds * track.sr))
    mix = track.mixture()[:n]
    est = sep.separate_mono(mix, wiener=wiener, shifts=shifts)
    waves = {"mixture": mix, "vocals": track.voice[:n], "accompaniment": track.accompaniment[:n],
             "vocals_hat": est[0], "accompaniment_hat": est[1]}
    ex = {"name": track.name}
    for k, w in waves.items():
        ex[k] = np.asarray(w, np.float32)
        ex[k + "_mag"] = np.abs(stft(np.asarray(w, np.float32), sep.stft_cfg)).astype(np.float32)
    return ex

"""Scoring a blind separation: the best assignment of estimated groups to true sources.

A blind model's groups come in no particular order, so each test mixture's K
estimates are matched to its S true sources (K >= S) by the assignment of least
total MSE (the Hungarian algorithm, :func:`scipy.optimize.linear_sum_assignment`),
independently for every mixture, as in Neri et al. (2021). Unmatched groups
(K > S) are left out of the scores.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from .checks import finite
from .image import mse, psnr, ssim


def best_permutation(estimates: np.ndarray, sources: np.ndarray) -> np.ndarray:
    """For each mixture, which estimate goes with which source.

    estimates (N, K, H, W), sources (N, S, H, W) with K >= S -> indices (N, S) into
    the K estimates: ``estimates[n, idx[n, s]]`` is matched to ``sources[n, s]``, the
    assignment minimising the summed per-image MSE.
    """
    est, src = np.asarray(estimates), np.asarray(sources)
    if est.ndim != 4 or src.ndim != 4 or est.shape[0] != src.shape[0] or est.shape[2:] != src.shape[2:]:
        raise ValueError(f"estimates (N, K, H, W) and sources (N, S, H, W) must agree in N, H and W, "
                         f"got {est.shape} and {src.shape}")
    n, k, s = est.shape[0], est.shape[1], src.shape[1]
    if k < s:
        raise ValueError(f"{k} estimated groups cannot be matched to {s} sources: train with at least {s} groups")
    finite(est, "best_permutation", "estimates")
    finite(src, "best_permutation", "sources")
    diff = est[:, None].astype(np.float64) - src[:, :, None].astype(np.float64)   # (N, S, K, H, W)
    cost = np.mean(diff * diff, axis=(3, 4))                                        # (N, S, K)
    idx = np.empty((n, s), dtype=np.int64)
    for i in range(n):
        rows, cols = linear_sum_assignment(cost[i])
        idx[i, rows] = cols
    return idx


def matched(estimates: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """estimates (N, K, H, W) reordered by ``idx`` (N, S) -> (N, S, H, W)."""
    return np.take_along_axis(np.asarray(estimates), idx[:, :, None, None], axis=1)


def permutation_report(estimates: np.ndarray, sources: np.ndarray, names=("digit", "fashion"),
                       data_range: float = 1.0) -> dict[str, float]:
    """MSE, PSNR (dB) and SSIM of each source after the best per-mixture assignment, and
    their average, as :func:`npvae.metrics.image.separation_report` names them
    (``digit_psnr``, ..., ``mean_psnr``); plus ``group_agreement``: the share of
    mixtures whose first source went to the group it goes to most often (1.0 when a
    group always holds the same kind of source, 1/K for no preference)."""
    names = tuple(names)
    if len(names) != np.shape(sources)[1]:
        raise ValueError(f"{len(names)} names for {np.shape(sources)[1]} sources")
    idx = best_permutation(estimates, sources)
    est = matched(estimates, idx)
    report: dict[str, float] = {}
    for j, name in enumerate(names):
        report[f"{name}_mse"] = float(mse(est[:, j], sources[:, j]).mean())
        report[f"{name}_psnr"] = float(psnr(est[:, j], sources[:, j], data_range).mean())
        report[f"{name}_ssim"] = float(ssim(est[:, j], sources[:, j], data_range).mean())
    for metric in ("mse", "psnr", "ssim"):
        report[f"mean_{metric}"] = float(np.mean([report[f"{n}_{metric}"] for n in names]))
    counts = np.bincount(idx[:, 0], minlength=np.shape(estimates)[1])
    report["group_agreement"] = float(counts.max() / len(idx))
    return report

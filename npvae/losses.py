"""Reconstruction losses. Each returns ``(value, grad)`` with ``grad`` the gradient of
``value`` with respect to the prediction (same shape and dtype).

Reductions (the ``reduction`` argument):

* ``"batch"`` (default): sum over every axis but the first, mean over the batch --
  the per-sample log-likelihood scale a VAE's ELBO needs beside the KL term.
* ``"mean"``: mean over all elements. ``"sum"``: sum over all elements.
"""
from __future__ import annotations

import numpy as np

from ._kernels import kernels

from .layers.activations import sigmoid

LOG_2PI = float(np.log(2 * np.pi))


def _scale(pred, reduction: str) -> float:
    if reduction == "batch":
        return 1.0 / pred.shape[0]
    if reduction == "mean":
        return 1.0 / pred.size
    if reduction == "sum":
        return 1.0
    raise ValueError(f"reduction must be 'batch', 'mean' or 'sum', got {reduction!r}")


def _check(pred, target, name):
    if pred.shape != target.shape:
        raise ValueError(f"{name}: prediction and target shapes differ: {pred.shape} vs {target.shape}")


def bce_with_logits(logits, target, reduction: str = "batch"):
    """Binary cross-entropy of ``sigmoid(logits)`` against ``target`` in [0, 1].

    Computed from the logits as ``max(l,0) - l*t + log(1+exp(-|l|))``, exact for any l.
    """
    _check(logits, target, "bce_with_logits")
    s = _scale(logits, reduction)
    total, grad = kernels.bce_logits(logits, target.astype(logits.dtype, copy=False), s)
    return total * s, grad


def bce(prob, target, reduction: str = "batch", eps: float = 1e-6):
    """Binary cross-entropy of probabilities ``prob`` (clipped to [eps, 1-eps]).

    For outputs that are not a sigmoid of one logit, such as a mixture of two
    sigmoid outputs; the gradient is zero where the clip is active.
    """
    _check(prob, target, "bce")
    s = _scale(prob, reduction)
    p = np.clip(prob, eps, 1 - eps)
    value = -np.sum(target * np.log(p) + (1 - target) * np.log1p(-p), dtype=np.float64)
    grad = (p - target) / (p * (1 - p))
    grad *= (prob > eps) & (prob < 1 - eps)
    return float(value) * s, (grad * s).astype(prob.dtype, copy=False)


def mse(pred, target, reduction: str = "batch"):
    """Squared error ``(pred - target)^2`` reduced as documented."""
    _check(pred, target, "mse")
    s = _scale(pred, reduction)
    diff = pred - target
    return float(np.sum(diff * diff, dtype=np.float64)) * s, (2 * s) * diff


def l1(pred, target, reduction: str = "batch"):
    """Absolute error ``|pred - target|``; its (sub)gradient is sign(pred - target), 0 at 0."""
    _check(pred, target, "l1")
    s = _scale(pred, reduction)
    diff = pred - target
    return float(np.sum(np.abs(diff), dtype=np.float64)) * s, (s * np.sign(diff)).astype(pred.dtype, copy=False)


def gaussian_nll(mean, target, logvar, reduction: str = "batch"):
    """Negative log-likelihood of ``target`` under N(mean, exp(logvar)), in nats.

    ``0.5 * (log(2 pi) + logvar + (target - mean)^2 / exp(logvar))`` per element;
    ``logvar`` is an array of ``mean``'s shape or a scalar (a fixed variance).
    Returns ``(value, dmean, dlogvar)``; ``dlogvar`` is None for a scalar logvar.
    """
    _check(mean, target, "gaussian_nll")
    s = _scale(mean, reduction)
    lv = np.asarray(logvar, dtype=mean.dtype)
    inv_var = np.exp(-lv)
    diff = mean - target
    sq = diff * diff * inv_var
    value = 0.5 * float(np.sum(LOG_2PI + lv + sq, dtype=np.float64)) if lv.ndim else \
        0.5 * float(np.sum(sq, dtype=np.float64) + mean.size * (LOG_2PI + float(lv)))
    dmean = (s * diff * inv_var).astype(mean.dtype, copy=False)
    dlogvar = (0.5 * s * (1 - sq)).astype(mean.dtype, copy=False) if lv.ndim else None
    return value * s, dmean, dlogvar


def probability_loss(name: str):
    """The loss ``name`` ("bce", "mse", "l1") as a function of probabilities/intensities
    ``(pred, target, reduction) -> (value, grad)``."""
    table = {"bce": bce, "mse": mse, "l1": l1}
    if name not in table:
        raise ValueError(f"unknown loss {name!r}: choose one of {sorted(table)}")
    return table[name]


__all__ = ["bce_with_logits", "bce", "mse", "l1", "gaussian_nll", "probability_loss", "sigmoid"]

"""Losses between an estimated and a true magnitude spectrogram, each with its gradient.

Every function takes ``est`` and ``target``: non-negative ndarrays of the same shape
(magnitudes, e.g. (N, S, F, T)), and returns ``(value, grad)`` where ``grad`` is
d value / d est (same shape and dtype as ``est``). Values are averaged over all
elements (``reduction="mean"``, the default, so the numbers read "per time-frequency
bin") or summed (``"sum"``).

* :func:`mse` and :func:`l1` compare *compressed* magnitudes ``c(est)`` and
  ``c(target)`` with ``c`` one of :data:`COMPRESSIONS`: identity, ``log(x + eps)``
  or the power law ``(x + eps)^p - eps^p``.
* :func:`generalized_kl` is the generalised Kullback-Leibler divergence
  ``t log(t/e) - t + e`` and :func:`itakura_saito` the Itakura-Saito divergence
  ``t/e - log(t/e) - 1`` (both on ``x + eps``; use ``exponent=2`` to compare power
  spectrograms, the usual choice for IS).

:func:`get_loss` picks one by name for the command line (``--loss``).
"""
from __future__ import annotations

from functools import partial

import numpy as np

COMPRESSIONS = ("none", "log", "power")
LOSSES = ("l1", "mse", "kl", "is")


def _check(est, target, name):
    if est.shape != target.shape:
        raise ValueError(f"{name}: estimate and target shapes differ: {est.shape} vs {target.shape}")


def _scale(x, reduction):
    if reduction == "mean":
        return 1.0 / x.size
    if reduction == "sum":
        return 1.0
    raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")


def compress(x, compression: str = "none", power: float = 0.5, eps: float = 1e-3):
    """``(c(x), c'(x))`` for a non-negative array ``x``.

    compression : "none" (x), "log" (log(x + eps)) or "power" ((x + eps)^power - eps^power).
    """
    if compression == "none":
        return x, np.ones_like(x)
    if compression == "log":
        xe = x + eps
        return np.log(xe), 1.0 / xe
    if compression == "power":
        xe = x + eps
        y = xe ** power
        return y - eps ** power, power * y / xe
    raise ValueError(f"unknown compression {compression!r}; use one of {COMPRESSIONS}")


def _exponentiate(x, exponent):
    """``(x^p, p x^(p-1))``; exponent 1 is a no-op."""
    if exponent == 1:
        return x, None
    return x ** exponent, exponent * x ** (exponent - 1)


def mse(est, target, compression: str = "none", power: float = 0.5, eps: float = 1e-3,
        reduction: str = "mean"):
    """Mean squared error of compressed magnitudes, ``mean((c(e) - c(t))^2)``."""
    _check(est, target, "mse")
    ce, dce = compress(est, compression, power, eps)
    ct, _ = compress(target, compression, power, eps)
    diff = ce - ct
    s = _scale(est, reduction)
    value = float(np.sum(diff.astype(np.float64) ** 2)) * s
    return value, (2.0 * s * diff * dce).astype(est.dtype, copy=False)


def l1(est, target, compression: str = "none", power: float = 0.5, eps: float = 1e-3,
       reduction: str = "mean"):
    """Mean absolute error of compressed magnitudes, ``mean(|c(e) - c(t)|)``.

    The subgradient at equality is 0.
    """
    _check(est, target, "l1")
    ce, dce = compress(est, compression, power, eps)
    ct, _ = compress(target, compression, power, eps)
    diff = ce - ct
    s = _scale(est, reduction)
    value = float(np.sum(np.abs(diff), dtype=np.float64)) * s
    return value, (s * np.sign(diff) * dce).astype(est.dtype, copy=False)


def generalized_kl(est, target, eps: float = 1e-3, exponent: float = 1.0, reduction: str = "mean"):
    """Generalised KL divergence ``sum(t log(t/e) - t + e)`` with ``e = est^exponent + eps``,
    ``t = target^exponent + eps``; zero only when they are equal."""
    _check(est, target, "generalized_kl")
    ep, dep = _exponentiate(est, exponent)
    tp, _ = _exponentiate(target, exponent)
    e, t = ep + eps, tp + eps
    s = _scale(est, reduction)
    value = float(np.sum(t * np.log(t / e) - t + e, dtype=np.float64)) * s
    grad = s * (1.0 - t / e)
    if dep is not None:
        grad = grad * dep
    return value, grad.astype(est.dtype, copy=False)


def itakura_saito(est, target, eps: float = 1e-3, exponent: float = 1.0, reduction: str = "mean"):
    """Itakura-Saito divergence ``sum(t/e - log(t/e) - 1)`` with ``e = est^exponent + eps``,
    ``t = target^exponent + eps``. Scale-invariant: quiet bins count as much as loud ones."""
    _check(est, target, "itakura_saito")
    ep, dep = _exponentiate(est, exponent)
    tp, _ = _exponentiate(target, exponent)
    e, t = ep + eps, tp + eps
    r = t / e
    s = _scale(est, reduction)
    value = float(np.sum(r - np.log(r) - 1.0, dtype=np.float64)) * s
    grad = s * (1.0 - r) / e
    if dep is not None:
        grad = grad * dep
    return value, grad.astype(est.dtype, copy=False)


def get_loss(name: str, compression: str = "none", power: float = 0.5, eps: float = 1e-3):
    """The loss ``name`` ("l1", "mse", "kl", "is") as ``f(est, target) -> (value, grad)``.

    ``compression`` and ``power`` apply to l1 and mse; for "is" the spectrograms are
    compared as powers (exponent 2), for "kl" as magnitudes.
    """
    key = name.lower().replace("-", "").replace("_", "")
    if key == "l1":
        return partial(l1, compression=compression, power=power, eps=eps)
    if key == "mse":
        return partial(mse, compression=compression, power=power, eps=eps)
    if key in ("kl", "gkl", "generalizedkl"):
        return partial(generalized_kl, eps=eps)
    if key in ("is", "itakurasaito"):
        return partial(itakura_saito, eps=eps, exponent=2.0)
    raise ValueError(f"unknown loss {name!r}; use one of {', '.join(LOSSES)}")

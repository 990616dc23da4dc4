"""Numba ``@njit`` kernels, one per NumPy twin in :mod:`kernels.numpy_kernels`
(same signatures, same results to float rounding). GEMMs are not here: they stay
on BLAS, which is several times faster than a hand-written matmul on this CPU.

Kernels are compiled on first use for each dtype and cached on disk
(``cache=True``), so a second process starts without recompiling.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from .numpy_kernels import (ACT_IDENTITY, ACT_LEAKY_RELU, ACT_RELU, ACT_SIGMOID,  # noqa: F401
                            ACT_TANH, conv_output_size)


@njit(cache=True)
def _im2col(x, cols, kh, kw, sh, sw, ph, pw, oh, ow):
    n, c, h, w = x.shape
    for ci in range(c):
        for i in range(kh):
            for j in range(kw):
                row = (ci * kh + i) * kw + j
                for ni in range(n):
                    base = ni * oh * ow
                    for a in range(oh):
                        hh = a * sh - ph + i
                        col = base + a * ow
                        if hh < 0 or hh >= h:
                            for b in range(ow):
                                cols[row, col + b] = 0
                            continue
                        for b in range(ow):
                            ww = b * sw - pw + j
                            if 0 <= ww < w:
                                cols[row, col + b] = x[ni, ci, hh, ww]
                            else:
                                cols[row, col + b] = 0


@njit(cache=True)
def _col2im(cols, x, kh, kw, sh, sw, ph, pw, oh, ow):
    n, c, h, w = x.shape
    for ci in range(c):
        for i in range(kh):
            for j in range(kw):
                row = (ci * kh + i) * kw + j
                for ni in range(n):
                    base = ni * oh * ow
                    for a in range(oh):
                        hh = a * sh - ph + i
                        if hh < 0 or hh >= h:
                            continue
                        col = base + a * ow
                        for b in range(ow):
                            ww = b * sw - pw + j
                            if 0 <= ww < w:
                                x[ni, ci, hh, ww] += cols[row, col + b]


def im2col(x, kh, kw, sh, sw, ph, pw):
    """Patches of ``x`` (N, C, H, W) as columns, shape (C*kh*kw, N*OH*OW)."""
    n, c, h, w = x.shape
    oh, ow = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
    cols = np.empty((c * kh * kw, n * oh * ow), dtype=x.dtype)
    _im2col(np.ascontiguousarray(x), cols, kh, kw, sh, sw, ph, pw, oh, ow)
    return cols


def col2im(cols, x_shape, kh, kw, sh, sw, ph, pw):
    """Adjoint of :func:`im2col`: scatter-add columns back into an (N, C, H, W) array."""
    n, c, h, w = x_shape
    oh, ow = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
    x = np.zeros(x_shape, dtype=cols.dtype)
    _col2im(np.ascontiguousarray(cols), x, kh, kw, sh, sw, ph, pw, oh, ow)
    return x


@njit(cache=True, inline="always")
def _sigmoid(z):
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@njit(cache=True)
def _bias_act_forward(z, b, act, alpha):
    n, f = z.shape
    for i in range(n):
        for j in range(f):
            v = z[i, j] + b[j]
            if act == 1:
                v = v if v > 0 else 0.0
            elif act == 2:
                v = v if v > 0 else alpha * v
            elif act == 3:
                v = _sigmoid(v)
            elif act == 4:
                v = math.tanh(v)
            z[i, j] = v


def bias_act_forward(z, b, act, alpha):
    """In place: ``z <- act(z + b)`` for ``z`` (N, F) and ``b`` (F,). Returns ``z``."""
    _bias_act_forward(z, b, act, alpha)
    return z


@njit(cache=True)
def _act_backward(dy, y, dz, act, alpha):
    for i in range(dy.size):
        g = dy[i]
        if act == 1:
            g = g if y[i] > 0 else 0.0
        elif act == 2:
            g = g if y[i] > 0 else alpha * g
        elif act == 3:
            g = g * y[i] * (1.0 - y[i])
        elif act == 4:
            g = g * (1.0 - y[i] * y[i])
        dz[i] = g


def act_backward(dy, y, act, alpha):
    """Gradient through an activation, from its output ``y``: returns ``dz`` (new array)."""
    dz = np.empty_like(dy)
    _act_backward(np.ascontiguousarray(dy).reshape(-1), np.ascontiguousarray(y).reshape(-1),
                  dz.reshape(-1), act, alpha)
    return dz


@njit(cache=True)
def _adam_update(p, g, m, v, lr, beta1, beta2, eps, bc1, bc2, weight_decay):
    decay = 1.0 - lr * weight_decay
    step = lr / bc1
    for i in range(p.size):
        gi = g[i]
        mi = beta1 * m[i] + (1.0 - beta1) * gi
        vi = beta2 * v[i] + (1.0 - beta2) * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] = p[i] * decay - step * mi / (math.sqrt(vi / bc2) + eps)


def adam_update(p, g, m, v, lr, beta1, beta2, eps, bc1, bc2, weight_decay):
    """One Adam step in place (see the NumPy twin for the maths)."""
    _adam_update(p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1),
                 lr, beta1, beta2, eps, bc1, bc2, weight_decay)


@njit(cache=True)
def _reparameterize(mu, logvar, eps, z, std):
    for i in range(mu.size):
        s = math.exp(0.5 * logvar[i])
        std[i] = s
        z[i] = mu[i] + s * eps[i]


def reparameterize(mu, logvar, eps):
    """``z = mu + exp(0.5 logvar) * eps``; returns ``(z, std)``."""
    z, std = np.empty_like(mu), np.empty_like(mu)
    _reparameterize(np.ascontiguousarray(mu).reshape(-1), np.ascontiguousarray(logvar).reshape(-1),
                    np.ascontiguousarray(eps).reshape(-1), z.reshape(-1), std.reshape(-1))
    return z, std


@njit(cache=True)
def _kl_terms(mu, logvar, dmu, dlogvar):
    total = 0.0
    for i in range(mu.size):
        ev = math.exp(logvar[i])
        total += 1.0 + logvar[i] - mu[i] * mu[i] - ev
        dmu[i] = mu[i]
        dlogvar[i] = 0.5 * (ev - 1.0)
    return -0.5 * total


def kl_terms(mu, logvar):
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over all elements, and its gradients."""
    dmu, dlogvar = np.empty_like(mu), np.empty_like(mu)
    kl = _kl_terms(np.ascontiguousarray(mu).reshape(-1), np.ascontiguousarray(logvar).reshape(-1),
                   dmu.reshape(-1), dlogvar.reshape(-1))
    return float(kl), dmu, dlogvar


@njit(cache=True)
def _bce_logits(logits, target, grad):
    total = 0.0
    for i in range(logits.size):
        l, t = logits[i], target[i]
        total += max(l, 0.0) - l * t + math.log1p(math.exp(-abs(l)))
        grad[i] = _sigmoid(l) - t
    return total


def bce_logits(logits, target):
    """Binary cross-entropy from logits, summed; returns ``(sum, sigmoid(logits) - target)``."""
    grad = np.empty_like(logits)
    total = _bce_logits(np.ascontiguousarray(logits).reshape(-1),
                        np.ascontiguousarray(target, dtype=logits.dtype).reshape(-1), grad.reshape(-1))
    return float(total), grad

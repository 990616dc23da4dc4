"""Finite-difference gradient checks (float64, centred differences).

``check_layer`` projects a layer's output on a random direction R, so the scalar
``L = sum(forward(x) * R)`` has analytic gradients ``backward(R)`` (for x) and
``layer.grads`` (for every parameter), which are compared to
``(L(theta + h) - L(theta - h)) / 2h`` element by element.
"""
from __future__ import annotations

import numpy as np


def rel_error(a, b) -> float:
    """||a - b|| / (||a|| + ||b||): 0 for equal arrays, about 1 for unrelated ones."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-300))


def numerical_gradient(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Centred-difference gradient of the scalar function ``f()`` with respect to ``x``,
    which ``f`` reads and this function perturbs in place (and restores)."""
    grad = np.zeros_like(x, dtype=np.float64)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        fp = f()
        flat[i] = old - h
        fm = f()
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * h)
    return grad


def check_layer(layer, x: np.ndarray, rng: np.random.Generator, h: float = 1e-6) -> dict[str, float]:
    """Relative errors of a layer's input and parameter gradients: ``{"x": e, "W": e, ...}``."""
    y = layer.forward(x)
    r = rng.standard_normal(y.shape)

    def loss():
        return float(np.sum(layer.forward(x) * r))

    layer.forward(x)
    dx = layer.backward(r.astype(y.dtype))
    analytic = {"x": dx.copy(), **{k: g.copy() for k, g in layer.grads.items()}}
    errors = {"x": rel_error(analytic["x"], numerical_gradient(loss, x, h))}
    for name, p in layer.params.items():
        errors[name] = rel_error(analytic[name], numerical_gradient(loss, p, h))
    return errors

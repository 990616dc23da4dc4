"""Hot element-wise and data-movement kernels behind one small interface.

Two backends implement the same functions: ``numba`` (``@njit`` kernels,
compiled once and cached on disk) and ``numpy`` (the reference twins). The
``NPVAE_BACKEND`` environment variable picks one at import (``numba`` by
default, ``numpy`` when Numba is missing); :func:`set_backend` switches at run
time and :func:`backend` says which is active.

Importing this package also shortens the spin of OpenBLAS's idle threads
(:mod:`npvae.kernels.openblas`), whatever was imported before it.
"""
from __future__ import annotations

import os
import warnings

from . import numpy_kernels
from .numpy_kernels import (ACT_IDENTITY, ACT_LEAKY_RELU, ACT_RELU, ACT_SIGMOID,  # noqa: F401
                            ACT_TANH, conv_output_size, winograd_tiles)

BACKENDS = ("numba", "numpy")
_ops = numpy_kernels
_name = "numpy"


def _load_numba():
    from . import numba_kernels
    return numba_kernels


def available_backends() -> list[str]:
    """Backends that can be used on this machine."""
    try:
        _load_numba()
        return ["numba", "numpy"]
    except ImportError:
        return ["numpy"]


def set_backend(name: str) -> str:
    """Select ``"numba"`` or ``"numpy"``; returns the backend now active."""
    global _ops, _name
    name = name.strip().lower()
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}: choose one of {BACKENDS} (NPVAE_BACKEND)")
    if name == "numba":
        try:
            _ops, _name = _load_numba(), "numba"
        except ImportError as exc:
            warnings.warn(f"Numba is not importable ({exc}); using the NumPy kernels. "
                          "Install numba to get the compiled backend.", RuntimeWarning, stacklevel=2)
            _ops, _name = numpy_kernels, "numpy"
    else:
        _ops, _name = numpy_kernels, "numpy"
    return _name


def backend() -> str:
    """Name of the active backend: ``"numba"`` or ``"numpy"``."""
    return _name


def im2col(x, kh, kw, sh, sw, ph, pw, out=None):
    return _ops.im2col(x, kh, kw, sh, sw, ph, pw, out)


def col2im(cols, x_shape, kh, kw, sh, sw, ph, pw, out=None):
    return _ops.col2im(cols, x_shape, kh, kw, sh, sw, ph, pw, out)


def conv_direct_forward(x, w, b, sh, sw, ph, pw, out):
    return _ops.conv_direct_forward(x, w, b, sh, sw, ph, pw, out)


def conv_direct_backward(x, w, dy, sh, sw, ph, pw, dw, dx=None):
    return _ops.conv_direct_backward(x, w, dy, sh, sw, ph, pw, dw, dx)


def conv_tiled_forward(x, w, b, sh, sw, ph, pw, out):
    return _ops.conv_tiled_forward(x, w, b, sh, sw, ph, pw, out)


def conv_tiled_weight_grad(x, dy, sh, sw, ph, pw, dw):
    return _ops.conv_tiled_weight_grad(x, dy, sh, sw, ph, pw, dw)


def conv_cin1_forward(x, w, b, sh, sw, ph, pw, out):
    return _ops.conv_cin1_forward(x, w, b, sh, sw, ph, pw, out)


def conv_cin1_weight_grad(x, dy, sh, sw, ph, pw, dw, db=None):
    return _ops.conv_cin1_weight_grad(x, dy, sh, sw, ph, pw, dw, db)


def conv_cin1_input_grad(dy, w, sh, sw, ph, pw, dx):
    return _ops.conv_cin1_input_grad(dy, w, sh, sw, ph, pw, dx)


def winograd_input_transform(x, m, ph, pw, out=None):
    return _ops.winograd_input_transform(x, m, ph, pw, out)


def winograd_output_transform(t, m, b, out):
    return _ops.winograd_output_transform(t, m, b, out)


def winograd_output_adjoint(dy, m, out=None):
    return _ops.winograd_output_adjoint(dy, m, out)


def winograd_input_adjoint(v, m, ph, pw, out):
    return _ops.winograd_input_adjoint(v, m, ph, pw, out)


def bias_act_forward(z, b, act, alpha=0.0):
    return _ops.bias_act_forward(z, b, act, alpha)


def bias_act_channels(z, b, act, alpha=0.0):
    return _ops.bias_act_channels(z, b, act, alpha)


def act_forward(x, act, alpha=0.0):
    return _ops.act_forward(x, act, alpha)


def act_backward(dy, y, act, alpha=0.0, out=None):
    return _ops.act_backward(dy, y, act, alpha, out)


def adam_update(p, g, m, v, lr, beta1, beta2, eps, bc1, bc2, weight_decay=0.0):
    return _ops.adam_update(p, g, m, v, lr, beta1, beta2, eps, bc1, bc2, weight_decay)


def reparameterize(mu, logvar, eps):
    return _ops.reparameterize(mu, logvar, eps)


def kl_terms(mu, logvar):
    return _ops.kl_terms(mu, logvar)


def bce_logits(logits, target, scale=1.0):
    return _ops.bce_logits(logits, target, scale)


def avg_pool2d_forward(x, kh, kw, sh, sw, ph, pw):
    return _ops.avg_pool2d_forward(x, kh, kw, sh, sw, ph, pw)


def avg_pool2d_backward(dy, x_shape, kh, kw, sh, sw, ph, pw):
    return _ops.avg_pool2d_backward(dy, x_shape, kh, kw, sh, sw, ph, pw)


def max_pool2d_forward(x, kh, kw, sh, sw, ph, pw):
    return _ops.max_pool2d_forward(x, kh, kw, sh, sw, ph, pw)


def max_pool2d_backward(dy, arg, x_shape, kh, kw, sh, sw, ph, pw):
    return _ops.max_pool2d_backward(dy, arg, x_shape, kh, kw, sh, sw, ph, pw)


def channel_sums(x):
    return _ops.channel_sums(x)


def channel_sq_dev(x, mean):
    return _ops.channel_sq_dev(x, mean)


def channel_dot_sums(dy, xhat):
    return _ops.channel_dot_sums(dy, xhat)


def batchnorm_normalise(x, mean, inv_std, gamma, beta, xhat, y):
    return _ops.batchnorm_normalise(x, mean, inv_std, gamma, beta, xhat, y)


def channel_affine(x, scale, shift, out):
    return _ops.channel_affine(x, scale, shift, out)


def batchnorm_input_grad(dy, xhat, mean_dy, mean_dyx, scale, dx):
    return _ops.batchnorm_input_grad(dy, xhat, mean_dy, mean_dyx, scale, dx)


def batchnorm_backward(dy, xhat, scale, dx):
    return _ops.batchnorm_backward(dy, xhat, scale, dx)


def groupnorm_forward(x, gamma, beta, groups, eps, y):
    return _ops.groupnorm_forward(x, gamma, beta, groups, eps, y)


def groupnorm_backward(dy, x, mean, inv_std, gamma, dgamma, dbeta, dx):
    return _ops.groupnorm_backward(dy, x, mean, inv_std, gamma, dgamma, dbeta, dx)


def bilinear_forward(x, taps_h, taps_w):
    return _ops.bilinear_forward(x, taps_h, taps_w)


def bilinear_backward(dy, taps_h, taps_w, h, w):
    return _ops.bilinear_backward(dy, taps_h, taps_w, h, w)


def nearest_forward(x, ih, iw):
    return _ops.nearest_forward(x, ih, iw)


def nearest_backward(dy, ih, iw, h, w):
    return _ops.nearest_backward(dy, ih, iw, h, w)


def dropout_apply(x, keep, scale):
    return _ops.dropout_apply(x, keep, scale)


for _fn in (im2col, col2im, conv_direct_forward, conv_direct_backward, conv_tiled_forward, conv_tiled_weight_grad,
            conv_cin1_forward, conv_cin1_weight_grad, conv_cin1_input_grad,
            winograd_input_transform, winograd_output_transform, winograd_output_adjoint, winograd_input_adjoint, bias_act_forward,
            bias_act_channels, act_forward, act_backward, adam_update, reparameterize, kl_terms, bce_logits,
            max_pool2d_forward, max_pool2d_backward, channel_sums, channel_sq_dev, channel_dot_sums,
            batchnorm_normalise, channel_affine, batchnorm_input_grad, batchnorm_backward, groupnorm_forward,
            groupnorm_backward,
            bilinear_forward, bilinear_backward, nearest_forward, nearest_backward, dropout_apply):
    _fn.__doc__ = getattr(numpy_kernels, _fn.__name__).__doc__


def lstm_forward(gates, w_hh, reverse, h, c):
    return _ops.lstm_forward(gates, w_hh, reverse, h, c)


def lstm_backward(dh, gates, c, w_hh, reverse, dz):
    return _ops.lstm_backward(dh, gates, c, w_hh, reverse, dz)


def gru_forward(gates, w_hh_t, b_hh, reverse, h, hn):
    return _ops.gru_forward(gates, w_hh_t, b_hh, reverse, h, hn)


def gru_backward(dh, gates, hn, h, w_hh, reverse, dzx, dzh):
    return _ops.gru_backward(dh, gates, hn, h, w_hh, reverse, dzx, dzh)


for _fn in (lstm_forward, lstm_backward, gru_forward, gru_backward):
    _fn.__doc__ = getattr(numpy_kernels, _fn.__name__).__doc__

set_backend(os.environ.get("NPVAE_BACKEND", "numba"))

try:
    from . import openblas as _openblas
    _openblas.tune()
except Exception as _exc:  # a speed setting must never stop the import
    warnings.warn(f"could not set OpenBLAS's thread timeout ({_exc}); BLAS threads may spin longer "
                  "(set OPENBLAS_THREAD_TIMEOUT=4 before importing numpy instead)", RuntimeWarning, stacklevel=2)

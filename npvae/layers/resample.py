"""Upsampling of (N, C, H, W) feature maps: nearest neighbour or bilinear, PyTorch's semantics.

Both run kernels (:mod:`npvae.kernels`). Nearest: a copy of each output's source pixel,
its gradient the sum of each pixel's copies (one pass per plane in Numba; indexing, a
broadcast copy for integer factors, in the NumPy twin). Bilinear: two taps per output
along each axis in Numba, interpolation matrices and BLAS in the NumPy twin."""
from __future__ import annotations

import numpy as np

from .._kernels import kernels

from .base import Layer, backward_before_forward, expect_input, in_inference, register
from .conv import _as_spec, _pair

MODES = ("nearest", "bilinear")


def _factor_pair(value) -> tuple[float, float]:
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    ok = len(pair) == 2 and all(not isinstance(v, bool) and isinstance(v, (int, float, np.integer, np.floating))
                                and np.isfinite(v) and v > 0 for v in pair)
    if not ok:
        raise ValueError(f"Upsample scale_factor must be a positive number or a pair of them, got {value!r}")
    return float(pair[0]), float(pair[1])


def _number(v: float):
    return int(v) if float(v).is_integer() else v


def nearest_index(n_in: int, n_out: int, factor: float | None) -> np.ndarray:
    """Source index of each of ``n_out`` outputs (PyTorch's ``nearest``, float32 arithmetic)."""
    if n_out == n_in:
        return np.arange(n_out)
    if n_out == 2 * n_in:
        return np.arange(n_out) >> 1
    scale = np.float32(1.0 / factor) if factor else np.float32(n_in) / np.float32(n_out)
    src = np.floor(np.arange(n_out, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(src, n_in - 1)


def linear_taps(n_in: int, n_out: int, factor: float | None, dtype):
    """The two source indices and weights of each of ``n_out`` outputs along one axis:
    PyTorch's linear interpolation with ``align_corners=False`` (source position
    ``(i + 0.5) * scale - 0.5``, clamped at 0), in ``dtype`` arithmetic as PyTorch's."""
    t = np.dtype(dtype).type
    scale = t(1.0 / factor) if factor else t(n_in) / t(n_out)
    src = np.maximum(scale * (np.arange(n_out, dtype=dtype) + t(0.5)) - t(0.5), t(0))
    i0 = src.astype(np.int64)
    w1 = np.clip(src - i0.astype(dtype), 0, 1).astype(dtype)
    return i0, i0 + (i0 < n_in - 1), t(1) - w1, w1


@register
class Upsample(Layer):
    """(N, C, H, W) -> (N, C, OH, OW), OH = floor(H * scale_factor) or ``size[0]``.

    ``mode="nearest"``: each output pixel copies the input pixel PyTorch's ``nearest``
    picks (an integer factor repeats each pixel). ``mode="bilinear"``: PyTorch's
    bilinear interpolation with ``align_corners=False``. ``size=(OH, OW)``, when given,
    fixes the output size whatever the input's (a 3x3 map to 7x7) and overrides
    ``scale_factor``; ``scale_factor`` is a positive number or a (height, width) pair.
    No parameters, no buffers.
    """

    def __init__(self, scale_factor=2, mode: str = "nearest", size=None, rng=None, dtype=np.float32):
        super().__init__(dtype)
        if mode not in MODES:
            raise ValueError(f"Upsample mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.size = None if size is None else _pair(size, "Upsample size", 1)
        self.scale_factor = None if self.size is not None else _factor_pair(scale_factor)
        self._plan = None     # what forward keeps: the input shape and the resampling per axis

    def _out_size(self, x):
        if self.size is not None:
            return self.size
        out = tuple(int(np.floor(n * f)) for n, f in zip(x.shape[2:], self.scale_factor))
        if min(out) < 1:
            raise ValueError(f"Upsample(scale_factor={self.scale_factor}) makes an empty output from input of "
                             f"shape {x.shape}")
        return out

    def forward(self, x):
        expect_input(self, x, 4, "(N, C, H, W)")
        (h, w), (oh, ow) = x.shape[2:], self._out_size(x)
        fh, fw = self.scale_factor or (None, None)
        if self.mode == "bilinear":
            plan = (linear_taps(h, oh, fh, self.dtype), linear_taps(w, ow, fw, self.dtype))
            y = kernels.bilinear_forward(x, *plan)
        else:
            plan = (nearest_index(h, oh, fh), nearest_index(w, ow, fw))
            y = kernels.nearest_forward(x, *plan)
        self._plan = None if in_inference() else (x.shape, plan)
        return y

    def backward(self, dy):
        if self._plan is None:
            raise backward_before_forward(self)
        (n, c, h, w), plan = self._plan
        if self.mode == "bilinear":
            return kernels.bilinear_backward(dy, *plan, h, w)
        return kernels.nearest_backward(dy, *plan, h, w)

    def forget(self):
        self._plan = None

    def hyper(self):
        h = {"size": list(self.size)} if self.size is not None else \
            {"scale_factor": _as_spec(tuple(_number(f) for f in self.scale_factor))}
        h["mode"] = self.mode
        return h

"""Max and average pooling over the last two axes of (N, C, H, W), PyTorch's semantics.

Output size ``floor((H + 2 * padding - kernel) / stride) + 1`` (PyTorch's default floor
mode, no dilation); ``stride`` defaults to ``kernel_size``. Max pooling runs a kernel
(:mod:`npvae.kernels`: one pass per plane in Numba, or the NumPy twin); average pooling
is one vectorised add per kernel offset over strided views (4 for a 2x2 pool), windows
never copied.
"""
from __future__ import annotations

import numpy as np

from .._kernels import kernels

from .base import Layer, backward_before_forward, expect_input, in_inference, register
from .conv import _as_spec, _pair



class _Pool2d(Layer):
    def __init__(self, kernel_size=2, stride=None, padding=0, rng=None, dtype=np.float32):
        super().__init__(dtype)
        name = type(self).__name__
        self.kernel_size = _pair(kernel_size, f"{name} kernel_size", 1)
        self.stride = self.kernel_size if stride is None else _pair(stride, f"{name} stride", 1)
        self.padding = _pair(padding, f"{name} padding", 0)
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(f"{name} padding must be at most half the kernel size (PyTorch's rule), got "
                             f"padding={self.padding} for kernel_size={self.kernel_size}")
        self._x_shape = None

    @property
    def _geom(self):
        """kh, kw, sh, sw, ph, pw as the kernels take them."""
        return (*self.kernel_size, *self.stride, *self.padding)

    def _check(self, x):
        expect_input(self, x, 4, "(N, C, H, W)")
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        if x.shape[2] + 2 * ph < kh or x.shape[3] + 2 * pw < kw:
            raise ValueError(f"{type(self).__name__}(kernel_size={self.kernel_size}, padding={self.padding}) needs "
                             f"an input of at least {kh - 2 * ph}x{kw - 2 * pw} pixels, got shape {x.shape}")

    def forget(self):
        self._x_shape = None

    def hyper(self):
        h = {"kernel_size": _as_spec(self.kernel_size)}
        if self.stride != self.kernel_size:
            h["stride"] = _as_spec(self.stride)
        if self.padding != (0, 0):
            h["padding"] = _as_spec(self.padding)
        return h


@register
class MaxPool2d(_Pool2d):
    """(N, C, H, W) -> (N, C, OH, OW): the maximum of each window (padding counts as -inf).

    The gradient goes to the first maximum of a window in row-major order, as in
    PyTorch; a NaN in a window is its maximum. No parameters, no buffers.
    """

    def __init__(self, kernel_size=2, stride=None, padding=0, rng=None, dtype=np.float32):
        super().__init__(kernel_size, stride, padding, rng, dtype)
        self._arg = None

    def forward(self, x):
        self._check(x)
        y, arg = kernels.max_pool2d_forward(x, *self._geom)
        keep = not in_inference()
        self._x_shape, self._arg = (x.shape, arg) if keep else (None, None)
        return y

    def backward(self, dy):
        if self._arg is None:
            raise backward_before_forward(self)
        return kernels.max_pool2d_backward(dy, self._arg, self._x_shape, *self._geom)

    def forget(self):
        super().forget()
        self._arg = None


@register
class AvgPool2d(_Pool2d):
    """(N, C, H, W) -> (N, C, OH, OW): the mean of each window; zero padding counts in the
    mean (PyTorch's default ``count_include_pad=True``): every window divides by kh * kw.
    No parameters, no buffers.
    """

    def forward(self, x):
        self._check(x)
        y = kernels.avg_pool2d_forward(x, *self._geom)
        self._x_shape = None if in_inference() else x.shape
        return y

    def backward(self, dy):
        if self._x_shape is None:
            raise backward_before_forward(self)
        return kernels.avg_pool2d_backward(np.asarray(dy, dtype=self.dtype), self._x_shape, *self._geom)

"""Max and average pooling over the last two axes of (N, C, H, W), PyTorch's semantics.

Output size ``floor((H + 2 * padding - kernel) / stride) + 1`` (PyTorch's default floor
mode, no dilation); ``stride`` defaults to ``kernel_size``. Both compute with one
vectorised pass per kernel offset over strided views (4 passes for a 2x2 pool), so
the common non-overlapping case never copies windows.
"""
from __future__ import annotations

import numpy as np

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

    def _geometry(self, x):
        expect_input(self, x, 4, "(N, C, H, W)")
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        oh = (x.shape[2] + 2 * ph - kh) // sh + 1
        ow = (x.shape[3] + 2 * pw - kw) // sw + 1
        if oh < 1 or ow < 1:
            raise ValueError(f"{type(self).__name__}(kernel_size={self.kernel_size}, padding={self.padding}) needs "
                             f"an input of at least {kh - 2 * ph}x{kw - 2 * pw} pixels, got shape {x.shape}")
        return oh, ow

    def _padded(self, x, fill):
        ph, pw = self.padding
        if not (ph or pw):
            return x
        xp = np.full(x.shape[:2] + (x.shape[2] + 2 * ph, x.shape[3] + 2 * pw), fill, dtype=x.dtype)
        xp[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]] = x
        return xp

    def _windows(self, xp, oh, ow):
        """(offset index, view (N, C, oh, ow) of the input at that kernel offset) per offset."""
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        for i in range(kh):
            for j in range(kw):
                yield i * kw + j, xp[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]

    def _grad_input(self, x_shape, oh, ow, part):
        """dx from ``part(offset) -> gradient (N, C, oh, ow)`` at each kernel offset."""
        (ph, pw), (sh, sw), (kh, kw) = self.padding, self.stride, self.kernel_size
        n, c, h, w = x_shape
        dxp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=self.dtype)
        overlap = sh < kh or sw < kw
        for o, view in self._windows(dxp, oh, ow):
            if overlap:
                view += part(o)
            else:
                view[...] = part(o)
        return dxp[:, :, ph:ph + h, pw:pw + w] if (ph or pw) else dxp

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
        oh, ow = self._geometry(x)
        y = arg = None
        for o, v in self._windows(self._padded(x, -np.inf), oh, ow):
            if y is None:
                y, arg = v.copy(), np.zeros(v.shape, np.uint8 if self._kernel_area() <= 256 else np.int32)
                continue
            better = (v > y) | np.isnan(v)
            np.copyto(y, v, where=better)
            arg[better] = o
        keep = not in_inference()
        self._x_shape, self._arg = (x.shape, arg) if keep else (None, None)
        return y

    def _kernel_area(self):
        return self.kernel_size[0] * self.kernel_size[1]

    def backward(self, dy):
        if self._arg is None:
            raise backward_before_forward(self)
        zero, arg = dy.dtype.type(0), self._arg
        return self._grad_input(self._x_shape, *dy.shape[2:], lambda o: np.where(arg == o, dy, zero))

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
        oh, ow = self._geometry(x)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        if (sh, sw) == (kh, kw) and not (ph or pw):
            # non-overlapping windows: one reduction over a reshaped view
            n, c = x.shape[:2]
            windows = x[:, :, :oh * kh, :ow * kw].reshape(n, c, oh, kh, ow, kw)
            y = windows.sum(axis=(3, 5), dtype=self.dtype)
        else:
            y = None
            for _, v in self._windows(self._padded(x, 0), oh, ow):
                y = v.copy() if y is None else np.add(y, v, out=y)
        y *= self.dtype.type(1.0 / (kh * kw))
        self._x_shape = None if in_inference() else x.shape
        return y

    def backward(self, dy):
        if self._x_shape is None:
            raise backward_before_forward(self)
        g = dy * self.dtype.type(1.0 / (self.kernel_size[0] * self.kernel_size[1]))
        return self._grad_input(self._x_shape, *dy.shape[2:], lambda o: g)

"""Element-wise activations. Each keeps its output (or input) for backward.

Each also has ``forward_inplace(z, bias=None)``: ``z[:, c] <- f(z[:, c] + bias[c])`` in
place, the numbers ``forward`` gives bit for bit, keeping nothing. The convolutions call
it in inference on each chunk of their output (``Conv2d.forward(x, act=...)``), from
their worker threads, so it allocates at most chunk-sized temporaries.
"""
from __future__ import annotations

import numpy as np

from .._kernels import kernels

from .base import Layer, backward_before_forward, in_inference, register


def _add_bias(z, bias):
    """z (N, C, ...) += bias (C,) in place (nothing for None)."""
    if bias is not None:
        z += bias.reshape(-1, *(1,) * (z.ndim - 2))
    return z


def _kept(y):
    """What forward keeps: ``y``, or nothing inside ``inference()``."""
    return None if in_inference() else y


class _Elementwise(Layer):
    def __init__(self, rng=None, dtype=np.float32):
        super().__init__(dtype)
        self._y = self._x = None      # what forward keeps for backward

    def forget(self):
        self._y = self._x = None


@register
class Identity(_Elementwise):
    """``y = x``."""

    def forward(self, x):
        return x

    def forward_inplace(self, z, bias=None):
        return _add_bias(z, bias)

    def backward(self, dy):
        return dy


@register
class ReLU(_Elementwise):
    """``y = max(x, 0)``."""

    def forward(self, x):
        # One fused pass (a kernel) instead of a mask and a product; backward needs only y.
        y = kernels.act_forward(x, kernels.ACT_RELU)
        self._y = _kept(y)
        return y

    def forward_inplace(self, z, bias=None):
        return kernels.bias_act_channels(z, bias, kernels.ACT_RELU)

    def backward(self, dy):
        if self._y is None:
            raise backward_before_forward(self)
        return kernels.act_backward(dy, self._y, kernels.ACT_RELU)


@register
class LeakyReLU(Layer):
    """``y = x`` for x > 0, ``alpha * x`` otherwise."""

    def __init__(self, alpha: float = 0.01, rng=None, dtype=np.float32):
        super().__init__(dtype)
        self.alpha = float(alpha)
        self._slope = self._y = None

    def forget(self):
        self._slope = self._y = None

    def forward(self, x):
        if self.alpha >= 0:
            # One fused kernel pass; with alpha >= 0, y > 0 exactly where x > 0, so
            # backward needs only y (bit-identical to the slope-array form, which took
            # the U-Net VAE's five activations 18 ms a step at batch 128).
            self._slope = None
            y = kernels.act_forward(x, kernels.ACT_LEAKY_RELU, self.alpha)
            self._y = _kept(y)
            return y
        slope = np.where(x > 0, 1.0, self.alpha).astype(x.dtype)
        self._y, self._slope = None, _kept(slope)
        return x * slope

    def forward_inplace(self, z, bias=None):
        # x * 1 and x * alpha in the dtype, as both forms of forward compute them
        return kernels.bias_act_channels(z, bias, kernels.ACT_LEAKY_RELU, self.alpha)

    def backward(self, dy):
        if self._slope is None:
            if self._y is None:
                raise backward_before_forward(self)
            return kernels.act_backward(dy, self._y, kernels.ACT_LEAKY_RELU, self.alpha)
        return dy * self._slope

    def hyper(self):
        return {"alpha": self.alpha}


def sigmoid(x):
    """Logistic function without overflow for large |x|."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0, e) / (1.0 + e)


@register
class Sigmoid(_Elementwise):
    """``y = 1 / (1 + exp(-x))``, computed stably."""

    def forward(self, x):
        y = sigmoid(x).astype(x.dtype, copy=False)
        self._y = _kept(y)
        return y

    def forward_inplace(self, z, bias=None):
        # sigmoid()'s operations, in place: NumPy's exp (its SIMD loops, faster than
        # Numba's, whose results differ in the last bits) keeps it bit-identical.
        _add_bias(z, bias)
        e = np.abs(z)
        np.negative(e, out=e)
        np.exp(e, out=e)
        num = np.where(z >= 0, 1.0, e).astype(z.dtype, copy=False)
        e += 1.0
        return np.divide(num, e, out=z)

    def backward(self, dy):
        if self._y is None:
            raise backward_before_forward(self)
        return dy * self._y * (1 - self._y)


@register
class Tanh(_Elementwise):
    """``y = tanh(x)``."""

    def forward(self, x):
        y = np.tanh(x)
        self._y = _kept(y)
        return y

    def forward_inplace(self, z, bias=None):
        return np.tanh(_add_bias(z, bias), out=z)

    def backward(self, dy):
        if self._y is None:
            raise backward_before_forward(self)
        return dy * (1 - self._y * self._y)


@register
class Softplus(_Elementwise):
    """``y = log(1 + exp(x))``, computed stably; its derivative is sigmoid(x)."""

    def forward(self, x):
        self._x = _kept(x)
        return np.logaddexp(0, x).astype(x.dtype, copy=False)

    def forward_inplace(self, z, bias=None):
        return np.logaddexp(0, _add_bias(z, bias), out=z)

    def backward(self, dy):
        if self._x is None:
            raise backward_before_forward(self)
        return dy * sigmoid(self._x).astype(dy.dtype, copy=False)

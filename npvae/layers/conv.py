"""2-D convolution and transposed convolution (NCHW), with PyTorch's semantics and
weight layouts, implemented as im2col + one BLAS GEMM.

Speed notes (measured on the spectrogram benchmark, ``npvae.benchmark``): the
column matrices are the largest arrays of a step (up to 100 MB), so each layer
keeps them in scratch buffers reused from step to step (a fresh one costs its page
faults every time); the bias add is fused with the (O, N*P) -> (N, O, P) layout
change; and a layer with ``needs_input_grad = False`` skips the input gradient.
"""
from __future__ import annotations

import numpy as np

import kernels

from .base import Layer, default_rng, expect_input, register


def _pair(value, name: str, minimum: int) -> tuple[int, int]:
    pair = tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else (int(value), int(value))
    if len(pair) != 2 or min(pair) < minimum:
        raise ValueError(f"{name} must be an int or a pair of ints >= {minimum}, got {value!r}")
    return pair


def _as_spec(pair):
    return pair[0] if pair[0] == pair[1] else list(pair)


class _ConvBase(Layer):
    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dtype):
        super().__init__(dtype)
        if in_channels <= 0 or out_channels <= 0:
            raise ValueError(f"{type(self).__name__} needs positive channel counts, got "
                             f"in_channels={in_channels}, out_channels={out_channels}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = _pair(kernel_size, "kernel_size", 1)
        self.stride = _pair(stride, "stride", 1)
        self.padding = _pair(padding, "padding", 0)
        self.needs_input_grad = True   # False: backward fills the grads and returns None
        self._scratch = {}

    def _buffer(self, name, shape):
        """A scratch array reused between calls while its shape and dtype hold (never returned)."""
        buf = self._scratch.get(name)
        if buf is None or buf.shape != shape or buf.dtype != self.dtype:
            buf = self._scratch[name] = np.empty(shape, dtype=self.dtype)
        return buf

    def _cols_shape(self, channels, n, oh, ow):
        kh, kw = self.kernel_size
        return (channels * kh * kw, n * oh * ow)

    def _geometry(self):
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        return kh, kw, sh, sw, ph, pw

    def hyper(self):
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": _as_spec(self.kernel_size), "stride": _as_spec(self.stride),
                "padding": _as_spec(self.padding)}


@register
class Conv2d(_ConvBase):
    """Cross-correlation ``y[n, o] = b[o] + sum_c W[o, c] * x[n, c]``.

    x : (N, in_channels, H, W) -> y : (N, out_channels, OH, OW) with
    ``OH = (H + 2*padding - kernel) // stride + 1`` (likewise OW).
    ``W`` is (out_channels, in_channels, kh, kw), ``b`` is (out_channels,),
    initialised from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = in_channels*kh*kw.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 rng=None, dtype=np.float32):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dtype)
        rng = default_rng(rng)
        kh, kw = self.kernel_size
        bound = 1.0 / np.sqrt(in_channels * kh * kw)
        self.add_param("W", rng.uniform(-bound, bound, (out_channels, in_channels, kh, kw)))
        self.add_param("b", rng.uniform(-bound, bound, (out_channels,)))

    def output_shape(self, h: int, w: int) -> tuple[int, int]:
        kh, kw, sh, sw, ph, pw = self._geometry()
        if h + 2 * ph < kh or w + 2 * pw < kw:
            raise ValueError(f"Conv2d kernel {self.kernel_size} is larger than the padded input "
                             f"({h + 2 * ph}, {w + 2 * pw}); use a smaller kernel, more padding or a larger input")
        return kernels.conv_output_size(h, kh, sh, ph), kernels.conv_output_size(w, kw, sw, pw)

    def forward(self, x):
        expect_input(self, x, 4, "(N, in_channels, H, W)", 1, self.in_channels)
        n = x.shape[0]
        oh, ow = self.output_shape(*x.shape[2:])
        self._x_shape = x.shape
        self._cols = kernels.im2col(x, *self._geometry(),                # (C*kh*kw, N*OH*OW)
                                    out=self._buffer("cols", self._cols_shape(self.in_channels, n, oh, ow)))
        y2 = self._buffer("y2", (self.out_channels, n * oh * ow))
        np.matmul(self.params["W"].reshape(self.out_channels, -1), self._cols, out=y2)
        return kernels.from_channels_first(y2, (n, self.out_channels, oh, ow), self.params["b"])

    def backward(self, dy):
        dy2 = kernels.to_channels_first(dy, out=self._buffer("dy2", (self.out_channels, dy[:, 0].size)))
        np.matmul(dy2, self._cols.T, out=self.grads["W"].reshape(self.out_channels, -1))
        np.sum(dy2, axis=1, out=self.grads["b"])
        if not self.needs_input_grad:
            return None
        dcols = np.matmul(self.params["W"].reshape(self.out_channels, -1).T, dy2,
                          out=self._buffer("dcols", self._cols.shape))
        return kernels.col2im(dcols, self._x_shape, *self._geometry())


@register
class ConvTranspose2d(_ConvBase):
    """Transposed convolution, the adjoint of :class:`Conv2d` (plus a bias).

    x : (N, in_channels, H, W) -> y : (N, out_channels, OH, OW) with
    ``OH = (H - 1)*stride - 2*padding + kernel + output_padding``.
    ``W`` is (in_channels, out_channels, kh, kw) as in PyTorch, ``b`` is (out_channels,).
    ``output_padding`` must be smaller than the stride.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, rng=None, dtype=np.float32):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dtype)
        self.output_padding = _pair(output_padding, "output_padding", 0)
        if any(op >= s for op, s in zip(self.output_padding, self.stride)):
            raise ValueError(f"output_padding {self.output_padding} must be smaller than stride {self.stride}")
        rng = default_rng(rng)
        kh, kw = self.kernel_size
        bound = 1.0 / np.sqrt(out_channels * kh * kw)
        self.add_param("W", rng.uniform(-bound, bound, (in_channels, out_channels, kh, kw)))
        self.add_param("b", rng.uniform(-bound, bound, (out_channels,)))

    def output_shape(self, h: int, w: int) -> tuple[int, int]:
        kh, kw, sh, sw, ph, pw = self._geometry()
        (oph, opw) = self.output_padding
        oh, ow = (h - 1) * sh - 2 * ph + kh + oph, (w - 1) * sw - 2 * pw + kw + opw
        if oh <= 0 or ow <= 0:
            raise ValueError(f"ConvTranspose2d output would be empty ({oh}, {ow}) for input ({h}, {w}); "
                             "reduce the padding")
        return oh, ow

    def forward(self, x):
        expect_input(self, x, 4, "(N, in_channels, H, W)", 1, self.in_channels)
        n, _, h, w = x.shape
        oh, ow = self.output_shape(h, w)
        self._x2 = kernels.to_channels_first(x, out=self._buffer("x2", (self.in_channels, n * h * w)))
        cols = np.matmul(self.params["W"].reshape(self.in_channels, -1).T, self._x2,
                         out=self._buffer("cols", self._cols_shape(self.out_channels, n, h, w)))
        self._y_shape = (n, self.out_channels, oh, ow)
        y = kernels.col2im(cols, self._y_shape, *self._geometry())
        y += self.params["b"][None, :, None, None]
        return y

    def backward(self, dy):
        n, h, w = dy.shape[0], *self._in_hw(dy.shape[2:])
        dcols = kernels.im2col(dy, *self._geometry(),                    # (Cout*kh*kw, N*H*W)
                               out=self._buffer("dcols", self._cols_shape(self.out_channels, n, h, w)))
        np.matmul(self._x2, dcols.T, out=self.grads["W"].reshape(self.in_channels, -1))
        np.sum(dy, axis=(0, 2, 3), out=self.grads["b"])
        if not self.needs_input_grad:
            return None
        dx2 = np.matmul(self.params["W"].reshape(self.in_channels, -1), dcols,       # (Cin, N*H*W)
                        out=self._buffer("dx2", (self.in_channels, n * h * w)))
        return kernels.from_channels_first(dx2, (n, self.in_channels, h, w))

    def _in_hw(self, out_hw):
        kh, kw, sh, sw, ph, pw = self._geometry()
        return kernels.conv_output_size(out_hw[0], kh, sh, ph), kernels.conv_output_size(out_hw[1], kw, sw, pw)

    def hyper(self):
        h = super().hyper()
        h["output_padding"] = _as_spec(self.output_padding)
        return h

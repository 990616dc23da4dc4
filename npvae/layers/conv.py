"""2-D convolution and transposed convolution (NCHW), with PyTorch's semantics and
weight layouts.

:class:`Conv2d` computes in one of a few ways (:mod:`npvae.layers.conv_algos`): im2col
+ BLAS GEMMs (any geometry), direct kernels without columns (any geometry: at stride 1
for few output channels, at larger strides register-tiled; and for one input channel,
a network's first layer, ``cin1``), or Winograd F(2x2, 3x3) and F(4x4, 3x3) (3x3
kernels at stride 1), each on all threads or, for a small layer, on one
(``im2col@1``...). ``NPVAE_CONV_ALGO`` forces one (``im2col``, ``direct``,
``winograd``, ``winograd4``, ``cin1``, any of them with ``@1``; a layer that cannot run
it uses im2col) or, by default (``auto``), each layer times the ones it
can run on the first input of each new shape and keeps the fastest, remembered in
``~/.cache/npvae/conv_algos.json`` (``$NPVAE_CACHE_DIR``) so that later runs on the
machine choose the same. ``layer.algorithm`` names the one the last forward ran.
:class:`ConvTranspose2d` runs its forward as GEMMs and col2im; its backward (in ``auto``
mode timed the same way, ``NPVAE_CONV_ALGO=im2col`` or ``direct`` forcing one) by
im2col of the output gradient and GEMMs, or at strides above 1 by the register-tiled
direct kernels of a strided Conv2d (its input gradient is that convolution of the output
gradient with the same weights; its weight gradient, that convolution's weight gradient
with input and output swapped).

Speed notes (measured with ``npvae bench``): the column matrices are
the largest arrays of a step (up to 100 MB for a batch), so the batch is cut into
chunks of samples (about ``CHUNK_BYTES`` of columns each, at least one sample) that
``npvae.threads`` spreads over the cores: each thread does a chunk's im2col, GEMMs
and col2im while its columns are still in the CPU's cache. A chunk's columns are
``(C*kh*kw, m*OH*OW)``, one GEMM for its m samples; for m = 1 the GEMM writes the
sample's ``(O, OH*OW)`` output in place, otherwise one copy reorders it. Winograd's
input tiles are chunked the same way. A layer with ``needs_input_grad = False`` skips
the input gradient.

Inside ``npvae.layers.inference()`` (separation) a forward keeps nothing: the columns
are one chunk's per worker thread, in scratch arrays that all the layers of the model
share for the block, and ``forward(x, act=...)`` applies the activation to each chunk
of output in place as the bias is added (one pass, no new array), with the numbers of
``act.forward(layer.forward(x))``.
"""
from __future__ import annotations

import numpy as np

from .._kernels import kernels

from .. import threads
from . import conv_algos
from .base import (Layer, backward_before_forward, default_rng, expect_input, in_inference, inference_scratch,
                   register)
from .conv_algos import gemm_into_samples as _gemm_into_samples, to_rows as _to_rows

# Bytes of columns per chunk of samples (at least one sample per chunk). On a 2-core
# AMD EPYC (Zen 5, 2 MB of L2 per core; 2026-11), 2 MB and 8 MB differ by a few percent
# at most on a quiet machine: CPU time per training step on one thread, medians of
# 8-12 steps with the two sizes alternated, 2 MB / 8 MB: conv VAE 20.6-22.3 /
# 20.6-21.6 ms, music U-Net VAE 92-100 / 98-104 ms, image U-Net VAE 118-123 /
# 117-121 ms, spectrogram case 268-277 / 283-300 ms. (Under heavy load from other jobs
# the music model looked 17% faster with 2 MB: that was the load, not the chunk
# size.) Smaller chunks give the threads more pieces to share.
CHUNK_BYTES = 2 << 20


def _pair(value, name: str, minimum: int) -> tuple[int, int]:
    pair = tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else (int(value), int(value))
    if len(pair) != 2 or min(pair) < minimum:
        raise ValueError(f"{name} must be an int or a pair of ints >= {minimum}, got {value!r}")
    return pair


def _as_spec(pair):
    return pair[0] if pair[0] == pair[1] else list(pair)


class _ConvBase(Layer):
    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, bias, dtype):
        super().__init__(dtype)
        if not isinstance(bias, (bool, np.bool_)):
            raise ValueError(f"{type(self).__name__} bias must be True or False, got {bias!r}")
        self.bias = bool(bias)
        if in_channels <= 0 or out_channels <= 0:
            raise ValueError(f"{type(self).__name__} needs positive channel counts, got "
                             f"in_channels={in_channels}, out_channels={out_channels}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = _pair(kernel_size, "kernel_size", 1)
        self.stride = _pair(stride, "stride", 1)
        self.padding = _pair(padding, "padding", 0)
        self.needs_input_grad = True   # False: backward fills the grads and returns None
        self._scratch = {}
        self._x_shape = self._x3 = None   # what forward keeps (Conv2d, ConvTranspose2d)

    def forget(self):
        """Drop what forward kept and the scratch arrays (see ``Layer.forget``)."""
        self._x_shape = self._x3 = None
        for name in ("_x", "_cols", "_wino_u", "_step", "_algo"):
            self.__dict__.pop(name, None)
        self._scratch = {}

    def _forget_with(self, act):
        """An inference forward starts here: nothing of an earlier forward stays."""
        self.forget()
        if act is not None:
            act.forget()

    def _bias_act(self, y, act):
        """``y`` (m, O, ...) += b (if the layer has a bias), then ``act`` in place if given,
        in one pass where the activation has one (inference)."""
        b = self.params.get("b")
        if act is not None:
            act.forward_inplace(y, b)
        elif b is not None:
            y += b.reshape(-1, *(1,) * (y.ndim - 2))

    def bias_or_zeros(self):
        """``b``, or zeros (out_channels,) without a bias: for the kernels that add it."""
        b = self.params.get("b")
        if b is None:
            b = self._scratch.get("zero_bias")
            if b is None or b.dtype != self.dtype:
                b = self._scratch["zero_bias"] = np.zeros(self.out_channels, dtype=self.dtype)
        return b

    def bias_grad(self, dy):
        """The bias gradient ``sum(dy)`` over all axes but the channels (none without a bias)."""
        if self.bias:
            np.sum(dy, axis=(0, *range(2, dy.ndim)), out=self.grads["b"])

    def add_bias(self, bound: float, rng, n: int):
        """The bias ``b`` (n,) from U(-bound, bound), drawn after ``W`` (as PyTorch does);
        nothing when the layer has none."""
        if self.bias:
            self.add_param("b", rng.uniform(-bound, bound, (n,)))

    def _act_after(self, y, act):
        """Outside inference: ``act.forward(y)`` (the activation keeps its output)."""
        return y if act is None else act.forward(y)

    def _buffer(self, name, shape):
        """A scratch array reused between calls while its shape and dtype hold (never returned)."""
        buf = self._scratch.get(name)
        if buf is None or buf.shape != shape or buf.dtype != self.dtype:
            buf = self._scratch[name] = np.empty(shape, dtype=self.dtype)
        return buf

    def _chunk(self, n: int, rows: int, cols: int) -> int:
        """Samples per chunk when each has a (rows, cols) column matrix: at most about
        CHUNK_BYTES of columns (at least one sample), in a number of chunks that the
        worker threads share evenly (64 samples of 20 per chunk at most, on 2 threads:
        4 chunks of 16, not 20, 20, 20 and 4, which left one thread idle a quarter of
        the layer). One thread takes the largest chunks (fewer, larger GEMMs)."""
        per_sample = rows * cols * np.dtype(self.dtype).itemsize
        cap = max(1, CHUNK_BYTES // max(per_sample, 1))
        workers = threads.worker_count()
        if workers == 1:
            return min(n, cap)
        chunks = -(-(-(-n // cap)) // workers) * workers       # a multiple of the workers
        return max(1, -(-n // chunks))

    def _worker_buffers(self, name, shape, n: int, step: int):
        """One scratch array per worker thread that the ``n`` samples in chunks of ``step``
        keep busy (a batch of one uses one: separation of long songs stays small); inside
        ``inference()`` from the block's scratch, which the layers share."""
        workers = min(threads.worker_count(), -(-n // step))
        shared = inference_scratch()
        if shared is not None:
            return [shared.array(f"{name}{w}", shape, self.dtype) for w in range(workers)]
        return [self._buffer(f"{name}{w}", shape) for w in range(workers)]

    def _patch_rows(self, channels: int) -> int:
        kh, kw = self.kernel_size
        return channels * kh * kw

    def _geometry(self):
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        return kh, kw, sh, sw, ph, pw

    def hyper(self):
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": _as_spec(self.kernel_size), "stride": _as_spec(self.stride),
                "padding": _as_spec(self.padding), **({} if self.bias else {"bias": False})}


@register
class Conv2d(_ConvBase):
    """Cross-correlation ``y[n, o] = b[o] + sum_c W[o, c] * x[n, c]`` (no ``b`` with
    ``bias=False``, as before a normalisation that would remove it).

    x : (N, in_channels, H, W) -> y : (N, out_channels, OH, OW) with
    ``OH = (H + 2*padding - kernel) // stride + 1`` (likewise OW).
    ``W`` is (out_channels, in_channels, kh, kw), ``b`` is (out_channels,) (absent with
    ``bias=False``),
    initialised from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = in_channels*kh*kw.

    ``algorithm`` names how the last forward computed (``"im2col"``, ``"direct"``,
    ``"winograd"``, ``"winograd4"``, ``"cin1"``, or one of them with ``"@1"``; None
    before the first), see the module docstring.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 rng=None, dtype=np.float32):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, bias, dtype)
        rng = default_rng(rng)
        kh, kw = self.kernel_size
        bound = 1.0 / np.sqrt(in_channels * kh * kw)
        self.add_param("W", rng.uniform(-bound, bound, (out_channels, in_channels, kh, kw)))
        self.add_bias(bound, rng, out_channels)
        self.algorithm = None

    def output_shape(self, h: int, w: int) -> tuple[int, int]:
        kh, kw, sh, sw, ph, pw = self._geometry()
        if h + 2 * ph < kh or w + 2 * pw < kw:
            raise ValueError(f"Conv2d kernel {self.kernel_size} is larger than the padded input "
                             f"({h + 2 * ph}, {w + 2 * pw}); use a smaller kernel, more padding or a larger input")
        return kernels.conv_output_size(h, kh, sh, ph), kernels.conv_output_size(w, kw, sw, pw)

    def forward(self, x, act=None):
        """x : (N, in_channels, H, W) -> y (N, out_channels, OH, OW); ``act`` (an activation
        layer of :mod:`npvae.layers.activations`, optional) gives ``act.forward(y)`` instead,
        fused in inference (see the module docstring)."""
        expect_input(self, x, 4, "(N, in_channels, H, W)", 1, self.in_channels)
        self.output_shape(*x.shape[2:])                    # a too-small input fails here, before any timing
        algo = conv_algos.choose(self, x)
        if not in_inference():
            return self._act_after(self._forward_with(algo, x), act)
        self._forget_with(act)
        self.algorithm = algo.name
        return algo.forward(self, x, *self.output_shape(*x.shape[2:]), keep=False, act=act)

    def _forward_with(self, algo, x):
        oh, ow = self.output_shape(*x.shape[2:])
        self._x_shape = x.shape
        self._algo, self.algorithm = algo, algo.name
        return algo.forward(self, x, oh, ow)

    def backward(self, dy):
        if self._x_shape is None:
            raise backward_before_forward(self)
        return self._algo.backward(self, dy)


@register
class ConvTranspose2d(_ConvBase):
    """Transposed convolution, the adjoint of :class:`Conv2d` (plus a bias, unless ``bias=False``).

    x : (N, in_channels, H, W) -> y : (N, out_channels, OH, OW) with
    ``OH = (H - 1)*stride - 2*padding + kernel + output_padding``.
    ``W`` is (in_channels, out_channels, kh, kw) as in PyTorch, ``b`` is (out_channels,)
    (absent with ``bias=False``).
    ``output_padding`` must be smaller than the stride.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, bias=True, rng=None, dtype=np.float32):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, bias, dtype)
        self.output_padding = _pair(output_padding, "output_padding", 0)
        if any(op >= s for op, s in zip(self.output_padding, self.stride)):
            raise ValueError(f"output_padding {self.output_padding} must be smaller than stride {self.stride}")
        rng = default_rng(rng)
        kh, kw = self.kernel_size
        bound = 1.0 / np.sqrt(out_channels * kh * kw)
        self.add_param("W", rng.uniform(-bound, bound, (in_channels, out_channels, kh, kw)))
        self.add_bias(bound, rng, out_channels)
        self.algorithm = None           # how the last training forward's backward computes

    def output_shape(self, h: int, w: int) -> tuple[int, int]:
        kh, kw, sh, sw, ph, pw = self._geometry()
        (oph, opw) = self.output_padding
        oh, ow = (h - 1) * sh - 2 * ph + kh + oph, (w - 1) * sw - 2 * pw + kw + opw
        if oh <= 0 or ow <= 0:
            raise ValueError(f"ConvTranspose2d output would be empty ({oh}, {ow}) for input ({h}, {w}); "
                             "reduce the padding")
        return oh, ow

    def forward(self, x, act=None):
        """x : (N, in_channels, H, W) -> y (N, out_channels, OH, OW); ``act`` (an activation
        layer of :mod:`npvae.layers.activations`, optional) gives ``act.forward(y)`` instead,
        fused in inference (see the module docstring)."""
        expect_input(self, x, 4, "(N, in_channels, H, W)", 1, self.in_channels)
        oh, ow = self.output_shape(*x.shape[2:])
        if in_inference():          # every algorithm's forward is the same: nothing to choose
            self._forget_with(act)
            return self.forward_columns(x, oh, ow, keep=False, act=act)
        return self._act_after(self._forward_with(conv_algos.choose(self, x), x), act)

    def _forward_with(self, algo, x):
        self._algo, self.algorithm = algo, algo.name
        return algo.forward(self, x, *self.output_shape(*x.shape[2:]))

    def forward_columns(self, x, oh, ow, keep=True, act=None):
        """The output by GEMMs into columns and col2im, a chunk of samples per thread (every
        algorithm's forward); with ``keep`` the input is kept for the backward pass, else
        ``act`` is applied to each chunk in place."""
        n, c, h, w = x.shape
        k, p = self._patch_rows(self.out_channels), h * w
        x3 = np.ascontiguousarray(x, dtype=self.dtype).reshape(n, c, p)
        if keep:
            self._x3 = x3                                   # for the weight gradient
        fused = None if keep else act
        w2t = self.params["W"].reshape(c, k).T
        y = np.empty((n, self.out_channels, oh, ow), dtype=self.dtype)
        step = self._chunk(n, k, p)
        x_rows = self._worker_buffers("x_rows", (c, step * p), n, step) if step > 1 else None   # else views
        cols = self._worker_buffers("cols", (k, step * p), n, step)

        def work(part, worker):
            m = part.stop - part.start
            cl = cols[worker][:, : m * p]
            np.matmul(w2t, _to_rows(x3[part], x_rows and x_rows[worker]), out=cl)
            kernels.col2im(cl, (m, *y.shape[1:]), *self._geometry(), out=y[part])
            self._bias_act(y[part], fused)

        threads.for_each_chunk(n, step, work)
        return y

    def backward(self, dy):
        if self._x3 is None:
            raise backward_before_forward(self)
        return self._algo.backward(self, dy)

    def backward_columns(self, dy):
        """The gradients by im2col of ``dy`` and two GEMMs, a chunk of samples per thread."""
        n, c = dy.shape[0], self.in_channels
        h, w = self._in_hw(dy.shape[2:])
        k, p = self._patch_rows(self.out_channels), h * w
        w2 = self.params["W"].reshape(c, k)
        step = self._chunk(n, k, p)
        per_chunk = self._buffer("dW_per_chunk", (-(-n // step), k, c))   # transposed, as in Conv2d
        dx = np.empty((n, c, h, w), dtype=self.dtype) if self.needs_input_grad else None
        dx3 = dx.reshape(n, c, p) if dx is not None else None
        rows = self._worker_buffers("rows", (c, step * p), n, step)
        dcols = self._worker_buffers("dcols", (k, step * p), n, step)

        def work(part, worker):
            m = part.stop - part.start
            dc = dcols[worker][:, : m * p]
            kernels.im2col(dy[part], *self._geometry(), out=dc)                   # (Cout*kh*kw, m*H*W)
            np.matmul(dc, _to_rows(self._x3[part], rows[worker]).T, out=per_chunk[part.start // step])
            if dx is not None:
                _gemm_into_samples(w2, dc, dx3[part], rows[worker])

        threads.for_each_chunk(n, step, work)
        np.sum(per_chunk, axis=0, out=self.grads["W"].reshape(c, k).T)
        self.bias_grad(dy)
        return dx

    def _in_hw(self, out_hw):
        kh, kw, sh, sw, ph, pw = self._geometry()
        return kernels.conv_output_size(out_hw[0], kh, sh, ph), kernels.conv_output_size(out_hw[1], kw, sw, pw)

    def hyper(self):
        h = super().hyper()
        h["output_padding"] = _as_spec(self.output_padding)
        return h

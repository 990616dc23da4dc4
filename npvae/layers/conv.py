"""2-D convolution and transposed convolution (NCHW), with PyTorch's semantics and
weight layouts, implemented as im2col + BLAS GEMMs.

Speed notes (measured with ``npvae bench``): the column matrices are
the largest arrays of a step (up to 100 MB for a batch), so the batch is cut into
chunks of samples (about ``CHUNK_BYTES`` of columns each, at least one sample) that
``npvae.parallel`` spreads over the cores: each thread does a chunk's im2col, GEMMs
and col2im while its columns are still in the CPU's cache. A chunk's columns are
``(C*kh*kw, m*OH*OW)``, one GEMM for its m samples; for m = 1 the GEMM writes the
sample's ``(O, OH*OW)`` output in place, otherwise one copy reorders it. A layer
with ``needs_input_grad = False`` skips the input gradient.
"""
from __future__ import annotations

import numpy as np

from .. import kernels

from .. import parallel
from .base import Layer, backward_before_forward, default_rng, expect_input, register

# Bytes of columns per chunk of samples (at least one sample per chunk). On a 2-core
# AMD EPYC (Zen 5, 2 MB of L2 per core; 2026-11), 2 MB and 8 MB differ by a few percent
# at most on a quiet machine: CPU time per training step on one thread, medians of
# 8-12 steps with the two sizes alternated, 2 MB / 8 MB: conv VAE 20.6-22.3 /
# 20.6-21.6 ms, Part II U-Net VAE 92-100 / 98-104 ms, Part I U-Net VAE 118-123 /
# 117-121 ms, spectrogram case 268-277 / 283-300 ms. (Under heavy load from other jobs
# the Part II model looked 17% faster with 2 MB: that was the load, not the chunk
# size.) Smaller chunks give the threads more pieces to share.
CHUNK_BYTES = 2 << 20

# A stride-1 Conv2d with at most this many output channels skips im2col and runs the
# direct kernels (kernels.conv_direct_*): its GEMM would have one or two rows, so
# writing and reading the columns cost far more than the arithmetic. The Part I
# U-Net's last layer (33 -> 1 channels, 3x3, batch 128), forward + backward on one
# thread: 76 -> 13 ms.
DIRECT_MAX_OUT = 2


def _pair(value, name: str, minimum: int) -> tuple[int, int]:
    pair = tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else (int(value), int(value))
    if len(pair) != 2 or min(pair) < minimum:
        raise ValueError(f"{name} must be an int or a pair of ints >= {minimum}, got {value!r}")
    return pair


def _to_rows(a3, scratch):
    """(m, R, P) -> (R, m*P): a view when m == 1, else a copy into ``scratch``."""
    m, r, p = a3.shape
    if m == 1:
        return a3[0]
    out = scratch[:, : m * p]
    out.reshape(r, m, p)[...] = a3.transpose(1, 0, 2)
    return out


def _gemm_into_samples(a, b, out3, scratch):
    """``out3`` (m, R, P) = ``a @ b`` with ``b`` (K, m*P), through ``scratch`` (R, >= m*P)
    unless m == 1."""
    m, r, p = out3.shape
    if m == 1:
        np.matmul(a, b, out=out3[0])
        return
    tmp = scratch[:, : m * p]
    np.matmul(a, b, out=tmp)
    out3[...] = tmp.reshape(r, m, p).transpose(1, 0, 2)


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
        self._direct_pass = False      # whether the last forward ran the direct kernels
        self._x_shape = self._x3 = None   # what forward keeps (Conv2d, ConvTranspose2d)

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
        workers = parallel.worker_count()
        if workers == 1:
            return min(n, cap)
        chunks = -(-(-(-n // cap)) // workers) * workers       # a multiple of the workers
        return max(1, -(-n // chunks))

    def _worker_buffers(self, name, shape, n: int, step: int):
        """One scratch array per worker thread that the ``n`` samples in chunks of ``step``
        keep busy (a batch of one uses one: separation of long songs stays small)."""
        workers = min(parallel.worker_count(), -(-n // step))
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

    def _direct(self) -> bool:
        return self.stride == (1, 1) and self.out_channels <= DIRECT_MAX_OUT

    def forward(self, x):
        expect_input(self, x, 4, "(N, in_channels, H, W)", 1, self.in_channels)
        n = x.shape[0]
        oh, ow = self.output_shape(*x.shape[2:])
        o, k, p = self.out_channels, self._patch_rows(self.in_channels), oh * ow
        self._x_shape = x.shape
        self._direct_pass = self._direct()
        if self._direct_pass:
            return self._forward_direct(x, oh, ow)
        step = self._step = self._chunk(n, k, p)
        self._cols = cols = self._buffer("cols", (n * k * p,))    # kept for the weight gradient
        w2, b = self.params["W"].reshape(o, k), self.params["b"][:, None]
        out = self._worker_buffers("out", (o, step * p), n, step)
        y = np.empty((n, o, oh, ow), dtype=self.dtype)
        y3 = y.reshape(n, o, p)

        def work(part, worker):
            c = cols[part.start * k * p: part.stop * k * p].reshape(k, -1)     # (k, m*p)
            kernels.im2col(x[part], *self._geometry(), out=c)
            _gemm_into_samples(w2, c, y3[part], out[worker])
            y3[part] += b

        parallel.for_each_chunk(n, step, work)
        return y

    def _forward_direct(self, x, oh, ow):
        n = x.shape[0]
        self._x = x                                   # kept for the gradients
        self._step = -(-n // parallel.worker_count())
        y = np.empty((n, self.out_channels, oh, ow), dtype=self.dtype)
        w, b = self.params["W"], self.params["b"]

        def work(part, worker):
            kernels.conv_direct_forward(x[part], w, b, 1, 1, *self.padding, out=y[part])

        parallel.for_each_chunk(n, self._step, work)
        return y

    def _backward_direct(self, dy):
        n, step = dy.shape[0], self._step
        dy = np.ascontiguousarray(dy, dtype=self.dtype)
        w = self.params["W"]
        per_chunk = self._buffer("dW_direct", (-(-n // step), *w.shape))
        dx = np.empty(self._x_shape, dtype=self.dtype) if self.needs_input_grad else None

        def work(part, worker):
            kernels.conv_direct_backward(self._x[part], w, dy[part], 1, 1, *self.padding,
                                         per_chunk[part.start // step], None if dx is None else dx[part])

        parallel.for_each_chunk(n, step, work)
        np.sum(per_chunk, axis=0, out=self.grads["W"])
        np.sum(dy, axis=(0, 2, 3), out=self.grads["b"])
        return dx

    def backward(self, dy):
        if self._x_shape is None:
            raise backward_before_forward(self)
        if self._direct_pass:
            return self._backward_direct(dy)
        n, o = dy.shape[:2]
        dy3 = np.ascontiguousarray(dy, dtype=self.dtype).reshape(n, o, -1)
        p = dy3.shape[2]
        k, step = self._patch_rows(self.in_channels), self._step
        per_chunk = self._buffer("dW_per_chunk", (-(-n // step), k, o))   # transposed: see below
        w2t = self.params["W"].reshape(o, k).T
        dx = np.empty(self._x_shape, dtype=self.dtype) if self.needs_input_grad else None
        dy_rows = self._worker_buffers("dy_rows", (o, step * p), n, step)
        dcols = self._worker_buffers("dcols", (k, step * p), n, step) if dx is not None else None

        def work(part, worker):
            m = part.stop - part.start
            c = self._cols[part.start * k * p: part.stop * k * p].reshape(k, -1)
            d2 = _to_rows(dy3[part], dy_rows[worker])                          # (o, m*p)
            # dW^T = cols @ dy^T: OpenBLAS runs this orientation faster than dy @ cols^T.
            np.matmul(c, d2.T, out=per_chunk[part.start // step])
            if dx is not None:
                dc = dcols[worker][:, : m * p]
                np.matmul(w2t, d2, out=dc)
                kernels.col2im(dc, (m, *self._x_shape[1:]), *self._geometry(), out=dx[part])

        parallel.for_each_chunk(n, step, work)
        np.sum(per_chunk, axis=0, out=self.grads["W"].reshape(o, k).T)
        np.sum(dy3, axis=(0, 2), out=self.grads["b"])
        return dx


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
        n, c, h, w = x.shape
        oh, ow = self.output_shape(h, w)
        k, p = self._patch_rows(self.out_channels), h * w
        x3 = self._x3 = np.ascontiguousarray(x, dtype=self.dtype).reshape(n, c, p)   # for the weight gradient
        w2t, b = self.params["W"].reshape(c, k).T, self.params["b"][:, None, None]
        y = np.empty((n, self.out_channels, oh, ow), dtype=self.dtype)
        step = self._chunk(n, k, p)
        x_rows = self._worker_buffers("x_rows", (c, step * p), n, step)
        cols = self._worker_buffers("cols", (k, step * p), n, step)

        def work(part, worker):
            m = part.stop - part.start
            cl = cols[worker][:, : m * p]
            np.matmul(w2t, _to_rows(x3[part], x_rows[worker]), out=cl)
            kernels.col2im(cl, (m, *y.shape[1:]), *self._geometry(), out=y[part])
            y[part] += b

        parallel.for_each_chunk(n, step, work)
        return y

    def backward(self, dy):
        if self._x3 is None:
            raise backward_before_forward(self)
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

        parallel.for_each_chunk(n, step, work)
        np.sum(per_chunk, axis=0, out=self.grads["W"].reshape(c, k).T)
        np.sum(dy, axis=(0, 2, 3), out=self.grads["b"])
        return dx

    def _in_hw(self, out_hw):
        kh, kw, sh, sw, ph, pw = self._geometry()
        return kernels.conv_output_size(out_hw[0], kh, sh, ph), kernels.conv_output_size(out_hw[1], kw, sw, pw)

    def hyper(self):
        h = super().hyper()
        h["output_padding"] = _as_spec(self.output_padding)
        return h

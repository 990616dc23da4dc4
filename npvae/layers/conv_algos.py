"""How a :class:`~npvae.layers.Conv2d` computes, and which way it takes for an input.

Algorithms (each a forward and a backward over chunks of samples that
``npvae.threads`` shares among the threads; all give the same results to float
rounding):

* ``im2col``: columns of patches and one GEMM per chunk. Any geometry.
* ``direct``: direct kernels, no columns of the input. At stride 1
  ``kernels.conv_direct_*`` (for few output channels); at other strides the
  register-tiled ``kernels.conv_tiled_*`` for the output and the weight gradient, and
  for the input gradient im2col's GEMM into columns and col2im.
* ``winograd``: Winograd F(2x2, 3x3): 16 GEMMs of (O x C) @ (C x tiles) between a
  transform of the input's 4x4 tiles and one of the output's 2x2 tiles. 3x3 kernels,
  stride 1, any padding.
* ``winograd4``: Winograd F(4x4, 3x3) (6x6 tiles, 36 GEMMs, fewer multiplications and
  larger float32 rounding errors, about 1e-6 relative against 1e-7). Same layers.
* ``cin1``: direct kernels for a layer of one input channel (a network's first layer),
  any kernel, stride and padding. Such a layer does only kh*kw multiply-adds per output
  value, so its time is writing the output; im2col would write and read kh*kw columns
  per output pixel for a GEMM whose inner dimension (kh*kw) is too short for BLAS.
  ``kernels.conv_cin1_forward`` reads the input once, split by phase, and writes each
  output value once, in tiles of output channels x SIMD vectors along output rows summed
  in registers; ``kernels.conv_cin1_weight_grad`` sweeps the same vectors for the
  weight and bias gradients, ``kernels.conv_cin1_input_grad`` makes the input gradient
  from whole rows of the output gradient. Offered only when ``in_channels == 1``.
* ``<name>@1`` (``im2col@1``, ...): any of these on the calling thread alone, for
  layers too small to share between threads.

``NPVAE_CONV_ALGO`` picks one: ``auto`` (the default) or an algorithm's name. A named
algorithm runs wherever it can; a layer it cannot run (``winograd`` for a 5x5 kernel or
at stride 2, ``cin1`` with more than one input channel) uses ``im2col``. In ``auto``
mode the first forward of a layer on an input of a new shape times each algorithm it can
run (``direct`` at stride 1 only up to ``DIRECT_AUTO_MAX_OUT`` output channels, beyond
which it is much slower and costly to time; on more than one thread, for layers under
``ONE_THREAD_MAX_FLOPS``, each also on one thread) for a forward and a backward pass on
copies of the layer and a fixed output gradient, and keeps the fastest, in memory and in
``$NPVAE_CACHE_DIR/conv_algos.json`` (default ``~/.cache/npvae/conv_algos.json``), so
that later runs on this machine take the same algorithm without timing: the choice
changes float rounding, and a run must be reproducible. A cache file that cannot be read
or written costs a warning, never the run. The key is the layer's geometry, channels,
input shape, dtype, thread count, backend, and whether the layer computes its input
gradient. Inside ``npvae.layers.inference()`` a layer takes the same choice, timed the
same way (with a backward), so that a model gives the same numbers in inference as in
training.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from .. import threads
from .._kernels import kernels
from .base import inference

WINOGRAD = kernels.numpy_kernels.WINOGRAD

ENV_VAR = "NPVAE_CONV_ALGO"
CACHE_ENV_VAR = "NPVAE_CACHE_DIR"
CACHE_NAME = "conv_algos.json"
CACHE_FORMAT = "npvae conv algorithms"

# In auto mode the stride-1 direct kernels are timed only for layers with at most this
# many output channels: their cost grows with O*C, the GEMMs' far more slowly. At 2
# outputs they win by far (the image U-Net's last layer, 33 -> 1, 3x3, batch 128,
# forward + backward on one thread: im2col 76 ms, direct 13 ms); at 8 (16 -> 8, 28x28, batch
# 128) they took about as long as im2col (62 vs 63-73 ms, under load), so wider layers
# are not worth the time of timing them.
DIRECT_AUTO_MAX_OUT = 8

# Timing in auto mode (see measure): an untimed run, then up to REPEATS rounds, the
# median kept, no new round after TIME_BUDGET_S seconds. The largest 3x3 layers of the
# shipped models take 30-100 ms for a forward and backward on one thread, so timing a
# layer costs a few tenths of a second, once per input shape on a machine.
REPEATS = 3
TIME_BUDGET_S = 0.2

# On more than one thread, layers whose forward does fewer FLOPs than this (as a plain
# convolution) are also timed on one thread. The smallest layers did not gain from a
# second thread, or lost (forward + backward, 1 / 2 threads, 2-core AMD EPYC, quiet:
# the music network's first layer, 1 -> 16 channels, 5x5 stride 2, 8 x 512 x 64,
# 52 MFLOP: 3.7 / 5.9 ms; the image U-Net's, 1 -> 24, 3x3, 128 x 28 x 28, 43 MFLOP:
# 5.9 / 5.5 ms), while every layer of 10 ms or more on one thread gained 1.16-1.76x.
ONE_THREAD_MAX_FLOPS = 200_000_000


# -- shared helpers (also used by ConvTranspose2d) ---------------------------------------

def to_rows(a3, scratch):
    """(m, R, P) -> (R, m*P): a view when m == 1, else a copy into ``scratch``."""
    m, r, p = a3.shape
    if m == 1:
        return a3[0]
    out = scratch[:, : m * p]
    out.reshape(r, m, p)[...] = a3.transpose(1, 0, 2)
    return out


def gemm_into_samples(a, b, out3, scratch):
    """``out3`` (m, R, P) = ``a @ b`` with ``b`` (K, m*P), through ``scratch`` (R, >= m*P)
    unless m == 1."""
    m, r, p = out3.shape
    if m == 1:
        np.matmul(a, b, out=out3[0])
        return
    tmp = scratch[:, : m * p]
    np.matmul(a, b, out=tmp)
    out3[...] = tmp.reshape(r, m, p).transpose(1, 0, 2)


# -- the algorithms -----------------------------------------------------------------------
#
# Each is a forward(layer, x, oh, ow) -> y that keeps what its backward(layer, dy) -> dx
# needs on the layer (``_step``, ``_cols``...), using the layer's scratch buffers. The
# backward overwrites ``layer.grads`` and returns None when ``layer.needs_input_grad``
# is False. With keep=False (inference) the forward keeps nothing, takes the columns of
# a chunk per worker, and applies ``act`` (an activation layer or None) to each chunk of
# output in place with the bias.

class Im2col:
    """Columns of patches (``kernels.im2col``) and one GEMM per chunk of samples."""

    name = "im2col"

    def valid(self, layer) -> bool:
        return True

    def forward(self, layer, x, oh, ow, keep=True, act=None):
        n = x.shape[0]
        o, k, p = layer.out_channels, layer._patch_rows(layer.in_channels), oh * ow
        step = layer._chunk(n, k, p)
        if keep:
            layer._step = step
            layer._cols = cols = layer._buffer("cols", (n * k * p,))    # kept for the weight gradient
        else:
            worker_cols = layer._worker_buffers("cols", (k * step * p,), n, step)
        w2 = layer.params["W"].reshape(o, k)
        out = layer._worker_buffers("out", (o, step * p), n, step) if step > 1 else None   # m = 1: in place
        y = np.empty((n, o, oh, ow), dtype=layer.dtype)
        y3 = y.reshape(n, o, p)

        def work(part, worker):
            m = part.stop - part.start
            c = (cols[part.start * k * p: part.stop * k * p] if keep else worker_cols[worker][: m * k * p])
            c = c.reshape(k, -1)                                               # (k, m*p)
            kernels.im2col(x[part], *layer._geometry(), out=c)
            gemm_into_samples(w2, c, y3[part], out and out[worker])
            layer._bias_act(y3[part], act)

        threads.for_each_chunk(n, step, work)
        return y

    def backward(self, layer, dy):
        n, o = dy.shape[:2]
        dy3 = np.ascontiguousarray(dy, dtype=layer.dtype).reshape(n, o, -1)
        p = dy3.shape[2]
        k, step = layer._patch_rows(layer.in_channels), layer._step
        per_chunk = layer._buffer("dW_per_chunk", (-(-n // step), k, o))   # transposed: see below
        w2t = layer.params["W"].reshape(o, k).T
        dx = np.empty(layer._x_shape, dtype=layer.dtype) if layer.needs_input_grad else None
        dy_rows = layer._worker_buffers("dy_rows", (o, step * p), n, step)
        dcols = layer._worker_buffers("dcols", (k, step * p), n, step) if dx is not None else None

        def work(part, worker):
            m = part.stop - part.start
            c = layer._cols[part.start * k * p: part.stop * k * p].reshape(k, -1)
            d2 = to_rows(dy3[part], dy_rows[worker])                          # (o, m*p)
            # dW^T = cols @ dy^T: OpenBLAS runs this orientation faster than dy @ cols^T.
            np.matmul(c, d2.T, out=per_chunk[part.start // step])
            if dx is not None:
                dc = dcols[worker][:, : m * p]
                np.matmul(w2t, d2, out=dc)
                kernels.col2im(dc, (m, *layer._x_shape[1:]), *layer._geometry(), out=dx[part])

        threads.for_each_chunk(n, step, work)
        np.sum(per_chunk, axis=0, out=layer.grads["W"].reshape(o, k).T)
        layer.bias_grad(dy3)
        return dx


def forward_by_sample_chunks(kernel, layer, x, oh, ow, keep, act):
    """The output (N, O, OH, OW) of ``kernel(x, W, b, sh, sw, ph, pw, out=y)`` run on a
    chunk of samples per thread, each chunk's activation applied while it is in cache;
    with ``keep`` the input and the chunk size are kept for the backward pass."""
    n = x.shape[0]
    step = -(-n // threads.worker_count())
    if keep:
        layer._x, layer._step = x, step
    y = np.empty((n, layer.out_channels, oh, ow), dtype=layer.dtype)
    w, b = layer.params["W"], layer.bias_or_zeros()

    def work(part, worker):
        kernel(x[part], w, b, *layer.stride, *layer.padding, out=y[part])
        if act is not None:
            act.forward_inplace(y[part])

    threads.for_each_chunk(n, step, work)
    return y


class Direct:
    """Direct kernels, a chunk of samples per thread. At stride 1 the few-output kernels
    (``kernels.conv_direct_*``) both ways; at other strides the register-tiled kernels
    (``kernels.conv_tiled_*``) for the output and the weight gradient, and im2col's
    GEMM and col2im for the input gradient: no columns of the input are made or kept."""

    name = "direct"

    def valid(self, layer) -> bool:
        return True

    def forward(self, layer, x, oh, ow, keep=True, act=None):
        kernel = kernels.conv_direct_forward if layer.stride == (1, 1) else kernels.conv_tiled_forward
        return forward_by_sample_chunks(kernel, layer, x, oh, ow, keep, act)

    def backward(self, layer, dy):
        if layer.stride != (1, 1):
            return self._strided_backward(layer, dy)
        n, step = dy.shape[0], layer._step
        dy = np.ascontiguousarray(dy, dtype=layer.dtype)
        w = layer.params["W"]
        per_chunk = layer._buffer("dW_direct", (-(-n // step), *w.shape))
        dx = np.empty(layer._x_shape, dtype=layer.dtype) if layer.needs_input_grad else None

        def work(part, worker):
            kernels.conv_direct_backward(layer._x[part], w, dy[part], 1, 1, *layer.padding,
                                         per_chunk[part.start // step], None if dx is None else dx[part])

        threads.for_each_chunk(n, step, work)
        np.sum(per_chunk, axis=0, out=layer.grads["W"])
        layer.bias_grad(dy)
        return dx

    def _strided_backward(self, layer, dy):
        """The weight gradient by ``kernels.conv_tiled_weight_grad`` (a chunk of samples per
        thread, as the forward), the input gradient as im2col's (a GEMM into columns,
        then col2im)."""
        n = dy.shape[0]
        dy = np.ascontiguousarray(dy, dtype=layer.dtype)
        w = layer.params["W"]
        step = layer._step
        per_chunk = layer._buffer("dW_direct", (-(-n // step), *w.shape))

        def weight_grad(part, worker):
            kernels.conv_tiled_weight_grad(layer._x[part], dy[part], *layer.stride, *layer.padding,
                                           per_chunk[part.start // step])

        threads.for_each_chunk(n, step, weight_grad)
        np.sum(per_chunk, axis=0, out=layer.grads["W"])
        layer.bias_grad(dy)
        return input_grad_by_columns(layer, dy) if layer.needs_input_grad else None


def input_grad_by_columns(layer, dy):
    """The input gradient (N, C, H, W) as im2col's backward makes it: per chunk of samples
    a GEMM of the weights with ``dy`` (N, O, OH, OW, C-contiguous) into columns, then col2im."""
    n, o, oh, ow = dy.shape
    k, p = layer._patch_rows(layer.in_channels), oh * ow
    rows = layer._chunk(n, k, p)
    dx = np.empty(layer._x_shape, dtype=layer.dtype)
    dy3, w2t = dy.reshape(n, o, p), layer.params["W"].reshape(o, k).T
    dy_rows = layer._worker_buffers("dy_rows", (o, rows * p), n, rows)
    dcols = layer._worker_buffers("dcols", (k, rows * p), n, rows)

    def work(part, worker):
        m = part.stop - part.start
        dc = dcols[worker][:, : m * p]
        np.matmul(w2t, to_rows(dy3[part], dy_rows[worker]), out=dc)
        kernels.col2im(dc, (m, *layer._x_shape[1:]), *layer._geometry(), out=dx[part])

    threads.for_each_chunk(n, rows, work)
    return dx


class OneInputChannel:
    """Direct kernels for a layer of one input channel (a network's first layer, any
    kernel and stride): ``kernels.conv_cin1_forward`` writes the output without columns,
    a tile of output channels x vectors along an output row at a time, and
    ``kernels.conv_cin1_weight_grad`` makes the weight and bias gradients from the same
    vectors, and ``kernels.conv_cin1_input_grad`` the input gradient (when the layer
    computes it) as multiply-adds of whole rows of the output gradient; a chunk of
    samples per thread."""

    name = "cin1"

    def valid(self, layer) -> bool:
        return layer.in_channels == 1

    def forward(self, layer, x, oh, ow, keep=True, act=None):
        return forward_by_sample_chunks(kernels.conv_cin1_forward, layer, x, oh, ow, keep, act)

    def backward(self, layer, dy):
        n, step = dy.shape[0], layer._step
        dy = np.ascontiguousarray(dy, dtype=layer.dtype)
        w = layer.params["W"]
        chunks = -(-n // step)
        dw_chunks = layer._buffer("dW_cin1", (chunks, *w.shape))
        db_chunks = layer._buffer("db_cin1", (chunks, layer.out_channels))
        dx = np.empty(layer._x_shape, dtype=layer.dtype) if layer.needs_input_grad else None

        def work(part, worker):
            i = part.start // step
            kernels.conv_cin1_weight_grad(layer._x[part], dy[part], *layer.stride, *layer.padding,
                                          dw_chunks[i], db_chunks[i])
            if dx is not None:
                kernels.conv_cin1_input_grad(dy[part], w, *layer.stride, *layer.padding, dx[part])

        threads.for_each_chunk(n, step, work)
        np.sum(dw_chunks, axis=0, out=layer.grads["W"])
        if layer.bias:
            np.sum(db_chunks, axis=0, out=layer.grads["b"])
        return dx


def winograd_weights(w, m: int):
    """The weights' transform ``G g G^T`` for F(m x m, 3x3): (O, C, 3, 3) -> (r*r, O, C),
    r = m + 2 (computed in float64, returned in ``w``'s dtype)."""
    o, c = w.shape[:2]
    g = WINOGRAD[m][1]
    u = g @ w.astype(np.float64) @ g.T                                  # (O, C, r, r)
    return np.ascontiguousarray(u.reshape(o, c, -1).transpose(2, 0, 1), dtype=w.dtype)


def winograd_weights_adjoint(du, m: int):
    """Adjoint of :func:`winograd_weights`: ``G^T du G``, (r*r, O, C) -> (O, C, 3, 3), in float64."""
    r2, o, c = du.shape
    r = m + 2
    g = WINOGRAD[m][1]
    return g.T @ du.astype(np.float64).transpose(1, 2, 0).reshape(o, c, r, r) @ g


class Winograd:
    """Winograd F(m x m, 3x3): input tiles ``B^T d B`` (``kernels.winograd_input_transform``),
    r*r GEMMs with the transformed weights ``G g G^T``, output tiles ``A^T t A``.

    Backward runs the adjoints: ``A dy A^T`` of the output gradient's tiles, then per
    tile position a GEMM with the input tiles for the weights (then ``G^T . G``) and
    one with the weights for the input (then ``B . B^T``, the overlapping tiles added
    up). Forward keeps the input, not its tiles, and backward transforms it again, a
    chunk at a time: keeping the tiles of the whole batch (4 times the input for
    F(2x2, 3x3)) and reading them back from memory cost more (128 samples, 24 -> 24
    channels, 28x28, one thread: forward 53 -> 32 ms, backward 73 -> 58 ms)."""

    def __init__(self, m: int):
        self.m = m
        self.name = "winograd" if m == 2 else f"winograd{m}"

    def valid(self, layer) -> bool:
        return layer.kernel_size == (3, 3) and layer.stride == (1, 1)

    def _tiles(self, oh, ow) -> int:
        return -(-oh // self.m) * -(-ow // self.m)

    def forward(self, layer, x, oh, ow, keep=True, act=None):
        m, r2 = self.m, (self.m + 2) ** 2
        n, c = x.shape[:2]
        o, tiles, (ph, pw) = layer.out_channels, self._tiles(oh, ow), layer.padding
        step = layer._chunk(n, r2 * (c + o), tiles)
        u = winograd_weights(layer.params["W"], m)                          # (r2, O, C)
        if keep:
            layer._x, layer._step, layer._wino_u = x, step, u               # kept for the gradients
        t_buf = layer._worker_buffers("wino_t", (r2 * o * step * tiles,), n, step)
        v_buf = layer._worker_buffers("wino_v", (r2 * c * step * tiles,), n, step)
        b = layer.bias_or_zeros()
        y = np.empty((n, o, oh, ow), dtype=layer.dtype)

        def work(part, worker):
            size = (part.stop - part.start) * tiles
            v = v_buf[worker][: r2 * c * size].reshape(r2, c, size)
            kernels.winograd_input_transform(x[part], m, ph, pw, out=v)
            t = t_buf[worker][: r2 * o * size].reshape(r2, o, size)
            np.matmul(u, v, out=t)
            kernels.winograd_output_transform(t, m, b, out=y[part])
            if act is not None:
                act.forward_inplace(y[part])

        threads.for_each_chunk(n, step, work)
        return y

    def backward(self, layer, dy):
        m, r2 = self.m, (self.m + 2) ** 2
        n, o, oh, ow = dy.shape
        c, tiles, (ph, pw), step = layer.in_channels, self._tiles(oh, ow), layer.padding, layer._step
        dy = np.ascontiguousarray(dy, dtype=layer.dtype)
        ut = layer._wino_u.transpose(0, 2, 1)                                # (r2, C, O)
        per_chunk = layer._buffer("dW_winograd", (-(-n // step), r2, c, o))  # transposed, as in im2col
        dx = np.empty(layer._x_shape, dtype=layer.dtype) if layer.needs_input_grad else None
        t_buf = layer._worker_buffers("wino_t", (r2 * o * step * tiles,), n, step)
        v_buf = layer._worker_buffers("wino_v", (r2 * c * step * tiles,), n, step)

        def work(part, worker):
            size = (part.stop - part.start) * tiles
            t = t_buf[worker][: r2 * o * size].reshape(r2, o, size)
            kernels.winograd_output_adjoint(dy[part], m, out=t)
            v = v_buf[worker][: r2 * c * size].reshape(r2, c, size)
            kernels.winograd_input_transform(layer._x[part], m, ph, pw, out=v)
            np.matmul(v, t.transpose(0, 2, 1), out=per_chunk[part.start // step])
            if dx is not None:
                dv = v                                                       # the tiles are no longer needed
                np.matmul(ut, t, out=dv)
                kernels.winograd_input_adjoint(dv, m, ph, pw, out=dx[part])

        threads.for_each_chunk(n, step, work)
        du = np.sum(per_chunk, axis=0).transpose(0, 2, 1)                    # (r2, O, C)
        layer.grads["W"][...] = winograd_weights_adjoint(du, m)
        layer.bias_grad(dy)
        return dx


class OneThread:
    """Another algorithm run on the calling thread alone (``threads.at_most(1)``): for
    layers whose chunks carry too little work to pay for the hand-off between threads.
    Named ``"<algorithm>@1"``; auto mode times it beside the others for layers under
    ``ONE_THREAD_MAX_FLOPS``."""

    def __init__(self, algo):
        self.algo = algo
        self.name = f"{algo.name}@1"

    def valid(self, layer) -> bool:
        return self.algo.valid(layer)

    def forward(self, layer, x, oh, ow, keep=True, act=None):
        with threads.at_most(1):
            return self.algo.forward(layer, x, oh, ow, keep=keep, act=act)

    def backward(self, layer, dy):
        with threads.at_most(1):
            return self.algo.backward(layer, dy)


# -- ConvTranspose2d: one forward (GEMMs into columns, col2im), two backward passes ---------

class TransposedColumns:
    """A transposed convolution's gradients by im2col of the output gradient and two
    GEMMs (:meth:`~npvae.layers.ConvTranspose2d.backward_columns`). Any geometry."""

    name = "im2col"

    def valid(self, layer) -> bool:
        return True

    def forward(self, layer, x, oh, ow, keep=True, act=None):
        return layer.forward_columns(x, oh, ow, keep=keep, act=act)

    def backward(self, layer, dy):
        return layer.backward_columns(dy)


class TransposedDirect(TransposedColumns):
    """A transposed convolution's gradients by the register-tiled direct kernels of a
    strided Conv2d, a chunk of samples per thread: the input gradient is the Conv2d of
    ``dy`` with the layer's own weights (in, out, kh, kw read as a Conv2d's out, in), at
    the layer's stride and padding; the weight gradient is that Conv2d's weight gradient
    with ``dy`` as its input and the layer's input as its output gradient. No columns.
    Strides above 1 (those kernels' case)."""

    name = "direct"

    def valid(self, layer) -> bool:
        return layer.stride != (1, 1)

    def backward(self, layer, dy):
        n, c = dy.shape[0], layer.in_channels
        h, w = layer._in_hw(dy.shape[2:])
        dy = np.ascontiguousarray(dy, dtype=layer.dtype)
        x = layer._x3.reshape(n, c, h, w)
        weights = layer.params["W"]
        step = -(-n // threads.worker_count())
        per_chunk = layer._buffer("dW_direct", (-(-n // step), *weights.shape))
        dx = np.empty((n, c, h, w), dtype=layer.dtype) if layer.needs_input_grad else None
        no_bias = np.zeros(c, dtype=layer.dtype)
        geometry = (*layer.stride, *layer.padding)

        def work(part, worker):
            kernels.conv_tiled_weight_grad(dy[part], x[part], *geometry, per_chunk[part.start // step])
            if dx is not None:
                kernels.conv_tiled_forward(dy[part], weights, no_bias, *geometry, out=dx[part])

        threads.for_each_chunk(n, step, work)
        np.sum(per_chunk, axis=0, out=layer.grads["W"])
        layer.bias_grad(dy)
        return dx


IM2COL = Im2col()
ALGORITHMS = {a.name: a for a in (IM2COL, Direct(), Winograd(2), Winograd(4), OneInputChannel())}
TRANSPOSED = {a.name: a for a in (TransposedColumns(), TransposedDirect())}
ONE_THREAD = {f"{name}@1": OneThread(a) for name, a in ALGORITHMS.items()}
TRANSPOSED_ONE_THREAD = {f"{name}@1": OneThread(a) for name, a in TRANSPOSED.items()}
CHOICES = ("auto", *ALGORITHMS, *ONE_THREAD)


def _tables(layer) -> tuple[dict, dict]:
    """(algorithms, their one-thread variants) for ``layer``: a ConvTranspose2d's or a Conv2d's."""
    if getattr(layer, "output_padding", None) is not None:
        return TRANSPOSED, TRANSPOSED_ONE_THREAD
    return ALGORITHMS, ONE_THREAD


def by_name(name: str, layer=None):
    """The algorithm called ``name`` (``"im2col"``, ..., or one of them on one thread,
    ``"im2col@1"``), of ``layer``'s kind (a Conv2d's when None)."""
    algorithms, one_thread = _tables(layer)
    return algorithms.get(name) or one_thread[name]


# -- the choice ----------------------------------------------------------------------------

def requested() -> str:
    """``NPVAE_CONV_ALGO``, checked: ``"auto"`` or an algorithm's name."""
    value = os.environ.get(ENV_VAR, "").strip().lower() or "auto"
    if value not in CHOICES:
        raise ValueError(f"{ENV_VAR}={value!r} is not one of {', '.join(CHOICES)}; "
                         f"set it to one of those or unset it (auto)")
    return value


def candidates(layer, x=None) -> list:
    """The algorithms auto mode times for ``layer`` (on input ``x``), im2col first; on
    more than one thread, for a small layer (``plain_flops`` under
    ``ONE_THREAD_MAX_FLOPS``), each of them on one thread too."""
    algorithms, one_thread = _tables(layer)
    options = [a for a in algorithms.values()
               if a.valid(layer) and (a.name != "direct" or layer.stride != (1, 1)
                                      or layer.out_channels <= DIRECT_AUTO_MAX_OUT)]
    if x is not None and threads.worker_count() > 1 and plain_flops(layer, x) < ONE_THREAD_MAX_FLOPS:
        options += [one_thread[f"{a.name}@1"] for a in options]
    return options


def plain_flops(layer, x) -> int:
    """Multiply-adds x 2 of ``layer``'s forward on ``x`` as a plain convolution (for a
    transposed one: a multiply-add per input pixel, channel pair and kernel tap)."""
    kh, kw = layer.kernel_size
    h, w = x.shape[2:] if _tables(layer)[0] is TRANSPOSED else layer.output_shape(*x.shape[2:])
    return 2 * x.shape[0] * layer.out_channels * layer.in_channels * kh * kw * h * w


def shape_key(layer, x) -> str:
    """What the choice depends on, as a string (the cache file's key)."""
    kh, kw, sh, sw, ph, pw = layer._geometry()
    n, c, h, w = x.shape
    return (f"{type(layer).__name__} k{kh}x{kw} s{sh}x{sw} p{ph}x{pw} C{c} O{layer.out_channels} "
            f"N{n} {h}x{w} {np.dtype(layer.dtype).name} threads{threads.worker_count()} "
            f"{kernels.backend()}{'' if layer.needs_input_grad else ' no-dx'}")


_chosen: dict[str, str] = {}      # key -> algorithm name, for this process
_warned: set[str] = set()


def forget() -> None:
    """Forget this process's choices (the cache file stays)."""
    _chosen.clear()


def choose(layer, x):
    """The algorithm ``layer`` runs on ``x`` (see the module docstring)."""
    want = requested()
    if want != "auto":
        algorithms, one_thread = _tables(layer)
        algo = algorithms.get(want) or one_thread.get(want)
        return algo if algo is not None and algo.valid(layer) else algorithms["im2col"]
    options = candidates(layer, x)
    if len(options) == 1:
        return options[0]
    key = shape_key(layer, x)
    name = _chosen.get(key)
    if name is None:
        names = {a.name for a in options}
        name = _read_cache().get(key, {}).get("algorithm")
        if name not in names:
            times = measure(layer, x, options)
            name = _store(key, min(times, key=times.get), times, names)
        _chosen[key] = name
    return by_name(name, layer)


def measure(layer, x, options) -> dict[str, float]:
    """Seconds per forward + backward of ``layer`` on ``x`` for each algorithm of
    ``options`` (median of a few runs), on a copy of the layer: the layer itself, its
    gradients and its buffers are left alone.

    Each algorithm first runs once untimed (which compiles its kernels and allocates
    its buffers: a first run that touches fresh memory can take three times as long);
    then they take turns, up to ``REPEATS`` rounds while ``TIME_BUDGET_S`` lasts (at
    least one), an algorithm leaving once its fastest run took more than twice the
    best median.
    """
    twin = type(layer).from_spec(layer.spec(), dtype=layer.dtype)
    for name, p in layer.params.items():
        twin.params[name][...] = p
    twin.needs_input_grad = layer.needs_input_grad
    oh, ow = layer.output_shape(*x.shape[2:])
    dy = np.random.default_rng(0).standard_normal((x.shape[0], layer.out_channels, oh, ow)).astype(layer.dtype)

    def run(algo):
        twin._forward_with(algo, x)
        twin.backward(dy)

    runs = {algo.name: [] for algo in options}
    with inference(False):          # a layer in inference takes the choice training takes
        for algo in options:
            run(algo)
        start = time.perf_counter()
        active = list(options)
        for _ in range(REPEATS):
            for algo in active:
                t0 = time.perf_counter()
                run(algo)
                runs[algo.name].append(time.perf_counter() - t0)
            if time.perf_counter() - start > TIME_BUDGET_S:
                break
            best = min(float(np.median(runs[a.name])) for a in active)
            active = [a for a in active if min(runs[a.name]) <= 2 * best]
    return {name: float(np.median(r)) for name, r in runs.items()}


# -- the cache file ------------------------------------------------------------------------

def cache_path() -> Path:
    """``$NPVAE_CACHE_DIR/conv_algos.json``, else in the user cache (``~/.cache/npvae``)."""
    from ..datapath import cache_dir
    root = os.environ.get(CACHE_ENV_VAR, "").strip()
    return (Path(root).expanduser() if root else cache_dir()) / CACHE_NAME


def _warn_once(kind: str, message: str) -> None:
    if kind not in _warned:
        _warned.add(kind)
        warnings.warn(message, RuntimeWarning, stacklevel=5)   # the caller of forward


def _read_cache(path: Path | None = None) -> dict:
    """The cache file's entries ({} when it is missing or unreadable)."""
    path = path or cache_path()
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):     # no cache yet (or no folder for one)
        return {}
    except OSError as exc:
        _warn_once(f"read {path}", f"cannot read the convolution algorithm cache {path} ({exc}); "
                   "timing the layers again")
        return {}
    try:
        data = json.loads(text)
        if data.get("format") != CACHE_FORMAT or not isinstance(data.get("layers"), dict):
            raise ValueError("not an npvae convolution algorithm cache")
        return {k: v for k, v in data["layers"].items() if isinstance(v, dict)}
    except (ValueError, AttributeError) as exc:
        _warn_once(f"corrupt {path}", f"the convolution algorithm cache {path} is damaged ({exc}); "
                   "it is ignored and will be rewritten")
        return {}


def _store(key: str, name: str, times: dict, names: set) -> str:
    """Add ``key -> name`` to the cache file and return the algorithm to use: another
    process's choice if it stored one for ``key`` meanwhile (so that both agree), else
    ``name``. A file that cannot be written costs a warning (once)."""
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path):
            entries = _read_cache(path)
            theirs = entries.get(key, {}).get("algorithm")
            if theirs in names:
                return theirs
            entries[key] = {"algorithm": name, "ms": {k: round(v * 1e3, 3) for k, v in times.items()}}
            data = {"format": CACHE_FORMAT, "version": 1, "layers": entries}
            fd, tmp = tempfile.mkstemp(prefix=".conv_algos.", suffix=".tmp", dir=path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(data, f, indent=1, sort_keys=True)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
    except OSError as exc:
        _warn_once(f"write {path}", f"cannot write the convolution algorithm cache {path} ({exc}); "
                   f"the choices hold for this process only (set {CACHE_ENV_VAR} to a writable folder)")
    return name


class _locked:
    """An exclusive lock on ``path``'s sibling ``.lock`` file while the cache is
    rewritten (where ``fcntl`` exists; elsewhere the last writer wins)."""

    def __init__(self, path: Path):
        self.path = path.with_name(path.name + ".lock")
        self.fd = None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:
            return self
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)          # closing releases the lock
        return False

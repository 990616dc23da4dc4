"""Normalisation layers: BatchNorm (batch statistics, running estimates in buffers) and
GroupNorm (statistics of each sample's channel groups, independent of the batch).

Under data-parallel training the engine sets :func:`batch_sums` to a function that sums
an array over the ranks; BatchNorm then takes its statistics (and the sums its backward
needs) over the global batch, so ``mpirun -n P`` trains as one process does. The layers
themselves know nothing of MPI.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Callable

import numpy as np

from .._kernels import kernels
from .base import Layer, backward_before_forward, in_inference, register

# A function that sums a float64 array over the ranks of a data-parallel run (None: one process).
_BATCH_SUM = contextvars.ContextVar("npvae_batch_sum", default=None)


@contextlib.contextmanager
def batch_sums(reduce: Callable[[np.ndarray], np.ndarray] | None):
    """``with batch_sums(reduce):`` BatchNorm layers in training combine their batch
    statistics with ``reduce(a)``, which must return the sum of ``a`` (a float64 array of
    the same shape on every rank) over all ranks. Every rank must then run the same
    forward and backward passes (the sums are collective). ``None`` switches it off.

    Each rank's loss is taken to be the mean over its shard (the convention of
    :class:`npvae.engine.loop.Trainer`), so a rank's gradients weigh its share of the global
    batch, as the gradient sum after the step does.
    """
    token = _BATCH_SUM.set(reduce)
    try:
        yield
    finally:
        _BATCH_SUM.reset(token)


def _reduce(a: np.ndarray) -> np.ndarray:
    reduce = _BATCH_SUM.get()
    return a if reduce is None else reduce(a)


def _channel_view(x: np.ndarray) -> np.ndarray:
    """(N, C) -> (N, C, 1); (N, C, H, W) -> (N, C, H*W) (a view of contiguous input)."""
    return x.reshape(x.shape[0], x.shape[1], -1)


def _check(layer, x, channels: int, what: str, ndims) -> None:
    name = type(layer).__name__
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name} expected a numpy array {what}, got {type(x).__name__}")
    if x.ndim not in ndims or x.shape[1] != channels:
        raise ValueError(f"{name} expected input of shape {what} with {channels} channels on axis 1, "
                         f"got shape {x.shape}")
    if x.dtype != layer.dtype:
        raise ValueError(f"{name} expected {layer.dtype} input, got {x.dtype}: cast with "
                         f"x.astype(np.{layer.dtype}) or build the layer with dtype=np.{x.dtype}")


@register
class BatchNorm(Layer):
    """``y = gamma * (x - mean) / sqrt(var + eps) + beta`` per channel.

    x : (N, C) or (N, C, H, W) -> y of the same shape; statistics over every axis but 1.
    Params ``gamma`` (C,) (ones), ``beta`` (C,) (zeros). Buffers ``running_mean`` (C,)
    (zeros) and ``running_var`` (C,) (ones).

    Training: mean and biased variance of the batch (over all ranks inside
    :func:`batch_sums`); the running estimates move by ``momentum`` towards the batch
    mean and the *unbiased* batch variance, as ``torch.nn.BatchNorm1d/2d`` do. Eval
    (``layer.eval()``): the running estimates, so the layer is a per-channel affine map
    (which :func:`npvae.layers.fold_batchnorm` folds into a preceding convolution).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, rng=None, dtype=np.float32):
        super().__init__(dtype)
        if isinstance(num_features, bool) or not isinstance(num_features, (int, np.integer)) or num_features <= 0:
            raise ValueError(f"BatchNorm needs num_features >= 1 (the channels of its input), got {num_features!r}")
        if not (np.isfinite(eps) and eps > 0):
            raise ValueError(f"BatchNorm needs eps > 0 (it keeps 1/sqrt(var + eps) finite), got {eps!r}")
        if not 0 <= momentum <= 1:
            raise ValueError(f"BatchNorm needs 0 <= momentum <= 1 (the running estimates' step), got {momentum!r}")
        self.num_features, self.eps, self.momentum = int(num_features), float(eps), float(momentum)
        c = self.num_features
        self.add_param("gamma", np.ones(c))
        self.add_param("beta", np.zeros(c))
        self.add_buffer("running_mean", np.zeros(c))
        self.add_buffer("running_var", np.ones(c))
        self._xhat = self._inv_std = None
        self._weight = 1.0        # this rank's share of the global batch (1 in one process)
        self._frozen = False      # the kept forward ran in eval mode

    def forget(self):
        self._xhat = self._inv_std = None

    def eval_affine(self) -> tuple[np.ndarray, np.ndarray]:
        """``(scale, shift)`` (C,) with eval-mode ``y = x * scale + shift`` per channel."""
        scale = self.params["gamma"] * self._running_inv_std()
        return scale, self.params["beta"] - self.buffers["running_mean"] * scale

    def _running_inv_std(self) -> np.ndarray:
        return 1 / np.sqrt(self.buffers["running_var"] + self.dtype.type(self.eps))

    def forward(self, x):
        _check(self, x, self.num_features, "(N, C) or (N, C, H, W)", (2, 4))
        x3 = _channel_view(np.ascontiguousarray(x))
        keep = not in_inference()
        y = np.empty_like(x3)
        if not self.training:
            scale, shift = self.eval_affine()
            kernels.channel_affine(x3, scale, shift, y)
            inv_std = self._running_inv_std()
            self._xhat = (x3 - self.buffers["running_mean"][:, None]) * inv_std[:, None] if keep else None
            self._inv_std, self._frozen = inv_std.astype(np.float64), True
            return y.reshape(x.shape)
        # Two passes (mean, then squared deviations) for the accuracy of the variance; under
        # data parallelism each pass's sums are over the global batch.
        local = x3.shape[0] * x3.shape[2]
        first = _reduce(np.concatenate([[float(local)], kernels.channel_sums(x3)]))
        count = first[0]
        if count < 2:
            raise ValueError(f"BatchNorm in training needs more than one value per channel, got input of shape "
                             f"{x.shape}; use a larger batch, or GroupNorm, or layer.eval()")
        mean = first[1:] / count
        var = _reduce(kernels.channel_sq_dev(x3, mean)) / count
        inv_std = 1.0 / np.sqrt(var + self.eps)
        xhat = np.empty_like(x3) if keep else None
        kernels.batchnorm_normalise(x3, mean, inv_std, self.params["gamma"], self.params["beta"], xhat, y)
        m = self.momentum
        rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
        rm[...] = (1 - m) * rm + m * mean
        rv[...] = (1 - m) * rv + m * var * (count / (count - 1))
        self._xhat, self._inv_std = (xhat, inv_std) if keep else (None, None)
        self._weight, self._frozen = local / count, False
        return y.reshape(x.shape)

    def backward(self, dy):
        if self._xhat is None:
            raise backward_before_forward(self)
        dy3 = _channel_view(np.ascontiguousarray(dy, dtype=self.dtype))
        xhat, gamma = self._xhat, self.params["gamma"]
        dx = np.empty_like(dy3)
        scale = gamma * self._inv_std
        if not self._frozen and _BATCH_SUM.get() is None:
            # One process: the sums and dx in one kernel, a channel's data read once from memory.
            sum_dy, sum_dyx = kernels.batchnorm_backward(dy3, xhat, scale, dx)
            self.grads["gamma"][...] = sum_dyx
            self.grads["beta"][...] = sum_dy
            return dx.reshape(dy.shape)
        sum_dy, sum_dyx = kernels.channel_dot_sums(dy3, xhat)
        self.grads["gamma"][...] = sum_dyx
        self.grads["beta"][...] = sum_dy
        if self._frozen:        # an eval-mode forward: a fixed affine map
            return kernels.channel_affine(dy3, scale, np.zeros_like(scale), dx).reshape(dy.shape)
        # dx = gamma * inv_std * (dy - mean(dy) - xhat * mean(dy * xhat)), the means over the
        # global batch of the global loss's gradient, which is w * dy on a rank holding the
        # share w of the batch (its loss is its shard's mean); divided by w again, since
        # this rank's dx is of its own loss: the means are the weighted sums over w * M = the
        # local count (M the global count).
        w, c = self._weight, self.num_features
        sums = _reduce(np.concatenate([w * sum_dy, w * sum_dyx]))
        local = xhat.shape[0] * xhat.shape[2]
        kernels.batchnorm_input_grad(dy3, xhat, sums[:c] / local, sums[c:] / local, scale, dx)
        return dx.reshape(dy.shape)

    def hyper(self):
        h = {"num_features": self.num_features}
        if self.eps != 1e-5:
            h["eps"] = self.eps
        if self.momentum != 0.1:
            h["momentum"] = self.momentum
        return h


@register
class GroupNorm(Layer):
    """``y = gamma * (x - mean_g) / sqrt(var_g + eps) + beta``, statistics per sample and
    group of ``num_channels / num_groups`` consecutive channels (``torch.nn.GroupNorm``).

    x : (N, C, ...) -> y of the same shape. Params ``gamma`` (C,) (ones), ``beta`` (C,)
    (zeros); no buffers; the same in training and eval (it does not look at the batch).
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, rng=None, dtype=np.float32):
        super().__init__(dtype)
        for name, v in (("num_groups", num_groups), ("num_channels", num_channels)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
                raise ValueError(f"GroupNorm needs {name} >= 1, got {v!r}")
        if num_channels % num_groups:
            raise ValueError(f"GroupNorm needs num_channels divisible by num_groups, got {num_channels} channels "
                             f"in {num_groups} groups")
        if not (np.isfinite(eps) and eps > 0):
            raise ValueError(f"GroupNorm needs eps > 0 (it keeps 1/sqrt(var + eps) finite), got {eps!r}")
        self.num_groups, self.num_channels, self.eps = int(num_groups), int(num_channels), float(eps)
        self.add_param("gamma", np.ones(num_channels))
        self.add_param("beta", np.zeros(num_channels))
        self._x = self._stats = None      # the input and its groups' (mean, inv_std), for backward

    def forget(self):
        self._x = self._stats = None

    def forward(self, x):
        _check(self, x, self.num_channels, "(N, C, ...)", range(2, 8))
        x3 = _channel_view(np.ascontiguousarray(x))
        y = np.empty_like(x3)
        stats = kernels.groupnorm_forward(x3, self.params["gamma"], self.params["beta"], self.num_groups,
                                          self.eps, y)
        # Backward recomputes xhat from x and the statistics: writing y alone here is faster.
        self._x, self._stats = (x3, stats) if not in_inference() else (None, None)
        return y.reshape(x.shape)

    def backward(self, dy):
        if self._x is None:
            raise backward_before_forward(self)
        dy3 = _channel_view(np.ascontiguousarray(dy, dtype=self.dtype))
        dx = np.empty_like(dy3)
        kernels.groupnorm_backward(dy3, self._x, *self._stats, self.params["gamma"], self.grads["gamma"],
                                   self.grads["beta"], dx)
        return dx.reshape(dy.shape)

    def hyper(self):
        h = {"num_groups": self.num_groups, "num_channels": self.num_channels}
        if self.eps != 1e-5:
            h["eps"] = self.eps
        return h


def group_count(channels: int, groups: int = 8) -> int:
    """The groups of a GroupNorm over ``channels``: the largest divisor of ``channels``
    that is at most ``groups`` (8 groups of 4 for 32 channels; 4 of 1 for 4)."""
    return max(g for g in range(1, min(groups, channels) + 1) if channels % g == 0)

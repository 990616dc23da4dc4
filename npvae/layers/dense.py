"""Fully connected layer with an optional fused activation."""
from __future__ import annotations

import numpy as np

from .._kernels import kernels

from .base import Layer, backward_before_forward, default_rng, expect_input, in_inference, register

ACTIVATIONS = {None: kernels.ACT_IDENTITY, "identity": kernels.ACT_IDENTITY, "relu": kernels.ACT_RELU,
               "leaky_relu": kernels.ACT_LEAKY_RELU, "sigmoid": kernels.ACT_SIGMOID, "tanh": kernels.ACT_TANH}


@register
class Dense(Layer):
    """``y = act(x @ W + b)``.

    x : (N, in_features) -> y : (N, out_features), or (N, T, in_features) -> (N, T,
    out_features), every step alike in one GEMM (a projection of a sequence's frames,
    after :class:`~npvae.layers.ToSequence`). ``W`` is (in_features, out_features),
    ``b`` is (out_features,), both drawn from U(-1/sqrt(in), 1/sqrt(in)) as in PyTorch.
    ``activation`` (None, "relu", "leaky_relu", "sigmoid", "tanh") is fused with the
    bias in one kernel pass; ``alpha`` is the leaky-ReLU slope.

    Set ``needs_input_grad = False`` on a first layer, whose input needs no gradient:
    backward then fills the grads and returns None, saving one GEMM.
    """

    def __init__(self, in_features: int, out_features: int, activation: str | None = None,
                 alpha: float = 0.01, rng=None, dtype=np.float32):
        super().__init__(dtype)
        if in_features <= 0 or out_features <= 0:
            raise ValueError(f"Dense needs positive sizes, got in_features={in_features}, out_features={out_features}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {[a for a in ACTIVATIONS if a]}")
        rng = default_rng(rng)
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.activation, self.alpha = activation, float(alpha)
        self._act = ACTIVATIONS[activation]
        bound = 1.0 / np.sqrt(in_features)
        self.add_param("W", rng.uniform(-bound, bound, (in_features, out_features)))
        self.add_param("b", rng.uniform(-bound, bound, (out_features,)))
        self.needs_input_grad = True
        self._dz = None   # scratch for the activation's gradient, reused while the batch shape holds
        self._x = self._y = None

    def forward(self, x):
        if isinstance(x, np.ndarray) and x.ndim == 3:
            expect_input(self, x, 3, "(N, T, in_features)", 2, self.in_features)
            return self.forward(x.reshape(-1, self.in_features)).reshape(x.shape[0], x.shape[1], -1)
        expect_input(self, x, 2, "(N, in_features)", 1, self.in_features)
        y = kernels.bias_act_forward(x @ self.params["W"], self.params["b"], self._act, self.alpha)
        keep = not in_inference()
        self._x, self._y = (x, y) if keep else (None, None)
        return y

    def forget(self):
        self._x = self._y = None

    def backward(self, dy):
        if dy.ndim == 3:
            dx = self.backward(dy.reshape(-1, self.out_features))
            return None if dx is None else dx.reshape(dy.shape[0], dy.shape[1], -1)
        if self._x is None:
            raise backward_before_forward(self)
        if self._act == kernels.ACT_IDENTITY:
            dz = dy
        else:
            if self._dz is None or self._dz.shape != dy.shape or self._dz.dtype != dy.dtype:
                self._dz = np.empty(dy.shape, dtype=dy.dtype)
            dz = kernels.act_backward(dy, self._y, self._act, self.alpha, out=self._dz)
        np.matmul(self._x.T, dz, out=self.grads["W"])
        np.sum(dz, axis=0, out=self.grads["b"])
        if not self.needs_input_grad:
            return None
        return dz @ self.params["W"].T

    def hyper(self):
        h = {"in_features": self.in_features, "out_features": self.out_features}
        if self.activation is not None:
            h["activation"] = self.activation
            if self.activation == "leaky_relu":
                h["alpha"] = self.alpha
        return h

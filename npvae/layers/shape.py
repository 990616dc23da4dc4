"""Layers that only change an array's shape."""
from __future__ import annotations

import numpy as np

from .base import Layer, backward_before_forward, register


@register
class Flatten(Layer):
    """(N, d1, d2, ...) -> (N, d1*d2*...)."""

    def __init__(self, rng=None, dtype=np.float32):
        super().__init__(dtype)
        self._shape = None

    def forward(self, x):
        if x.ndim < 2:
            raise ValueError(f"Flatten expected input of shape (N, ...), got shape {x.shape}")
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy):
        if self._shape is None:
            raise backward_before_forward(self)
        return dy.reshape(self._shape)


@register
class Reshape(Layer):
    """(N, ...) -> (N, *shape); the number of elements per sample must match."""

    def __init__(self, shape, rng=None, dtype=np.float32):
        super().__init__(dtype)
        self.shape = tuple(int(s) for s in shape)
        self._shape = None

    def forward(self, x):
        if x.ndim < 1 or int(np.prod(x.shape[1:])) != int(np.prod(self.shape)):
            raise ValueError(f"Reshape to (N, {', '.join(map(str, self.shape))}) needs "
                             f"{int(np.prod(self.shape))} values per sample, got input of shape {x.shape}")
        self._shape = x.shape
        return x.reshape((x.shape[0],) + self.shape)

    def backward(self, dy):
        if self._shape is None:
            raise backward_before_forward(self)
        return dy.reshape(self._shape)

    def hyper(self):
        return {"shape": list(self.shape)}

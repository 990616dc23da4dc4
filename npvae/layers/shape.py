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


@register
class ToSequence(Layer):
    """(N, C, F, T) -> (N, T, C*F): a feature map's frames as a sequence (channel-major
    features per frame, ``y[n, t, c*F + f] = x[n, c, f, t]``), for a recurrent layer over T."""

    def __init__(self, rng=None, dtype=np.float32):
        super().__init__(dtype)
        self._shape = None

    def forward(self, x):
        if not isinstance(x, np.ndarray) or x.ndim != 4:
            raise ValueError(f"ToSequence expected input of shape (N, C, F, T), got {getattr(x, 'shape', x)}")
        self._shape = x.shape
        n, c, f, t = x.shape
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2)).reshape(n, t, c * f)

    def backward(self, dy):
        if self._shape is None:
            raise backward_before_forward(self)
        n, c, f, t = self._shape
        return np.ascontiguousarray(dy.reshape(n, t, c, f).transpose(0, 2, 3, 1))


@register
class FromSequence(Layer):
    """(N, T, C*F) -> (N, C, F, T): the inverse of :class:`ToSequence` for ``channels`` = C
    and ``freqs`` = F."""

    def __init__(self, channels: int, freqs: int, rng=None, dtype=np.float32):
        super().__init__(dtype)
        for key, v in (("channels", channels), ("freqs", freqs)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"FromSequence needs {key} as a whole number >= 1, got {v!r}")
        self.channels, self.freqs = int(channels), int(freqs)
        self._shape = None

    def forward(self, x):
        if not isinstance(x, np.ndarray) or x.ndim != 3 or x.shape[2] != self.channels * self.freqs:
            raise ValueError(f"FromSequence expected input of shape (N, T, {self.channels * self.freqs}) "
                             f"(channels {self.channels} x freqs {self.freqs}), got {getattr(x, 'shape', x)}")
        self._shape = x.shape
        n, t, _ = x.shape
        return np.ascontiguousarray(x.reshape(n, t, self.channels, self.freqs).transpose(0, 2, 3, 1))

    def backward(self, dy):
        if self._shape is None:
            raise backward_before_forward(self)
        n, c, f, t = dy.shape
        return np.ascontiguousarray(dy.transpose(0, 3, 1, 2)).reshape(n, t, c * f)

    def hyper(self):
        return {"channels": self.channels, "freqs": self.freqs}

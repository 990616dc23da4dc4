"""Dropout: random zeroing in training, the identity in eval mode.

The masks are random numbers of the run, so they come from the run's generator, the
one the trainer checkpoints (a resumed run then draws the masks the uninterrupted run
would have drawn). A Dropout is built without one: :func:`set_noise` hands the model's
noise generator to every Dropout of a model, as the pipelines do for the latent's
noise. Under MPI that generator draws a mask for the whole batch of which each rank
keeps its samples' rows (``npvae.distributed``), so the masks are the single process's.
"""
from __future__ import annotations

import numpy as np

from .._kernels import kernels
from .base import Layer, backward_before_forward, in_inference, register

_IDENTITY = "identity"      # what forward keeps when it did not drop anything


@register
class Dropout(Layer):
    """``y = x * mask / (1 - p)`` in training, ``y = x`` in eval mode.

    x : (N, ...) -> y : same shape. ``mask`` is 0 with probability ``p`` for each
    element, or with ``channels=True`` for each whole channel of (N, C, ...) input
    (PyTorch's Dropout2d): mask (N, C, 1, 1) broadcast over the feature map. A mask
    element is kept where a uniform draw ``u`` in [0, 1) has ``u >= p``. ``p = 1``
    gives zeros in training. The mask generator is ``self.rng`` (see :func:`set_noise`).
    Forward keeps the mask as booleans (one byte an element) for backward,
    ``dx = dy * mask / (1 - p)``; both passes are one kernel call
    (:func:`npvae.kernels.dropout_apply`). No parameters, no buffers.
    """

    def __init__(self, p: float = 0.5, channels: bool = False, rng=None, dtype=np.float32):
        super().__init__(dtype)
        if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)) or not 0 <= p <= 1:
            raise ValueError(f"Dropout p must be a probability in [0, 1], got {p!r}")
        if not isinstance(channels, (bool, np.bool_)):
            raise ValueError(f"Dropout channels must be True or False, got {channels!r}")
        self.p, self.channels = float(p), bool(channels)
        self.rng = None            # the generator of the masks: set_noise(model, rng)
        self._mask = None

    def _mask_shape(self, x):
        if not self.channels:
            return x.shape
        if x.ndim < 3:
            raise ValueError(f"Dropout(channels=True) drops whole channels of (N, C, H, W) input, got shape "
                             f"{x.shape}; use channels=False for (N, features)")
        return x.shape[:2] + (1,) * (x.ndim - 2)

    def forward(self, x):
        if not isinstance(x, np.ndarray) or x.dtype != self.dtype:
            raise ValueError(f"Dropout expected a {self.dtype} numpy array, got "
                             f"{getattr(x, 'dtype', type(x).__name__)}")
        shape = self._mask_shape(x)
        if not self.training or self.p == 0:
            self._mask = None if in_inference() else _IDENTITY
            return x
        if not isinstance(self.rng, np.random.Generator):
            raise ValueError("Dropout in training mode needs the run's random generator to draw its masks from, "
                             f"got rng={self.rng!r}: call npvae.layers.set_noise(model, rng) with the generator "
                             "the run checkpoints (or model.eval() for the identity)")
        keep = self.rng.random(shape, dtype=self.dtype) >= self.dtype.type(self.p)
        self._mask = None if in_inference() else keep
        return kernels.dropout_apply(x, keep, self._scale)

    @property
    def _scale(self) -> float:
        return 0.0 if self.p == 1 else 1.0 / (1.0 - self.p)

    def backward(self, dy):
        if self._mask is None:
            raise backward_before_forward(self)
        return dy if self._mask is _IDENTITY else kernels.dropout_apply(dy, self._mask, self._scale)

    def forget(self):
        self._mask = None

    def hyper(self):
        h = {"p": self.p}
        if self.channels:
            h["channels"] = True
        return h


def set_noise(model: Layer, rng: np.random.Generator) -> int:
    """Give every :class:`Dropout` in ``model`` (its whole tree) the generator ``rng`` to
    draw masks from: the run's noise generator, which the trainer checkpoints (a
    pipeline's ``noise_rng``, shard-aware under MPI). Returns how many it set."""
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"set_noise needs a numpy.random.Generator (np.random.default_rng(seed)), "
                         f"got {type(rng).__name__}")
    count = 0
    for _, layer in model.named_layers():
        if isinstance(layer, Dropout):
            layer.rng = rng
            count += 1
    return count

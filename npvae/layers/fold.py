"""Folding eval-mode BatchNorm into the convolution before it, for inference.

In eval mode a :class:`~npvae.layers.norm.BatchNorm` is a per-channel affine map
``y = x * scale + shift``. After a convolution (whose output channel o is
``W[o] * x + b[o]``) it is the same convolution with ``W[o] * scale[o]`` and
``b[o] * scale[o] + shift[o]``: one pass over the activations fewer, no arithmetic more.
"""
from __future__ import annotations

import numpy as np

from .activations import Identity
from .base import Layer, build_layer
from .conv import Conv2d, ConvTranspose2d
from .norm import BatchNorm
from .sequential import Sequential


def _pairs(model: Layer):
    """``(sequential, i)`` for every convolution at ``sequential.layers[i]`` followed by a BatchNorm."""
    for _, layer in model.named_layers():
        if isinstance(layer, Sequential):
            for i, (a, b) in enumerate(zip(layer.layers[:-1], layer.layers[1:])):
                if isinstance(a, (Conv2d, ConvTranspose2d)) and isinstance(b, BatchNorm):
                    yield layer, i


def fold_conv_batchnorm(conv: Conv2d | ConvTranspose2d, bn: BatchNorm) -> None:
    """Make ``conv`` compute ``bn.eval()(conv(x))`` (its parameters changed in place)."""
    scale, shift = bn.eval_affine()
    axis = 0 if isinstance(conv, Conv2d) else 1        # the output channels of W
    shape = [1] * conv.params["W"].ndim
    shape[axis] = -1
    conv.params["W"] *= scale.reshape(shape)
    conv.params["b"][...] = conv.params["b"] * scale + shift


def fold_batchnorm(model: Layer) -> Layer:
    """A copy of ``model``, in eval mode, in which every BatchNorm that directly follows a
    Conv2d or ConvTranspose2d inside a Sequential is folded into the convolution's weights
    and bias and replaced by :class:`Identity`; its eval-mode outputs equal the model's
    (to rounding). ``model`` itself is left as it is. A model with nothing to fold is
    returned as it is (no copy).

    For inference only: the copy's spec and ``state_dict`` no longer hold the folded
    BatchNorms, so train and save the original.
    """
    if next(_pairs(model), None) is None:
        return model
    folded = build_layer(model.spec(), dtype=model.dtype)
    folded.load_state_dict(model.state_dict())
    for seq, i in list(_pairs(folded)):
        fold_conv_batchnorm(seq.layers[i], seq.layers[i + 1])
        seq.layers[i + 1] = Identity(dtype=seq.dtype)
    return folded.eval()

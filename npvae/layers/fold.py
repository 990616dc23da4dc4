"""Folding eval-mode BatchNorm into the convolution before it, for inference.

In eval mode a :class:`~npvae.layers.norm.BatchNorm` is a per-channel affine map
``y = x * scale + shift``. After a convolution (whose output channel o is
``W[o] * x + b[o]``) it is the same convolution with ``W[o] * scale[o]`` and
``b[o] * scale[o] + shift[o]``: one pass over the activations fewer, no arithmetic more.
A convolution without a bias (``bias=False``, the usual one before a BatchNorm) gains
one, ``shift``.
"""
from __future__ import annotations

import functools

import numpy as np

from .activations import Identity
from .base import Layer, build_layer
from .conv import Conv2d, ConvTranspose2d
from .norm import BatchNorm
from .sequential import Sequential


def _pairs(model: Layer):
    """``(conv, batchnorm, drop)`` for every BatchNorm that directly follows a convolution:
    inside a Sequential, or where a model names such pairs itself with a method
    ``batchnorm_pairs()`` yielding the same triples (the U-Net builders, whose layers are
    not in Sequentials). ``drop()`` takes the BatchNorm out of the forward pass."""
    for _, layer in model.named_layers():
        if isinstance(layer, Sequential):
            for i, (a, b) in enumerate(zip(layer.layers[:-1], layer.layers[1:])):
                if isinstance(a, (Conv2d, ConvTranspose2d)) and isinstance(b, BatchNorm):
                    yield a, b, functools.partial(_to_identity, layer, i + 1)
        own = getattr(layer, "batchnorm_pairs", None)
        if own is not None:
            yield from own()


def _to_identity(seq: Sequential, i: int) -> None:
    seq.layers[i] = Identity(dtype=seq.dtype)


def fold_conv_batchnorm(conv: Conv2d | ConvTranspose2d, bn: BatchNorm) -> None:
    """Make ``conv`` compute ``bn.eval()(conv(x))`` (its parameters changed in place)."""
    scale, shift = bn.eval_affine()
    axis = 0 if isinstance(conv, Conv2d) else 1        # the output channels of W
    shape = [1] * conv.params["W"].ndim
    shape[axis] = -1
    conv.params["W"] *= scale.reshape(shape)
    if not conv.bias:
        conv.bias = True
        conv.add_param("b", np.zeros(conv.out_channels))
    conv.params["b"][...] = conv.params["b"] * scale + shift


def fold_batchnorm(model: Layer) -> Layer:
    """A copy of ``model``, in eval mode, in which every BatchNorm that directly follows a
    Conv2d or ConvTranspose2d inside a Sequential (or in a pair a model names, see
    :func:`_pairs`) is folded into the convolution's weights and bias and taken out of the
    forward pass (a Sequential's is replaced by :class:`Identity`); its eval-mode outputs equal the model's
    (to rounding). ``model`` itself is left as it is. A model with nothing to fold is
    returned as it is (no copy).

    For inference only: the copy's spec and ``state_dict`` no longer hold the folded
    BatchNorms, so train and save the original.
    """
    if not isinstance(model, Layer) or next(_pairs(model), None) is None:   # e.g. the benchmark's PyTorch twin
        return model
    folded = build_layer(model.spec(), dtype=model.dtype)
    folded.load_state_dict(model.state_dict())
    for conv, bn, drop in list(_pairs(folded)):
        fold_conv_batchnorm(conv, bn)
        drop()
    return folded.eval()

"""The options the U-Net builders share: normalisation, downsampling, dropout.

``norm`` names what follows every convolution of a U-Net level, before its activation:
"none", "batch" (:class:`~npvae.layers.norm.BatchNorm`, batch statistics in training,
running ones in eval mode) or "group" (:class:`~npvae.layers.norm.GroupNorm`, the same
in both modes, independent of the batch size). ``down`` says how the encoder halves
its feature maps: "stride" (a strided convolution, the models' original layout), "max"
or "avg" (a 2x2 pooling; each builder's docstring says where). ``dropout`` is the
probability that a decoder feature is zeroed in training (0: no dropout layers).

A convolution followed by a norm has no bias (``norm_bias`` False, the default): the
norm subtracts the channel's mean, so a bias there would have a zero gradient plus
rounding, which Adam turns into steps of size lr (and ranks of an MPI run into
different models). ``norm_bias=True`` keeps the bias, as models written before this
option had it: a spec with a norm and no ``norm_bias`` reads as True
(:func:`spec_defaults`).
"""
from __future__ import annotations

import functools

import numpy as np

from ..layers import AvgPool2d, BatchNorm, Dropout, GroupNorm, MaxPool2d
from ..layers.norm import group_count

NORMS = ("none", "batch", "group")
DOWNS = ("stride", "max", "avg")
GROUPS = 8      # GroupNorm's groups: this many, or the largest divisor of the channels below it


def check_options(model: str, norm: str, down: str, dropout: float, groups: int = GROUPS,
                  norm_bias: bool = False) -> None:
    """Raise a ValueError naming the bad option of ``model`` (its class name) and the fix."""
    if norm not in NORMS:
        raise ValueError(f"{model}: norm must be one of {', '.join(NORMS)}, got {norm!r}")
    if down not in DOWNS:
        raise ValueError(f"{model}: down must be one of {', '.join(DOWNS)} (strided convolution, max or average "
                         f"pooling), got {down!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"{model}: dropout is the probability of zeroing a feature, in [0, 1) (0: none), "
                         f"got {dropout!r}")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{model}: groups (GroupNorm's groups) must be a whole number >= 1, got {groups!r}")
    if not isinstance(norm_bias, (bool, np.bool_)):
        raise ValueError(f"{model}: norm_bias (a bias on the convolutions a norm follows) must be True or False, "
                         f"got {norm_bias!r}")


def conv_bias(norm: str, norm_bias: bool) -> bool:
    """Whether a convolution that ``norm`` follows has a bias."""
    return norm == "none" or bool(norm_bias)


def spec_defaults(spec: dict) -> dict:
    """``spec`` with ``norm_bias`` True where it has a norm and no ``norm_bias``: the
    layout of models written before the option, whose convolutions all have a bias."""
    if spec.get("norm", "none") != "none" and "norm_bias" not in spec:
        return {**spec, "norm_bias": True}
    return spec


def make_norm(norm: str, channels: int, groups: int, dtype):
    """The normalisation layer of ``norm`` over ``channels`` channels, None for "none"."""
    if norm == "none":
        return None
    if norm == "batch":
        return BatchNorm(channels, dtype=dtype)
    return GroupNorm(group_count(channels, groups), channels, dtype=dtype)


def make_pool(down: str, dtype):
    """The 2x2 pooling of ``down`` ("max" or "avg"), None for "stride"."""
    if down == "stride":
        return None
    return (MaxPool2d if down == "max" else AvgPool2d)(2, dtype=dtype)


def make_dropout(p: float, dtype):
    """Elementwise dropout with probability ``p``, None for p = 0. Its mask generator is
    the model's (the model's ``rng`` setter hands it on)."""
    return None if p == 0 else Dropout(p, dtype=dtype)


def batchnorm_pairs(layers: dict, conv_of) -> list:
    """``(convolution, BatchNorm, drop)`` for every BatchNorm of ``layers`` (a model's dict
    of option layers, where the norm of convolution ``name`` is ``name + "_norm"``);
    ``conv_of(name)`` gives the convolution and ``drop()`` removes the BatchNorm from the
    dict, and so from the forward pass."""
    return [(conv_of(key[:-len("_norm")]), layer, functools.partial(layers.pop, key))
            for key, layer in layers.items() if key.endswith("_norm") and isinstance(layer, BatchNorm)]


def options_hyper(norm: str, down: str, dropout: float, groups: int, residual: bool = False,
                  norm_bias: bool = False) -> dict:
    """The options that differ from the defaults, for a model's ``hyper()``: a model
    without options writes the spec it always wrote."""
    out = {}
    if norm != "none":
        out["norm"] = norm
        if norm == "group" and groups != GROUPS:
            out["groups"] = groups
        out["norm_bias"] = bool(norm_bias)     # always: a spec without it reads as True
    if down != "stride":
        out["down"] = down
    if dropout:
        out["dropout"] = float(dropout)
    if residual:
        out["residual"] = True
    return out


__all__ = ["NORMS", "DOWNS", "GROUPS", "check_options", "group_count", "make_norm", "make_pool", "make_dropout",
           "batchnorm_pairs", "options_hyper", "conv_bias", "spec_defaults"]


def level_forward(layers: dict, level: str, body, x):
    """A U-Net level's frame: the pooling of an encoder level (``layers["pool3"]`` for
    "enc3"), then ``body(x)`` (the level's own work), then its dropout
    (``layers["up2_drop"]`` for "up2"); a level may have neither."""
    pool = layers.get(f"pool{level[3:]}") if level.startswith("enc") else None
    if pool is not None:
        x = pool.forward(x)
    y = body(x)
    drop = layers.get(f"{level}_drop")
    return y if drop is None else drop.forward(y)


def level_backward(layers: dict, level: str, body_backward, dy):
    """The backward of :func:`level_forward`: the same parts in reverse order."""
    drop = layers.get(f"{level}_drop")
    if drop is not None:
        dy = drop.backward(dy)
    g = body_backward(dy)
    pool = layers.get(f"pool{level[3:]}") if level.startswith("enc") else None
    return g if pool is None else pool.backward(g)


class DropoutNoise:
    """A model's ``rng``, the generator of its latent's noise, that it also gives to each
    part that draws noise (:meth:`noise_parts`: its dropout layers, or whole sub-models),
    so that one generator (the trainer's, in a run) draws all of the model's noise."""

    @property
    def rng(self):
        return self._rng

    @rng.setter
    def rng(self, value):
        self._rng = value
        for part in self.noise_parts():
            part.rng = value

    def noise_parts(self):
        """The parts that take the model's generator (none before they are built)."""
        return ()

"""Checks of a model file's contents before anything is built from them.

A model file (:mod:`npvae.files.model_file`) holds a JSON architecture record (the ``spec``) and one
tensor per parameter and buffer. A damaged or edited file must not cost gigabytes, end in a
RecursionError, or load into a model that separates into NaN, so a loader:

1. parses the spec no deeper than :data:`MAX_SPEC_DEPTH` levels (:func:`parse_spec`);
2. computes from the spec alone, allocating nothing, the shape of every parameter the
   model will have (:func:`param_shapes`), at most :data:`MAX_PARAMETERS` in all;
3. compares those shapes with the tensors the file declares, from its metadata
   (:func:`check_declared`), and only then reads them;
4. checks every tensor's values (:func:`check_values`): finite, and no larger in
   magnitude than :data:`MAX_ABS_PARAMETER` (a flipped exponent bit turns a weight of
   0.05 into 1e37, finite but enough to overflow every output).

Every error is a :class:`~npvae.errors.FileFormatError` naming the file and, where there
is one, the tensor or field. The shape rules mirror the models' constructors; a test
builds every registered layer type from several specs and compares.
"""
from __future__ import annotations

import json

import numpy as np

from ..errors import FileFormatError

MAX_PARAMETERS = 50_000_000     # 200 MB of float32 weights; the shipped models hold 0.25-1.5 M
MAX_SPEC_DEPTH = 32             # JSON nesting of a spec; the shipped models' specs nest 2 levels
MAX_ABS_PARAMETER = 1e6         # trained npvae weights stay below 10
MAX_LAYERS = 1000               # layers in a list field or a Sequential (``hidden``, ``blocks``, ``layers``)
MAX_STACKS = 8                  # U-Nets of a stacked music model (npvae.models.stacked): each a whole network

_DAMAGED = "the file was edited or damaged: use the model.h5 / results.h5 that training wrote, or train again"


class _SpecProblem(ValueError):
    """A spec field that cannot describe a model (turned into a FileFormatError by the caller)."""


# -- the spec --------------------------------------------------------------------------------
def spec_depth(obj) -> int:
    """Nesting depth of a parsed JSON value (a number is 0, ``[1]`` is 1), without recursion."""
    depth, stack = 0, [(obj, 0)]
    while stack:
        value, d = stack.pop()
        depth = max(depth, d)
        if isinstance(value, dict):
            stack.extend((v, d + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, d + 1) for v in value)
    return depth


def parse_spec(path, text) -> dict:
    """The JSON architecture record of a model file, no deeper than :data:`MAX_SPEC_DEPTH`."""
    try:
        spec = json.loads(text)
    except RecursionError:
        raise FileFormatError(f"{path}: /model/spec nests deeper than Python can parse (the limit for a spec "
                              f"is {MAX_SPEC_DEPTH} levels); {_DAMAGED}") from None
    except (TypeError, ValueError) as e:
        raise FileFormatError(f"{path}: /model/spec is not valid JSON ({e}); {_DAMAGED}") from None
    if not isinstance(spec, dict):
        raise FileFormatError(f"{path}: /model/spec is not an architecture record; {_DAMAGED}")
    check_spec_depth(path, spec)
    return spec


def check_spec_depth(path, spec) -> None:
    depth = spec_depth(spec)
    if depth > MAX_SPEC_DEPTH:
        raise FileFormatError(f"{path}: its model spec nests {depth} levels deep, more than the "
                              f"{MAX_SPEC_DEPTH} any npvae model needs (npvae.files.modelcheck.MAX_SPEC_DEPTH); "
                              f"{_DAMAGED}")


# -- parameter shapes from a spec, allocating nothing ----------------------------------------
def _get(spec: dict, key: str, default=None, required: bool = False):
    if key not in spec:
        if required:
            raise _SpecProblem(f"{spec.get('type')} has no '{key}'")
        return default
    return spec[key]


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:60] + f"... ({len(text):,} characters)"


def _at_most(spec: dict, key: str, n: int) -> None:
    if n > MAX_LAYERS:
        raise _SpecProblem(f"{spec.get('type')}.{key} asks for {n:,} layers, more than the {MAX_LAYERS} "
                           "npvae builds (npvae.files.modelcheck.MAX_LAYERS)")


def _size(spec: dict, key: str, default=None, minimum: int = 1, required: bool = False) -> int:
    value = _get(spec, key, default, required)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise _SpecProblem(f"{spec.get('type')}.{key} must be a whole number >= {minimum}, got {_short(value)}")
    return int(value)


def _sizes(spec: dict, key: str, default, count: int | None = None, minimum: int = 1) -> tuple[int, ...]:
    value = _get(spec, key, default)
    if not isinstance(value, (list, tuple)) or (count is not None and len(value) != count):
        want = f"a list of {count}" if count is not None else "a list of"
        raise _SpecProblem(f"{spec.get('type')}.{key} must be {want} whole numbers >= {minimum}, got {_short(value)}")
    _at_most(spec, key, len(value))
    return tuple(_size({"type": spec.get("type"), key: v}, key, minimum=minimum) for v in value)


def _pair(spec: dict, key: str, default, minimum: int) -> tuple[int, int]:
    value = _get(spec, key, default)
    if isinstance(value, (list, tuple)):
        return _sizes(spec, key, default, 2, minimum)
    v = _size(spec, key, default, minimum)
    return v, v


def _finite(spec: dict, key: str, default) -> float:
    value = _get(spec, key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not np.isfinite(value):
        raise _SpecProblem(f"{spec.get('type')}.{key} must be a finite number, got {_short(value)}")
    return float(value)


def _choice(spec: dict, key: str, default, allowed) -> str:
    value = _get(spec, key, default)
    if value not in allowed:
        raise _SpecProblem(f"{spec.get('type')}.{key} must be one of {list(allowed)}, got {_short(value)}")
    return value


def _prefixed(prefix: str, shapes: dict) -> dict:
    return {f"{prefix}.{k}": v for k, v in shapes.items()}


def _dense(n_in: int, n_out: int) -> dict:
    return {"W": (n_in, n_out), "b": (n_out,)}


def _conv(n_in: int, n_out: int, k, bias: bool = True) -> dict:
    kh, kw = (k, k) if isinstance(k, int) else k
    return {"W": (n_out, n_in, kh, kw), **({"b": (n_out,)} if bias else {})}


def _conv_t(n_in: int, n_out: int, k, bias: bool = True) -> dict:
    kh, kw = (k, k) if isinstance(k, int) else k
    return {"W": (n_in, n_out, kh, kw), **({"b": (n_out,)} if bias else {})}


def _flag(s, key: str, default: bool) -> bool:
    value = _get(s, key, default)
    if not isinstance(value, bool):
        raise _SpecProblem(f"{s.get('type')}.{key} must be true or false, got {_short(value)}")
    return value


def _head(n_in: int, latent: int) -> dict:
    return {**_prefixed("mu", _dense(n_in, latent)), **_prefixed("logvar", _dense(n_in, latent))}


def _rule_dense(s):
    _choice(s, "activation", None, (None, "identity", "relu", "leaky_relu", "sigmoid", "tanh"))
    _finite(s, "alpha", 0.01)
    return _dense(_size(s, "in_features", required=True), _size(s, "out_features", required=True))


def _rule_conv(s, transposed: bool):
    _get(s, "kernel_size", required=True)
    k = _pair(s, "kernel_size", None, 1)
    _pair(s, "stride", 1, 1)
    _pair(s, "padding", 0, 0)
    n_in, n_out = _size(s, "in_channels", required=True), _size(s, "out_channels", required=True)
    bias = _flag(s, "bias", True)
    return _conv_t(n_in, n_out, k, bias) if transposed else _conv(n_in, n_out, k, bias)


def _rule_sequential(s):
    layers = _get(s, "layers", required=True)
    if not isinstance(layers, list):
        raise _SpecProblem(f"Sequential.layers must be a list of layer specs, got {type(layers).__name__}")
    _at_most(s, "layers", len(layers))
    return _children({str(i): child for i, child in enumerate(layers)})


def _rule_reshape(s):
    _sizes(s, "shape", None, minimum=1)
    return {}


def _separation_common(s, output_default: str) -> tuple[int, int]:
    """latent_dim and the number of decoded images (2 for "sources", 1 for "split")."""
    _choice(s, "rule", "average", ("average", "sum"))
    output = _choice(s, "output", output_default, ("sources", "split"))
    return _size(s, "latent_dim", 32), 2 if output == "sources" else 1


def _mlp(widths, first_index: int, prefix: str) -> dict:
    out = {}
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        out.update(_prefixed(f"{prefix}.{first_index + i}", _dense(a, b)))
    return out


def _rule_dense_vae(s):
    latent, n_out = _separation_common(s, "sources")
    hidden = _sizes(s, "hidden", [512, 256])
    widths, back = (784,) + hidden, (latent,) + hidden[::-1] + (n_out * 784,)
    return {**_mlp(widths, 1, "encoder"), **_prefixed("head", _head(widths[-1], latent)), **_mlp(back, 0, "decoder")}


def _rule_conv_vae(s):
    latent, n_out = _separation_common(s, "sources")
    c1, c2 = _sizes(s, "channels", [32, 64], 2)
    hidden = _size(s, "hidden", 256)
    flat = c2 * 49
    return {**_prefixed("encoder.0", _conv(1, c1, 4)), **_prefixed("encoder.2", _conv(c1, c2, 4)),
            **_prefixed("encoder.5", _dense(flat, hidden)), **_prefixed("head", _head(hidden, latent)),
            **_prefixed("decoder.0", _dense(latent, hidden)), **_prefixed("decoder.1", _dense(hidden, flat)),
            **_prefixed("decoder.3", _conv_t(c2, c1, 4)), **_prefixed("decoder.5", _conv_t(c1, n_out, 4))}


def _options(s) -> tuple[str, str, int, bool, bool]:
    """The U-Net options of a spec (:mod:`npvae.models.options`): norm, down, groups, residual,
    and whether the convolutions a norm follows have a bias."""
    norm = _choice(s, "norm", "none", ("none", "batch", "group"))
    down = _choice(s, "down", "stride", ("stride", "max", "avg"))
    if not 0 <= _finite(s, "dropout", 0.0) < 1:
        raise _SpecProblem(f"{s.get('type')}.dropout must be in [0, 1), got {_short(s['dropout'])}")
    residual = _flag(s, "residual", False)
    bias = _flag(s, "norm_bias", True) or norm == "none"        # absent: written before the option
    return norm, down, _size(s, "groups", 8), residual, bias


def _norm_shapes(norm: str, channels: int, groups: int) -> dict:
    """The tensors of a U-Net option's normalisation over ``channels`` (none for "none")."""
    if norm == "none":
        return {}
    if norm == "batch":
        return _rule_batchnorm({"type": "BatchNorm", "num_features": channels})
    from ..layers.norm import group_count
    return _rule_groupnorm({"type": "GroupNorm", "num_groups": group_count(channels, groups),
                            "num_channels": channels})


def _rule_unet_vae(s):
    latent, n_out = _separation_common(s, "split")
    c = _sizes(s, "channels", [16, 32, 64])
    if not 2 <= len(c) <= 5:
        raise _SpecProblem(f"UNetSeparationVAE.channels must list 2 to 5 levels, got {list(c)}")
    blocks = _size(s, "blocks", 1)
    _at_most(s, "blocks", 4 * blocks)
    norm, down, groups, residual, bias = _options(s)
    if residual and blocks < 2:
        raise _SpecProblem("UNetSeparationVAE.residual needs blocks >= 2")
    n, pooled = len(c), down != "stride"
    sides = [28]
    for _ in range(n - 1):
        sides.append(sides[-1] // 2)
    bottom = c[-1] * sides[-1] ** 2
    out = {**_prefixed("enc1", _conv(1, c[0], 3, bias))}
    for i in range(1, n):
        out.update(_prefixed(f"enc{i + 1}", _conv(c[i - 1], c[i], 3 if pooled else 4, bias)))
    out.update({**_prefixed("head", _head(bottom, latent)), **_prefixed("expand", _dense(latent, bottom))})
    for i in reversed(range(n - 1)):
        out.update(_prefixed(f"up{i + 1}", _conv_t(2 * c[i + 1], c[i], 4, bias)))
    out.update(_prefixed("out", _conv(2 * c[0] + 1, n_out, 3)))
    levels = [(f"enc{i + 1}", c[i]) for i in range(n if pooled else n - 1)]
    levels += [(f"up{i + 1}", c[i]) for i in reversed(range(n - 1))]
    chains = [(width, [level] + [f"{level}_{k}" for k in range(2, blocks + 1)]) for level, width in levels]
    for width, chain in chains:
        for name in chain[1:]:
            out.update(_prefixed(name, _conv(width, width, 3, bias)))
    if not pooled:
        chains.append((c[-1], [f"enc{n}"]))       # a strided bottom level: its one convolution
    for width, chain in chains:
        for name in chain:
            out.update(_prefixed(f"{name}_norm", _norm_shapes(norm, width, groups)))
    return out


def _rule_spectrogram_unet(s):
    c = _sizes(s, "channels", [16, 32, 64])
    if len(c) < 2:
        raise _SpecProblem(f"SpectrogramUNetVAE.channels must list two or more levels, got {list(c)}")
    latent, n_sources = _size(s, "latent_channels", 32), _size(s, "n_sources", 2)
    k = _size(s, "kernel_size", 5)
    if k % 2 != 1:
        raise _SpecProblem(f"SpectrogramUNetVAE.kernel_size must be odd, got {k}")
    _finite(s, "alpha", 0.2)
    norm, _, groups, residual, bias = _options(s)
    n, c_in = len(c), _size(s, "in_channels", 1)
    out = {}
    for i in range(n):
        out.update(_prefixed(f"enc{i + 1}", _conv(c_in if i == 0 else c[i - 1], c[i], k, bias)))
    out.update(_prefixed("head", _conv(c[-1], 2 * latent, 1)))
    for i in reversed(range(n)):
        n_in = latent if i == n - 1 else 2 * c[i]
        out.update(_prefixed(f"dec{i + 1}", _conv_t(n_in, n_sources if i == 0 else c[i - 1], k, bias or i == 0)))
    width = {**{f"enc{i + 1}": c[i] for i in range(n)}, **{f"dec{i + 1}": c[i - 1] for i in range(1, n)}}
    names = list(width) + ([f"{name}_res" for name in width] if residual else [])
    for name in names:
        w = width[name.split("_")[0]]
        if name.endswith("_res"):
            out.update(_prefixed(name, _conv(w, w, k, bias)))
        out.update(_prefixed(f"{name}_norm", _norm_shapes(norm, w, groups)))
    layers = _size(s, "rnn_layers", 0, minimum=0)
    if layers:
        _at_most(s, "rnn_layers", layers)
        hidden, bins = _size(s, "rnn_hidden", 256, minimum=2), _size(s, "freq_bins", required=True)
        if hidden % 2 or bins % 2 ** n:
            raise _SpecProblem(f"SpectrogramUNetVAE needs an even rnn_hidden and freq_bins a multiple of {2 ** n}, "
                               f"got {hidden} and {bins}")
        features = c[-1] * (bins // 2 ** n)
        out.update({**_prefixed("rnn_in", _dense(features, hidden)), **_prefixed("rnn_out", _dense(hidden, features)),
                    **_prefixed("rnn", _rule_recurrent({"type": "LSTM", "input_size": hidden,
                                                         "hidden_size": hidden // 2, "num_layers": layers,
                                                         "bidirectional": True}))})
    return out


def _rule_stacked_spectrogram_unet(s):
    stacks = _size(s, "stacks", required=True, minimum=2)
    if stacks > MAX_STACKS:
        raise _SpecProblem(f"StackedSpectrogramUNetVAE.stacks must be at most {MAX_STACKS} "
                           f"(npvae.files.modelcheck.MAX_STACKS), got {stacks}")
    if "in_channels" in s:
        raise _SpecProblem("StackedSpectrogramUNetVAE has no in_channels: its hourglasses' inputs follow from "
                           "n_sources")
    hourglass = {key: value for key, value in s.items() if key != "stacks"}
    more = 1 + _size(s, "n_sources", 2)
    out = {}
    for i in range(stacks):
        spec = {**hourglass, "type": "SpectrogramUNetVAE", "in_channels": 1 if i == 0 else more}
        out.update(_prefixed(f"stack{i + 1}", _rule_spectrogram_unet(spec)))
    return out


def _rule_latent_map_vae(s):
    latent, n_out = _separation_common(s, "sources")
    c = _sizes(s, "channels", [24, 48, 96])
    if len(c) not in (2, 3):
        raise _SpecProblem(f"LatentMapSeparationVAE.channels must list 2 or 3 levels, got {list(c)}")
    blocks = _size(s, "blocks", 1, minimum=0)
    _at_most(s, "blocks", 4 * blocks)
    norm, down, groups, _, bias = _options(s)
    if down != "stride" or _get(s, "dropout", 0.0) or _get(s, "residual", False):
        raise _SpecProblem("LatentMapSeparationVAE has only the norm option (no down, dropout or residual)")

    def unit(shapes, width):     # a convolution, its norm (if any), its activation (no tensors)
        return [shapes, *([] if norm == "none" else [_norm_shapes(norm, width, groups)]), None]

    def conv(a, b, k):
        return unit(_conv(a, b, k, bias), b)

    def conv_t(a, b, k):
        return unit(_conv_t(a, b, k, bias), b)

    enc = conv(1, c[0], 3)
    for i in range(1, len(c)):
        enc += conv(c[i - 1], c[i], 4) + conv(c[i], c[i], 3) * blocks
    dec = conv(latent, c[-1], 3) + conv(c[-1], c[-1], 3) * blocks
    for i in range(len(c) - 1, 0, -1):
        dec += conv_t(c[i], c[i - 1], 4)
        dec += conv(c[i - 1], c[i - 1], 3) * (blocks if i > 1 else 1)
    dec.append(_conv(c[0], n_out, 3))
    out = {**_prefixed("head", _conv(c[-1], 2 * latent, 1))}
    for name, layers in (("encoder", enc), ("decoder", dec)):
        for i, shapes in enumerate(layers):
            if shapes is not None:
                out.update(_prefixed(f"{name}.{i}", shapes))
    return out


def _rule_blind_vae(s):
    groups, latent = _size(s, "n_groups", 2), _size(s, "latent_dim", 20)
    hidden = _sizes(s, "hidden", [512, 256])
    h, w = _sizes(s, "shape", [28, 28], 2)
    _finite(s, "out_bias", -2.0)
    _choice(s, "output", "sigmoid", ("sigmoid", "softplus"))
    widths, back = (h * w,) + hidden, (latent,) + hidden[::-1] + (h * w,)
    return {**_mlp(widths, 1, "encoder"), **_prefixed("head", _head(widths[-1], groups * latent)),
            **_mlp(back, 0, "decoder")}


def _rule_recurrent(s):
    """LSTM (4 gates) and GRU (3): ``l{k}[_reverse].{W_ih, W_hh, b_ih, b_hh}``."""
    gates = 4 if s.get("type") == "LSTM" else 3
    n_in, hid = _size(s, "input_size", required=True), _size(s, "hidden_size", required=True)
    layers = _size(s, "num_layers", 1)
    _at_most(s, "num_layers", layers)
    bidirectional = _get(s, "bidirectional", False)
    if not isinstance(bidirectional, bool):
        raise _SpecProblem(f"{s.get('type')}.bidirectional must be true or false, got {_short(bidirectional)}")
    directions = 2 if bidirectional else 1
    out = {}
    for k in range(layers):
        for d in range(directions):
            out.update(_prefixed(f"l{k}" + ("_reverse" if d else ""),
                                 {"W_ih": (gates * hid, n_in if k == 0 else hid * directions),
                                  "W_hh": (gates * hid, hid), "b_ih": (gates * hid,), "b_hh": (gates * hid,)}))
    return out


def _rule_from_sequence(s):
    _size(s, "channels", required=True)
    _size(s, "freqs", required=True)
    return {}


def _no_params(s):
    return {}


# -- normalisation: parameters gamma, beta; BatchNorm's buffers running_mean, running_var ----
def _positive(spec: dict, key: str, default) -> float:
    value = _finite(spec, key, default)
    if value <= 0:
        raise _SpecProblem(f"{spec.get('type')}.{key} must be > 0, got {_short(value)}")
    return value


def _rule_batchnorm(s):
    c = _size(s, "num_features", required=True)
    _positive(s, "eps", 1e-5)
    if not 0 <= _finite(s, "momentum", 0.1) <= 1:
        raise _SpecProblem(f"BatchNorm.momentum must be in [0, 1], got {_short(s['momentum'])}")
    return {"gamma": (c,), "beta": (c,), "running_mean": (c,), "running_var": (c,)}


def _rule_groupnorm(s):
    g, c = _size(s, "num_groups", required=True), _size(s, "num_channels", required=True)
    if c % g:
        raise _SpecProblem(f"GroupNorm.num_channels ({c}) must be a multiple of num_groups ({g})")
    _positive(s, "eps", 1e-5)
    return {"gamma": (c,), "beta": (c,)}


# Buffers whose values must not be negative (a variance under a square root).
BUFFERS = ("running_mean", "running_var")     # the tensors of a spec that are not trained
NON_NEGATIVE_BUFFERS = ("running_var",)


def _rule_leaky(s):
    _finite(s, "alpha", 0.01)
    return {}


# -- dropout, pooling, upsampling and branching blocks ----------------------------------------
MAX_UPSAMPLE = 64               # Upsample's scale factor per axis (the U-Nets use 2)
MAX_SIDE = 4096                 # Upsample's exact output size per axis (the largest maps are 1025 bins)


def _rule_dropout(s):
    p = _finite(s, "p", 0.5)
    if not 0 <= p <= 1:
        raise _SpecProblem(f"Dropout.p must be a probability in [0, 1], got {_short(p)}")
    if not isinstance(_get(s, "channels", False), bool):
        raise _SpecProblem(f"Dropout.channels must be true or false, got {_short(s['channels'])}")
    return {}


def _rule_pool(s):
    k = _pair(s, "kernel_size", 2, 1)
    if _get(s, "stride") is not None:
        _pair(s, "stride", None, 1)
    pad = _pair(s, "padding", 0, 0)
    if any(2 * p > n for p, n in zip(pad, k)):
        raise _SpecProblem(f"{s.get('type')}.padding must be at most half the kernel size, got padding {list(pad)} "
                           f"for kernel_size {list(k)}")
    return {}


def _rule_upsample(s):
    _choice(s, "mode", "nearest", ("nearest", "bilinear"))
    if _get(s, "size") is not None:
        if max(_pair(s, "size", None, 1)) > MAX_SIDE:
            raise _SpecProblem(f"Upsample.size asks for more than {MAX_SIDE} pixels a side "
                               "(npvae.files.modelcheck.MAX_SIDE)")
        return {}
    value = _get(s, "scale_factor", 2)
    for v in value if isinstance(value, list) and len(value) == 2 else [value]:
        f = _finite({"type": "Upsample", "scale_factor": v}, "scale_factor", None)
        if not 0 < f <= MAX_UPSAMPLE:
            raise _SpecProblem(f"Upsample.scale_factor must be a number in (0, {MAX_UPSAMPLE}] or a pair of them "
                               f"(npvae.files.modelcheck.MAX_UPSAMPLE), got {_short(value)}")
    return {}


def _children(named: dict) -> dict | None:
    """The shapes of named child specs, prefixed; None if one has no rule."""
    out = {}
    for name, child in named.items():
        shapes = param_shapes(child)
        if shapes is None:
            return None
        out.update(_prefixed(name, shapes))
    return out


def _rule_residual(s):
    named = {"body": _get(s, "body", required=True)}
    if _get(s, "shortcut") is not None:
        named["shortcut"] = s["shortcut"]
    return _children(named)


def _rule_concat(s):
    branches = _get(s, "branches", required=True)
    if not isinstance(branches, list) or not branches:
        raise _SpecProblem(f"Concat.branches must be a non-empty list of layer specs, got {_short(branches)}")
    _at_most(s, "branches", len(branches))
    _size(s, "axis", 1)
    return _children({str(i): b for i, b in enumerate(branches)})


_BLOCK_RULES = {"Dropout": _rule_dropout, "MaxPool2d": _rule_pool, "AvgPool2d": _rule_pool, "Upsample": _rule_upsample,
                "Residual": _rule_residual, "Concat": _rule_concat}


RULES = {
    "Dense": _rule_dense, "Conv2d": lambda s: _rule_conv(s, False), "ConvTranspose2d": lambda s: _rule_conv(s, True),
    "GaussianHead": lambda s: _head(_size(s, "in_features", required=True), _size(s, "latent_dim", required=True)),
    "Sequential": _rule_sequential, "Flatten": _no_params, "Reshape": _rule_reshape, "Identity": _no_params,
    "ReLU": _no_params, "LeakyReLU": _rule_leaky, "Sigmoid": _no_params, "Tanh": _no_params, "Softplus": _no_params,
    "DenseSeparationVAE": _rule_dense_vae, "ConvSeparationVAE": _rule_conv_vae, "UNetSeparationVAE": _rule_unet_vae,
    "LatentMapSeparationVAE": _rule_latent_map_vae,
    "SpectrogramUNetVAE": _rule_spectrogram_unet, "StackedSpectrogramUNetVAE": _rule_stacked_spectrogram_unet,
    "BlindSeparationVAE": _rule_blind_vae,
    **_BLOCK_RULES,
    "BatchNorm": _rule_batchnorm, "GroupNorm": _rule_groupnorm,
    "LSTM": _rule_recurrent, "GRU": _rule_recurrent, "ToSequence": _no_params, "FromSequence": _rule_from_sequence,
}


def param_shapes(spec) -> dict[str, tuple[int, ...]] | None:
    """``{tensor path: shape}`` of every parameter and buffer (the ``state_dict``) of the
    model ``build_layer(spec)`` would build, computed from the spec alone; None if the spec holds a layer type without a rule here (a
    user's own layer). Raises ValueError for a field that cannot describe a model."""
    if not isinstance(spec, dict):
        raise _SpecProblem(f"a layer spec must be a JSON object, got {type(spec).__name__}")
    rule = RULES.get(spec.get("type"))
    return None if rule is None else rule(spec)


def expected_shapes(path, spec) -> dict[str, tuple[int, ...]] | None:
    """:func:`param_shapes` of a file's spec, at most :data:`MAX_PARAMETERS` in all;
    problems raise FileFormatError naming the file."""
    try:
        shapes = param_shapes(spec)
    except _SpecProblem as e:
        raise FileFormatError(f"{path}: its model spec cannot describe a model ({e}); {_DAMAGED}") from None
    if shapes is not None:
        check_count(path, sum(_count(s) for s in shapes.values()), "its model spec asks for")
    return shapes


def _count(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def check_count(path, n: int, what: str) -> None:
    if n > MAX_PARAMETERS:
        raise FileFormatError(f"{path}: {what} {n:,} parameters, more than the {MAX_PARAMETERS:,} "
                              f"npvae loads (npvae.files.modelcheck.MAX_PARAMETERS); {_DAMAGED}")


# -- the tensors ---------------------------------------------------------------------------
def check_declared(path, expected: dict | None, declared: dict, quantized=frozenset()) -> None:
    """Compare the tensors a file declares (``{name: (shape, dtype)}``, from its metadata)
    with the spec's shapes, before they are read. Tensors named in ``quantized`` hold int8
    codes (their scales checked by :func:`npvae.files.quantize.check_scales`)."""
    for name, (shape, dtype) in declared.items():
        if name in quantized and shape is not None and dtype is not None and np.dtype(dtype) == np.int8:
            continue
        if shape is None or dtype is None or np.dtype(dtype).kind != "f" or np.dtype(dtype).itemsize not in (4, 8):
            what = "text" if dtype is None else f"dtype {dtype}"
            raise FileFormatError(f"{path}: parameter tensor {name} holds {what}, not float32 or float64 numbers; "
                                  f"{_DAMAGED}")
    if expected is None:        # a layer type without a shape rule: at least bound the size
        check_count(path, sum(_count(s) for s, _ in declared.values()), "it declares")
        return
    missing, unexpected = sorted(set(expected) - set(declared)), sorted(set(declared) - set(expected))
    if missing or unexpected:
        raise FileFormatError(f"{path}: its parameters do not fit the architecture it describes (tensors missing "
                              f"{_names(missing)}, unexpected {_names(unexpected)}); {_DAMAGED}")
    for name, want in expected.items():
        got = tuple(declared[name][0])
        if got != tuple(want):
            raise FileFormatError(f"{path}: its parameters do not fit the architecture it describes (tensor "
                                  f"{name} has shape {got}, the spec makes it {tuple(want)}); {_DAMAGED}")


MAX_BINS = 1 << 15              # a normaliser's bins: n_fft // 2 for an n_fft of at most 65536


def check_normaliser(path, declared: dict, n_fft) -> None:
    """Compare the per-bin arrays (``mean``, ``std``) of the normaliser a file's /config
    declares (``{name: Leaf}``, from its metadata) with the ``n_fft // 2`` bins of its
    STFT, before they are read (without a usable ``n_fft``: at most :data:`MAX_BINS`)."""
    known = isinstance(n_fft, (int, np.integer)) and not isinstance(n_fft, bool) and 2 <= n_fft <= 2 * MAX_BINS
    for name in ("mean", "std"):
        if name not in declared:
            continue                # Normalizer.from_dict names what is missing
        shape = getattr(declared[name], "shape", None)
        if known and shape == (int(n_fft) // 2,):
            continue
        if not known and shape is not None and len(shape) == 1 and shape[0] <= MAX_BINS:
            continue
        what = "holds no numbers" if shape is None else f"has shape {shape}"
        want = (f"its STFT (n_fft {int(n_fft)}) gives {int(n_fft) // 2} bins" if known
                else f"at most {MAX_BINS} bins fit")
        raise FileFormatError(f"{path}: its normaliser tensor normalizer.{name} {what}, but {want}; {_DAMAGED}")


def _names(names: list[str], shown: int = 8) -> str:
    return str(names) if len(names) <= shown else f"{names[:shown]} and {len(names) - shown:,} more"


def check_values(path, state: dict) -> None:
    """Every tensor finite and within +-:data:`MAX_ABS_PARAMETER`."""
    for name, value in state.items():
        a = np.asarray(value)
        if a.dtype.kind != "f":
            raise FileFormatError(f"{path}: parameter tensor {name} holds dtype {a.dtype}, not float32 or "
                                  f"float64 numbers; {_DAMAGED}")
        if a.size == 0:
            continue
        lo, hi = a.min(), a.max()          # NaN propagates into both; two passes, no temporary
        if lo < 0 and name.rsplit(".", 1)[-1] in NON_NEGATIVE_BUFFERS and np.isfinite(lo):
            first = tuple(int(j) for j in np.unravel_index(int(np.argmin(a)), a.shape))
            raise FileFormatError(f"{path}: tensor {name} is a variance but holds {float(lo):.4g} at index {first}; "
                                  f"{_DAMAGED}")
        if lo >= -MAX_ABS_PARAMETER and hi <= MAX_ABS_PARAMETER:
            continue
        bad = ~np.isfinite(a)
        if bad.any():
            first = np.unravel_index(int(np.argmax(bad)), a.shape)
            raise FileFormatError(f"{path}: parameter tensor {name} holds {int(bad.sum()):,} NaN or infinite "
                                  f"value(s) (the first at index {tuple(int(i) for i in first)}); the file is "
                                  "damaged: use the model.h5 / results.h5 that training wrote, or train again")
        i = int(np.argmax(np.abs(a)))
        first = tuple(int(j) for j in np.unravel_index(i, a.shape))
        raise FileFormatError(f"{path}: parameter tensor {name} holds {float(a.flat[i]):.4g} at index {first}, "
                              f"beyond the +-{MAX_ABS_PARAMETER:g} a trained npvae model reaches "
                              "(npvae.files.modelcheck.MAX_ABS_PARAMETER): the file is damaged (flipped bits?); use the "
                              "model.h5 / results.h5 that training wrote, or train again")

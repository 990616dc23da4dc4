"""Weights stored as 8-bit integers with one scale per output slice (``npvae ship --quantize int8``).

A model file may hold a weight tensor ``W`` (float, any shape of two or more axes) as
``q = round(W / s)``, int8 in [-127, 127], under ``/model/params``, and its scales ``s``
(float32, one per index of the first axis: ``s[i] = max |W[i, ...]| / 127``) under
``/model/param_scales`` with the same name. Reading multiplies them back:
``W ~ q * s[:, None, ...]``, within ``s[i] / 2`` of the trained value. Biases, norm
parameters and buffers (one axis) stay float: they are few, and a BatchNorm's running
variance wants its precision. The network of ``npvae train music --preset stacked``
(7.28M weights) makes a file of 8.0 MB instead of 29.6.

The first axis is the output's for Conv2d (O, C, kh, kw) and the recurrent layers'
input projections (4H, D), the input's for Dense (D_in, D_out) and ConvTranspose2d
(C, O, kh, kw): any slicing keeps each value within half a step of its slice's scale;
the shipped model's score is measured on the dequantized weights.
"""
from __future__ import annotations

import numpy as np

from ..errors import FileFormatError

QUANTIZATIONS = ("int8",)
INT8_MAX = 127
QUANTIZE_MIN_SIZE = 256         # smaller tensors (and every one-axis tensor) stay float
QUANTIZE_MIN_SLICE = 32         # values a scale serves at least: its 4 bytes cost at most 1/8 of a byte a code


def quantizable(value) -> bool:
    """Whether a state tensor is stored as int8 by :func:`quantize_int8`: a float tensor
    of two or more axes, at least :data:`QUANTIZE_MIN_SIZE` values, at least
    :data:`QUANTIZE_MIN_SLICE` a slice of the first axis."""
    a = np.asarray(value)
    return (a.dtype.kind == "f" and a.ndim >= 2 and a.size >= QUANTIZE_MIN_SIZE
            and a.size >= QUANTIZE_MIN_SLICE * a.shape[0])


def quantize_int8(state: dict) -> tuple[dict, dict]:
    """``(params, scales)``: ``state`` (name -> float array) with every :func:`quantizable`
    tensor replaced by its int8 codes, and those tensors' scales (name -> float32 (n,),
    n its first axis); a slice of zeros gets the scale 1."""
    params, scales = {}, {}
    for name, value in state.items():
        a = np.asarray(value)
        if not quantizable(a):
            params[name] = a
            continue
        peak = np.abs(a.reshape(a.shape[0], -1)).max(axis=1).astype(np.float64)
        s = np.where(peak > 0, peak / INT8_MAX, 1.0).astype(np.float32)
        q = np.rint(a / s.reshape((-1,) + (1,) * (a.ndim - 1)).astype(np.float64))
        params[name] = np.clip(q, -INT8_MAX, INT8_MAX).astype(np.int8)
        scales[name] = s
    return params, scales


def check_scales(path, declared_params: dict, declared_scales: dict) -> None:
    """Before anything is read: every scale names an int8 tensor of /model/params and has
    one float value per index of its first axis; every int8 tensor has a scale.
    ``declared_*`` map names to (shape, dtype)."""
    for name, (shape, dtype) in declared_scales.items():
        if name not in declared_params:
            raise FileFormatError(f"{path}: /model/param_scales names {name}, which /model/params does not hold; "
                                  "the file was edited or damaged: use the file npvae ship wrote, or ship again")
        pshape, pdtype = declared_params[name]
        if pdtype is None or np.dtype(pdtype) != np.int8:
            raise FileFormatError(f"{path}: tensor {name} has a scale but holds {pdtype}, not int8 codes; the file "
                                  "was edited or damaged: use the file npvae ship wrote, or ship again")
        if (dtype is None or np.dtype(dtype).kind != "f" or shape is None or not pshape
                or tuple(shape) != (pshape[0],)):
            raise FileFormatError(f"{path}: the scales of tensor {name} have shape {shape} and dtype {dtype}; "
                                  f"int8 codes of shape {tuple(pshape or ())} need {(pshape or (0,))[0]} float "
                                  "scales, one per index of the first axis; the file was edited or damaged")
    for name, (shape, dtype) in declared_params.items():
        if dtype is not None and np.dtype(dtype) == np.int8 and name not in declared_scales:
            raise FileFormatError(f"{path}: tensor {name} holds int8 codes but /model/param_scales has no scale "
                                  "for it; the file was edited or damaged: use the file npvae ship wrote, or "
                                  "ship again")


def dequantize(path, params: dict, scales: dict, dtype=np.float32) -> dict:
    """``params`` with each tensor named in ``scales`` multiplied back to ``dtype``; a scale
    that is not finite and positive raises FileFormatError naming the tensor."""
    out = dict(params)
    for name, s in scales.items():
        s = np.asarray(s, np.float64)
        if not np.all(np.isfinite(s)) or not np.all(s > 0):
            bad = int(np.argmax(~(np.isfinite(s) & (s > 0))))
            raise FileFormatError(f"{path}: scale {bad} of tensor {name} is {s[bad]:.4g}, not a finite positive "
                                  "number; the file was edited or damaged: use the file npvae ship wrote, or "
                                  "ship again")
        q = np.asarray(params[name])
        out[name] = (q.astype(np.float64) * s.reshape((-1,) + (1,) * (q.ndim - 1))).astype(dtype)
    return out


def quantized_round_trip(state: dict, dtype=np.float32) -> dict:
    """``state`` as a file of :func:`quantize_int8` gives it back: what a shipped model
    computes with."""
    params, scales = quantize_int8(state)
    return dequantize("(in memory)", params, scales, dtype)


__all__ = ["QUANTIZATIONS", "quantizable", "quantize_int8", "check_scales", "dequantize", "quantized_round_trip"]

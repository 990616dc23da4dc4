"""Containers that branch: a residual block and a concatenation of branches.

With :class:`Sequential` they describe residual U-Nets and stacked hourglasses as
specs: a U-Net skip level is ``Concat(Identity(), Sequential(MaxPool2d(2), inner,
Upsample(2)))`` and a residual block ``Residual(Sequential(conv, act, conv))``.
Train/eval mode, ``forget`` and ``inference()`` reach the branches as they reach the
layers of a Sequential (through ``children()``).
"""
from __future__ import annotations

import numpy as np

from .base import Layer, backward_before_forward, build_layer, in_inference, register
from .sequential import container_dtype


def _check_layers(owner: str, layers) -> None:
    for layer in layers:
        if not isinstance(layer, Layer):
            raise ValueError(f"{owner} takes npvae layers, got {type(layer).__name__}")


@register
class Residual(Layer):
    """``y = body(x) + shortcut(x)``; the shortcut is the identity when None.

    Both branches take the same input and must give outputs of the same shape (a
    shortcut such as a 1x1 Conv2d matches channels). Children ``"body"`` and, when
    given, ``"shortcut"``: parameter paths read ``"body.0.W"``.
    """

    def __init__(self, body: Layer, shortcut: Layer | None = None, dtype=None):
        _check_layers("Residual", [body] + ([shortcut] if shortcut is not None else []))
        super().__init__(container_dtype(self, [body] + ([shortcut] if shortcut is not None else []), dtype))
        self.body, self.shortcut = body, shortcut
        self._ran = False

    def forward(self, x):
        y = self.body.forward(x)
        s = x if self.shortcut is None else self.shortcut.forward(x)
        if y.shape != s.shape:
            raise ValueError(f"Residual: the body gives shape {y.shape} but the shortcut {s.shape} for input "
                             f"{x.shape}; give a shortcut that matches (e.g. a 1x1 Conv2d for channels)")
        self._ran = not in_inference()
        return y + s

    def backward(self, dy):
        if not self._ran:
            raise backward_before_forward(self)
        dx = self.body.backward(dy)
        return dx + (dy if self.shortcut is None else self.shortcut.backward(dy))

    def forget(self):
        self._ran = False
        super().forget()

    def children(self):
        return {"body": self.body} if self.shortcut is None else {"body": self.body, "shortcut": self.shortcut}

    def spec(self):
        s = {"type": "Residual", "body": self.body.spec()}
        if self.shortcut is not None:
            s["shortcut"] = self.shortcut.spec()
        return s

    @classmethod
    def from_spec(cls, spec, rng=None, dtype=None):
        shortcut = spec.get("shortcut")
        return cls(build_layer(spec["body"], rng=rng, dtype=dtype),
                   None if shortcut is None else build_layer(shortcut, rng=rng, dtype=dtype), dtype=dtype)

    def __repr__(self):
        return f"Residual(body={self.body!r}, shortcut={self.shortcut!r})"


@register
class Concat(Layer):
    """``y = concatenate([b(x) for b in branches], axis)``: every branch takes the same
    input; their outputs must agree on every axis but ``axis`` (1: channels of
    (N, C, H, W)). Children ``"0"``, ``"1"``...; a branch may be ``Identity()``.
    """

    def __init__(self, *branches: Layer, axis: int = 1, dtype=None):
        if not branches:
            raise ValueError("Concat needs at least one branch")
        _check_layers("Concat", branches)
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or axis < 1:
            raise ValueError(f"Concat axis must be a whole number >= 1 (axis 0 is the batch), got {axis!r}")
        super().__init__(container_dtype(self, branches, dtype))
        self.branches, self.axis = list(branches), int(axis)
        self._splits = None

    def forward(self, x):
        outs = [b.forward(x) for b in self.branches]
        if any(o.ndim <= self.axis for o in outs):
            raise ValueError(f"Concat(axis={self.axis}): branch outputs of shapes {[o.shape for o in outs]} "
                             f"have no axis {self.axis}")
        try:
            y = np.concatenate(outs, axis=self.axis)
        except ValueError:
            raise ValueError(f"Concat(axis={self.axis}): the branches' outputs {[o.shape for o in outs]} differ "
                             f"on an axis other than {self.axis}") from None
        self._splits = None if in_inference() else np.cumsum([o.shape[self.axis] for o in outs])[:-1]
        return y

    def backward(self, dy):
        if self._splits is None:
            raise backward_before_forward(self)
        parts = np.split(dy, self._splits, axis=self.axis)
        dx = None
        for b, part in zip(self.branches, parts):
            g = b.backward(np.ascontiguousarray(part))
            dx = g if dx is None else dx + g
        return dx

    def forget(self):
        self._splits = None
        super().forget()

    def children(self):
        return {str(i): b for i, b in enumerate(self.branches)}

    def spec(self):
        return {"type": "Concat", "branches": [b.spec() for b in self.branches], "axis": self.axis}

    @classmethod
    def from_spec(cls, spec, rng=None, dtype=None):
        return cls(*(build_layer(s, rng=rng, dtype=dtype) for s in spec["branches"]), axis=spec.get("axis", 1),
                   dtype=dtype)

    def __repr__(self):
        inner = "\n".join(f"  ({i}): {b!r}" for i, b in enumerate(self.branches))
        return f"Concat(axis={self.axis},\n{inner}\n)"

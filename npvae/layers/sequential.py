"""A chain of layers that is itself a layer."""
from __future__ import annotations

import numpy as np

from .base import Layer, build_layer, register


def container_dtype(container: Layer, layers, dtype=None) -> np.dtype:
    """The dtype of a container of ``layers``: ``dtype`` if given, else the one its layers
    with parameters share. Layers without parameters are set to it (they follow the
    dtype of those with parameters)."""
    dtypes = {layer.dtype for layer in layers if layer.num_parameters()}
    if len(dtypes) > 1:
        raise ValueError(f"{type(container).__name__} layers must share one dtype, got {sorted(map(str, dtypes))}")
    dtype = np.dtype(dtype or (dtypes.pop() if dtypes else np.float32))
    for layer in layers:
        if not layer.num_parameters():
            for _, sub in layer.named_layers():
                sub.dtype = dtype
    return dtype


@register
class Sequential(Layer):
    """``Sequential(l0, l1, ...)``: forward runs l0 then l1...; backward runs them in reverse.

    Sub-layers are named ``"0"``, ``"1"``... so parameter paths read ``"2.W"``.
    """

    def __init__(self, *layers: Layer, dtype=None):
        super().__init__(container_dtype(self, layers, dtype))
        self.layers = list(layers)

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dy):
        for layer in reversed(self.layers):
            dy = layer.backward(dy)
        return dy

    def children(self):
        return {str(i): layer for i, layer in enumerate(self.layers)}

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, i):
        return self.layers[i]

    def spec(self):
        return {"type": "Sequential", "layers": [layer.spec() for layer in self.layers]}

    @classmethod
    def from_spec(cls, spec, rng=None, dtype=None):
        return cls(*(build_layer(s, rng=rng, dtype=dtype) for s in spec["layers"]), dtype=dtype)

    def __repr__(self):
        inner = "\n".join(f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential(\n{inner}\n)"

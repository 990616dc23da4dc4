"""The layer contract every npvae building block follows.

* ``y = layer.forward(x)`` computes the output and keeps what backward needs.
* ``dx = layer.backward(dy)`` returns the gradient for the input and *overwrites*
  the arrays in ``layer.grads`` in place (so an optimiser may hold references).
* ``layer.params`` / ``layer.grads``: dicts of the same names to arrays of the same
  shapes, empty for layers without parameters.
* ``layer.buffers``: arrays that are state but not trained (BatchNorm's running
  statistics), made with ``add_buffer``. Optimisers walk ``named_parameters`` only;
  ``state_dict`` / ``load_state_dict`` carry parameters *and* buffers, so checkpoints
  and model files keep both; ``named_buffers`` walks the buffers alone.
* ``layer.spec()`` is a JSON-able dict from which :func:`build_layer` rebuilds the
  layer (parameters aside), the basis of checkpoints and HDF5 model files.
* Containers expose their sub-layers through ``children()``; ``named_parameters``
  walks the whole tree with dotted paths such as ``encoder.0.W``.
* Inside ``with inference():`` forward passes keep nothing for backward (a backward
  then raises), the convolutions share one set of scratch arrays per worker thread
  and apply an activation given as ``act=`` to their output in place. Outputs are the
  same, bit for bit. ``model.eval()`` is separate: it stops the latent's sampling.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

import numpy as np

_REGISTRY: dict[str, type] = {}


def register(cls):
    """Class decorator: make ``cls`` buildable from its ``spec()`` by name."""
    _REGISTRY[cls.__name__] = cls
    return cls


def build_layer(spec: dict, rng: np.random.Generator | None = None, dtype=None):
    """Rebuild a layer (or a whole model) from ``spec`` as returned by ``Layer.spec()``."""
    kind = spec.get("type")
    if kind not in _REGISTRY:
        raise ValueError(f"unknown layer type {kind!r} in spec; known types: {sorted(_REGISTRY)}")
    return _REGISTRY[kind].from_spec(spec, rng=rng, dtype=dtype)


def backward_before_forward(layer) -> RuntimeError:
    """The error of a ``backward`` that finds nothing a ``forward`` kept (raise it)."""
    return RuntimeError(f"{layer!r}: backward called before forward; call forward(x) first "
                        "(backward uses what forward keeps)")


class InferenceScratch:
    """The scratch arrays of one ``inference()`` block: one flat array per name (which
    names a role and a worker thread, as ``"cols1"``) and dtype, grown to the largest
    size asked for. The layers of a model run one after the other, so they can share
    them: a forward pass then needs the scratch of its largest layer, not of all."""

    def __init__(self):
        self._arrays: dict[tuple[str, np.dtype], np.ndarray] = {}

    def array(self, name: str, shape, dtype) -> np.ndarray:
        """A C-contiguous ``shape`` view of the scratch ``name``; its values are undefined."""
        key, size = (name, np.dtype(dtype)), int(np.prod(shape))
        buf = self._arrays.get(key)
        if buf is None or buf.size < size:
            buf = self._arrays[key] = np.empty(size, dtype=key[1])
        return buf[:size].reshape(shape)

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._arrays.values())


_INFERENCE = contextvars.ContextVar("npvae_inference", default=None)    # the block's InferenceScratch


@contextlib.contextmanager
def inference(enabled: bool = True):
    """``with inference():`` forward passes in the block keep nothing for backward.

    For separating with a trained model (``npvae.separation.separator.predict_masks`` uses it)::

        model.eval()                    # z = mu: no sampling (a separate switch)
        with npvae.layers.inference():
            masks = model.forward(x)    # the same numbers as without the block

    Inside the block a layer's forward drops what an earlier forward kept (so a
    ``backward`` raises the "backward called before forward" error) and keeps nothing
    itself. ``Conv2d`` and ``ConvTranspose2d`` compute through scratch columns of one
    chunk of samples per worker thread, shared by every layer and freed when the
    outermost block ends, and apply an activation passed as ``forward(x, act=...)`` to
    their output in place, in the pass that adds the bias. The block holds for the
    thread (and context) that enters it; do not ``yield`` inside it.
    ``enabled=False`` switches it off, also inside another block.
    """
    current = _INFERENCE.get()
    token = _INFERENCE.set((current or InferenceScratch()) if enabled else None)
    try:
        yield
    finally:
        _INFERENCE.reset(token)


def inference_scratch() -> InferenceScratch | None:
    """The scratch of the ``inference()`` block we are in, None outside one."""
    return _INFERENCE.get()


def in_inference() -> bool:
    """True inside ``with inference():`` (see there)."""
    return _INFERENCE.get() is not None


def check_dtype(dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


def default_rng(rng) -> np.random.Generator:
    if rng is None:
        return np.random.default_rng(0)
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}")
    return rng


class Layer:
    """Base class: no parameters, identity ``spec`` plumbing, train/eval mode."""

    def __init__(self, dtype=np.float32):
        self.dtype = check_dtype(dtype)
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self.training = True

    # -- computation -------------------------------------------------------------
    def forward(self, x):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -- structure ---------------------------------------------------------------
    def children(self) -> dict[str, "Layer"]:
        """Named sub-layers (empty for a leaf layer)."""
        return {}

    def add_param(self, name: str, value: np.ndarray) -> np.ndarray:
        value = np.ascontiguousarray(value, dtype=self.dtype)
        self.params[name] = value
        self.grads[name] = np.zeros_like(value)
        return value

    def add_buffer(self, name: str, value: np.ndarray) -> np.ndarray:
        """Register non-trained state ``name`` (a copy of ``value`` in the layer's dtype);
        updated in place by the layer, saved and restored with the parameters."""
        if name in self.params:
            raise ValueError(f"{type(self).__name__}: {name!r} is already a parameter; a buffer needs another name")
        value = np.array(value, dtype=self.dtype, order="C")
        self.buffers[name] = value
        return value

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        """Yield ``(path, buffer)`` for every buffer of this layer and its children."""
        for name, b in self.buffers.items():
            yield prefix + name, b
        for cname, child in self.children().items():
            yield from child.named_buffers(f"{prefix}{cname}.")

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        """Yield ``(path, param, grad)`` for every parameter of this layer and its children."""
        for name, p in self.params.items():
            yield prefix + name, p, self.grads[name]
        for cname, child in self.children().items():
            yield from child.named_parameters(f"{prefix}{cname}.")

    def named_layers(self, prefix: str = "") -> Iterator[tuple[str, "Layer"]]:
        """Yield ``(path, layer)`` for this layer and every descendant, depth first."""
        yield prefix.rstrip("."), self
        for cname, child in self.children().items():
            yield from child.named_layers(f"{prefix}{cname}.")

    def num_parameters(self) -> int:
        return int(sum(p.size for _, p, _ in self.named_parameters()))

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The live arrays of every parameter and buffer, by path (parameters first)."""
        own = {path: p for path, p, _ in self.named_parameters()}
        own.update(self.named_buffers())
        return own

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter and buffer, by path."""
        return {path: a.copy() for path, a in self.state_arrays().items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy ``state`` into the parameters and buffers in place; names and shapes must
        match exactly."""
        own = self.state_arrays()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(f"parameters do not match the model: missing {missing}, unexpected {unexpected}")
        for path, p in own.items():
            value = np.asarray(state[path])
            if value.shape != p.shape:
                raise ValueError(f"parameter {path}: expected shape {p.shape}, got {value.shape}")
            p[...] = value

    def forget(self) -> None:
        """Drop what forward kept for backward (a backward then raises), in this layer and
        its children. Forward passes inside ``inference()`` call it."""
        for child in self.children().values():
            child.forget()

    def zero_grad(self) -> None:
        for _, _, g in self.named_parameters():
            g.fill(0)

    def train(self, mode: bool = True) -> "Layer":
        for _, layer in self.named_layers():
            layer.training = mode
        return self

    def eval(self) -> "Layer":
        return self.train(False)

    # -- serialisation -----------------------------------------------------------
    def hyper(self) -> dict:
        """Constructor arguments (besides rng and dtype) that rebuild this layer."""
        return {}

    def spec(self) -> dict:
        return {"type": type(self).__name__, **self.hyper()}

    @classmethod
    def from_spec(cls, spec: dict, rng=None, dtype=None):
        kwargs = {k: v for k, v in spec.items() if k != "type"}
        return cls(**kwargs, rng=rng, dtype=dtype or np.float32)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyper().items())
        return f"{type(self).__name__}({args})"


def expect_input(layer: Layer, x, ndim: int, what: str, channels_axis: int | None = None,
                 channels: int | None = None) -> None:
    """Raise a ValueError that says what ``layer`` expected if ``x`` does not fit."""
    name = type(layer).__name__
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name} expected a numpy array {what}, got {type(x).__name__}")
    if x.ndim != ndim:
        raise ValueError(f"{name} expected input of shape {what}, got shape {x.shape}")
    if x.dtype != layer.dtype:
        raise ValueError(f"{name} expected {layer.dtype} input, got {x.dtype}: cast with "
                         f"x.astype(np.{layer.dtype}) or build the layer with dtype=np.{x.dtype}")
    if channels_axis is not None and x.shape[channels_axis] != channels:
        raise ValueError(f"{name} expected {channels} features/channels on axis {channels_axis} "
                         f"({what}), got shape {x.shape}")

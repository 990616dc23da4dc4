"""How much memory a training run's model will take, from its settings alone.

A flag such as ``--hidden 10000000`` asks for a model of tens of gigabytes; building it
would take the machine's memory (or end in a traceback) before anything says so. The
engine asks the task for the spec of the model it will build and the shape of one
training example (:meth:`npvae.engine.task.Task.planned_model`), estimates from them,
allocating nothing:

* the parameters, their gradients and the optimiser's slots (Adam's two moments, and a
  weight average with ``--ema-decay``), each the size of the parameters;
* the activations of one batch: for every layer, its outputs (its bias's length, times
  the example's positions for a convolution: an upper bound, since strides only shrink
  them), kept for the backward pass and matched by a gradient of the same size;

and refuses a run whose estimate exceeds the machine's memory, naming both numbers.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

from ..errors import TrainingError
from ..files.modelcheck import BUFFERS, param_shapes

ACTIVATION_COPIES = 3   # a layer's output, the input it caches for backward, and its gradient


@dataclass
class MemoryEstimate:
    """Bytes a run's model needs (see the module docstring): ``parameters`` holds the trained
    tensors and the buffers (running statistics), ``gradients`` and ``optimiser`` the trained ones alone."""
    parameters: int
    gradients: int
    optimiser: int
    activations: int

    @property
    def total(self) -> int:
        return self.parameters + self.gradients + self.optimiser + self.activations


def estimate(spec: dict, example_shape: tuple[int, ...], batch_size: int, itemsize: int = 4,
             slots: int = 2) -> MemoryEstimate | None:
    """The estimate for the model ``spec`` (as :func:`npvae.build_layer` takes it) trained
    on batches of ``batch_size`` examples of ``example_shape``, in ``itemsize``-byte
    numbers with ``slots`` optimiser arrays per parameter; None when the spec holds a
    layer type without a shape rule in :mod:`npvae.files.modelcheck`, or cannot describe a model
    (the model's constructor then says why)."""
    try:
        shapes = param_shapes(spec)
    except ValueError:
        return None
    if shapes is None:
        return None
    n = sum(math.prod(s) for s in shapes.values())
    trained = sum(math.prod(s) for name, s in shapes.items() if name.rsplit(".", 1)[-1] not in BUFFERS)
    positions = math.prod(example_shape)
    outputs = 0
    for name, shape in shapes.items():
        if not name.endswith(".W"):
            continue
        bias = shapes.get(name[:-2] + ".b")
        width = bias[0] if bias else (shape[-1] if len(shape) == 2 else shape[0])
        outputs += width * (positions if len(shape) == 4 else 1)
    return MemoryEstimate(n * itemsize, trained * itemsize, slots * trained * itemsize,
                          ACTIVATION_COPIES * batch_size * (outputs + positions) * itemsize)


def machine_memory() -> int | None:
    """Bytes of physical memory, or None where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB"


def check_fits(est: MemoryEstimate | None, flags: str, limit: int | None = None) -> None:
    """Refuse a run whose model cannot fit: ``est`` above ``limit`` bytes (default: the
    machine's memory). ``flags`` names the settings that size the model."""
    limit = machine_memory() if limit is None else limit
    if est is None or limit is None or est.total <= limit:
        return
    raise TrainingError(
        f"this model would need about {gib(est.total)} of memory to train (parameters {gib(est.parameters)}, "
        f"gradients {gib(est.gradients)}, optimiser state {gib(est.optimiser)}, activations of a batch "
        f"at most {gib(est.activations)}), more than this machine's {gib(limit)}; make it smaller ({flags}) or the "
        "batch smaller (--batch-size)")

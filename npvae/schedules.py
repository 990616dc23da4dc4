"""Learning-rate schedules, as functions of the fractional epoch."""
from __future__ import annotations

import math

SCHEDULES = ("constant", "cosine")


def lr_at(epoch: float, epochs: int, lr: float, decay_start: float = 0.6, final: float = 0.1) -> float:
    """Constant ``lr`` until ``decay_start * epochs``, then cosine down to ``final * lr``
    at ``epochs`` (``epoch`` is fractional: 2.5 is half-way through the third epoch)."""
    start = decay_start * epochs
    if epoch <= start or epochs <= start:
        return lr
    u = min(1.0, (epoch - start) / (epochs - start))
    return lr * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * u)))


def schedule_lr(name: str, epoch: float, epochs: int, lr: float) -> float:
    """The learning rate of schedule ``name`` ("constant" or "cosine", see :func:`lr_at`)."""
    if name == "constant":
        return lr
    if name == "cosine":
        return lr_at(epoch, epochs, lr)
    raise ValueError(f"unknown learning-rate schedule {name!r}: choose one of {SCHEDULES}")

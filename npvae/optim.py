"""Optimisers that walk a model's named parameters and update them in place.

Both keep their whole state in :meth:`state_dict` (step count, moments, hyper-
parameters, the weights' running average) so that a restored optimiser continues
exactly where it stopped.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from ._kernels import kernels


def clip_grad_norm(params, max_norm: float) -> float:
    """Scale every gradient in place so their global L2 norm is at most ``max_norm``.

    ``params`` is an iterable of ``(path, param, grad)``. Returns the norm before clipping.
    """
    grads = [g for _, _, g in params]
    total = float(np.sqrt(sum(float(np.dot(g.ravel(), g.ravel())) for g in grads)))
    if total > max_norm > 0:
        scale = max_norm / (total + 1e-12)
        for g in grads:
            g *= scale
    return total


class Optimizer:
    """Base: holds ``(path, param, grad)`` triples from ``model.named_parameters()``.

    ``ema_decay`` d > 0 also keeps an exponential moving average of the weights, updated
    after every step (``avg <- d * avg + (1 - d) * w``, starting from the initial
    weights; it spans about 1 / (1 - d) steps). :meth:`averaged_weights` lends it to the
    model for a while (to validate), :meth:`use_averaged_weights` keeps it (the model a
    run ships). It is part of :meth:`state_dict`, so a resumed run averages on exactly.
    """

    def __init__(self, model, lr: float, clip_norm: float | None = None, ema_decay: float = 0.0):
        if lr <= 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        self.params = list(model.named_parameters())
        if not self.params:
            raise ValueError("the model has no parameters to optimise")
        self.lr, self.clip_norm = float(lr), clip_norm
        self.ema_decay = float(ema_decay)
        self.ema = {path: p.copy() for path, p, _ in self.params} if self.ema_decay else {}
        self.t = 0
        self.last_grad_norm = float("nan")

    def step(self) -> None:
        if self.clip_norm:
            self.last_grad_norm = clip_grad_norm(self.params, self.clip_norm)
        self.t += 1
        self._update()
        if self.ema:
            for path, p, _ in self.params:
                avg = self.ema[path]
                avg *= self.ema_decay
                avg += (1.0 - self.ema_decay) * p

    def _update(self):
        raise NotImplementedError

    @contextmanager
    def averaged_weights(self):
        """The model holds the averaged weights inside the ``with`` block and its own
        after it (exactly: they are swapped, not recomputed); nothing without an average."""
        if not self.ema:
            yield
            return
        own = {path: p.copy() for path, p, _ in self.params}
        try:
            for path, p, _ in self.params:
                p[...] = self.ema[path]
            yield
        finally:
            for path, p, _ in self.params:
                p[...] = own[path]

    def use_averaged_weights(self) -> None:
        """Give the model the averaged weights for good (nothing without an average)."""
        for path, p, _ in self.params:
            if path in self.ema:
                p[...] = self.ema[path]

    def _slots(self) -> dict[str, dict[str, np.ndarray]]:
        return {**self._moment_slots(), **({"ema": self.ema} if self.ema else {})}

    def _moment_slots(self) -> dict[str, dict[str, np.ndarray]]:
        return {}

    def _hyper(self) -> dict:
        return {"lr": self.lr}

    def state_dict(self) -> dict:
        """``{"t": int, "hyper": {...}, "slots": {slot: {path: array}}}`` (arrays copied)."""
        return {"t": self.t, "hyper": self._hyper(),
                "slots": {k: {p: a.copy() for p, a in d.items()} for k, d in self._slots().items()}}

    def load_state_dict(self, state: dict) -> None:
        self.t = int(state["t"])
        for key, value in state.get("hyper", {}).items():
            setattr(self, key, value)
        for slot, arrays in self._slots().items():
            saved = state["slots"][slot]
            for path, arr in arrays.items():
                if path not in saved or np.shape(saved[path]) != arr.shape:
                    raise ValueError(f"optimiser state for {slot}.{path} is missing or has the wrong shape; "
                                     "was it saved from a different model?")
                arr[...] = saved[path]


class Adam(Optimizer):
    """Adam with bias correction (Kingma & Ba 2015) and optional decoupled weight decay (AdamW)."""

    def __init__(self, model, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, clip_norm: float | None = None, ema_decay: float = 0.0):
        super().__init__(model, lr, clip_norm, ema_decay)
        self.beta1, self.beta2 = float(betas[0]), float(betas[1])
        self.eps, self.weight_decay = float(eps), float(weight_decay)
        self.m = {path: np.zeros_like(p) for path, p, _ in self.params}
        self.v = {path: np.zeros_like(p) for path, p, _ in self.params}

    def _update(self):
        bc1, bc2 = 1.0 - self.beta1 ** self.t, 1.0 - self.beta2 ** self.t
        for path, p, g in self.params:
            kernels.adam_update(p, g, self.m[path], self.v[path], self.lr, self.beta1, self.beta2,
                                self.eps, bc1, bc2, self.weight_decay)

    def _moment_slots(self):
        return {"m": self.m, "v": self.v}

    def _hyper(self):
        return {"lr": self.lr, "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps,
                "weight_decay": self.weight_decay}


class SGD(Optimizer):
    """SGD with (heavy-ball) momentum: ``v <- mu*v + g + wd*p``, ``p <- p - lr*v``."""

    def __init__(self, model, lr: float = 1e-2, momentum: float = 0.0, weight_decay: float = 0.0,
                 clip_norm: float | None = None, ema_decay: float = 0.0):
        super().__init__(model, lr, clip_norm, ema_decay)
        self.momentum, self.weight_decay = float(momentum), float(weight_decay)
        self.velocity = {path: np.zeros_like(p) for path, p, _ in self.params}

    def _update(self):
        for path, p, g in self.params:
            step = g + self.weight_decay * p if self.weight_decay else g
            if self.momentum:
                v = self.velocity[path]
                v *= self.momentum
                v += step
                step = v
            p -= self.lr * step

    def _moment_slots(self):
        return {"velocity": self.velocity}

    def _hyper(self):
        return {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay}

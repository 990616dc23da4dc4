"""Recurrent layers over the time axis of (N, T, F) sequences: LSTM and GRU, stacked and
bidirectional, with PyTorch's gate order, parameter layout and initialisation.

Each layer and direction holds ``W_ih`` (G*H, F_in), ``W_hh`` (G*H, H), ``b_ih`` and
``b_hh`` (G*H,), G = 4 gates (LSTM: i, f, g, o) or 3 (GRU: r, z, n), under the paths
``l0.W_ih``, ``l0_reverse.W_ih``, ``l1.W_ih``, ... (PyTorch's ``weight_ih_l0``,
``weight_ih_l0_reverse``, ...). Layer k > 0 reads the concatenated outputs of layer
k - 1's directions (F_in = H * directions). The initial state is zero.

Inside, sequences are time-major (T, N, F) so that a step is one contiguous block: the
input projections of all steps are one GEMM per layer and direction, and the step loop
(one GEMM with ``W_hh`` and the gates per step) and its backward through time are the
kernels ``lstm_forward`` / ``lstm_backward`` (``gru_*``) of :mod:`npvae.kernels`. The
two directions of a large bidirectional layer run on two threads (:func:`_each_direction`).
"""
from __future__ import annotations

import numpy as np

from .. import threads
from .._kernels import kernels
from .base import Layer, backward_before_forward, default_rng, expect_input, in_inference, register


class RecurrentWeights(Layer):
    """The parameters of one layer and direction of a recurrent layer (a child of it,
    which gives the parameter paths; it computes nothing itself)."""

    def __init__(self, input_size: int, hidden_size: int, gates: int, rng, dtype):
        super().__init__(dtype)
        bound = 1.0 / np.sqrt(hidden_size)
        rows = gates * hidden_size
        for name, shape in (("W_ih", (rows, input_size)), ("W_hh", (rows, hidden_size)), ("b_ih", (rows,)),
                            ("b_hh", (rows,))):
            self.add_param(name, rng.uniform(-bound, bound, shape))


def _whole(name: str, key: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} needs {key} as a whole number >= {minimum}, got {value!r}")
    return int(value)


# The two directions of a layer run on two threads from this many multiply-adds of a
# direction's weight GEMMs (T N G H (F_in + H)) up; below, handing one to another thread
# saved nothing. LSTM, H 128, input 256, on a loaded 2-core machine, forward/backward:
# N 2, T 32 (12.6M) 1.07/1.60 ms on two threads, 0.99/1.54 ms on one; N 8, T 64 (101M)
# 10.0/11.3 ms against 10.3/13.9 ms.
PARALLEL_MIN_MACS = 1 << 25


def _each_direction(directions: int, macs: int, work) -> None:
    """``work(d)`` for each direction ``d`` of a layer. The two of a bidirectional layer
    run with BLAS held to one thread (see :mod:`npvae.threads`): on two threads when
    more than one is configured and a direction's GEMMs take ``macs`` >=
    :data:`PARALLEL_MIN_MACS` multiply-adds, else one after the other (a GEMM of a small
    layer gains nothing from BLAS's threads either). Each direction writes only its own
    outputs, so the results are the same either way."""
    if directions == 1:
        work(0)
        return
    step = 1 if macs >= PARALLEL_MIN_MACS else directions
    threads.for_each_chunk(directions, step, lambda part, _worker: [work(d) for d in range(part.start, part.stop)])


class _Recurrent(Layer):
    """Stacking, directions, layouts and the weight GEMMs; a subclass runs one direction."""

    GATES = 0

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bidirectional: bool = False,
                 rng=None, dtype=np.float32):
        super().__init__(dtype)
        name = type(self).__name__
        self.input_size = _whole(name, "input_size", input_size)
        self.hidden_size = _whole(name, "hidden_size", hidden_size)
        self.num_layers = _whole(name, "num_layers", num_layers)
        if not isinstance(bidirectional, (bool, np.bool_)):
            raise ValueError(f"{name} needs bidirectional as true or false, got {bidirectional!r}")
        self.bidirectional = bool(bidirectional)
        self.directions = 2 if self.bidirectional else 1
        rng = default_rng(rng)
        self._cells: dict[str, RecurrentWeights] = {}
        for k in range(self.num_layers):
            n_in = self.input_size if k == 0 else self.hidden_size * self.directions
            for d in range(self.directions):
                self._cells[self.cell_name(k, d)] = RecurrentWeights(n_in, self.hidden_size, self.GATES, rng,
                                                                     self.dtype)
        self._cache = None

    @staticmethod
    def cell_name(layer: int, direction: int) -> str:
        return f"l{layer}" + ("_reverse" if direction else "")

    def children(self):
        return self._cells

    def forward(self, x):
        expect_input(self, x, 3, "(N, T, input_size)", 2, self.input_size)
        if x.shape[1] == 0:
            raise ValueError(f"{type(self).__name__} needs at least one time step, got input of shape {x.shape}")
        seq = np.ascontiguousarray(x.transpose(1, 0, 2))           # (T, N, F)
        t_len, n, hid = seq.shape[0], seq.shape[1], self.hidden_size
        cache = []
        for k in range(self.num_layers):
            out = np.empty((t_len, n, hid * self.directions), self.dtype)
            states = [None] * self.directions

            def direction(d, k=k, seq=seq, out=out, states=states):
                w = self._cells[self.cell_name(k, d)].params
                proj = (seq.reshape(t_len * n, -1) @ w["W_ih"].T).reshape(t_len, n, -1)
                h, state = self._run(proj, w, bool(d))
                out[:, :, d * hid:(d + 1) * hid] = h
                states[d] = (h, state)
            _each_direction(self.directions, t_len * n * self.GATES * hid * (seq.shape[2] + hid), direction)
            cache.append((seq, states))
            seq = out
        self._cache = None if in_inference() else cache
        return np.ascontiguousarray(seq.transpose(1, 0, 2))

    def forget(self):
        self._cache = None

    def backward(self, dy):
        if self._cache is None:
            raise backward_before_forward(self)
        dseq = np.ascontiguousarray(dy.transpose(1, 0, 2))          # (T, N, H * directions)
        hid = self.hidden_size
        for k in reversed(range(self.num_layers)):
            seq, states = self._cache[k]
            t_len, n, f = seq.shape
            parts = [None] * self.directions

            def direction(d, k=k, seq=seq, states=states, dseq=dseq, parts=parts):
                h, state = states[d]
                cell = self._cells[self.cell_name(k, d)]
                w, g = cell.params, cell.grads
                dzx, dzh = self._run_backward(np.ascontiguousarray(dseq[:, :, d * hid:(d + 1) * hid]), h, state,
                                              w, bool(d))
                flat = dzx.reshape(t_len * n, -1)
                np.matmul(flat.T, seq.reshape(t_len * n, f), out=g["W_ih"])
                np.sum(flat, axis=0, out=g["b_ih"])
                np.sum(dzh.reshape(t_len * n, -1), axis=0, out=g["b_hh"])
                # W_hh meets h_{t-1}: the steps with a previous state, paired with it
                dz_rec, h_prev = (dzh[:-1], h[1:]) if d else (dzh[1:], h[:-1])
                np.matmul(dz_rec.reshape(-1, dzh.shape[2]).T, h_prev.reshape(-1, hid), out=g["W_hh"])
                parts[d] = flat @ w["W_ih"]
            _each_direction(self.directions, t_len * n * self.GATES * hid * (f + hid), direction)
            dx = parts[0]
            for part in parts[1:]:                     # in a fixed order, whichever finished first
                dx = dx + part
            dseq = dx.reshape(t_len, n, f)
        return np.ascontiguousarray(dseq.transpose(1, 0, 2))

    def _run(self, proj, w, reverse):
        """One direction's steps from its input projections ``proj`` (T, N, G*H), which it
        may overwrite: ``(h, state)``, ``h`` (T, N, H) the outputs, ``state`` what
        :meth:`_run_backward` needs."""
        raise NotImplementedError

    def _run_backward(self, dh, h, state, w, reverse):
        """``(dzx, dzh)`` (T, N, G*H): the gradients of the input projections (with ``b_ih``)
        and of the recurrent ones (with ``b_hh``) from ``dh`` (T, N, H)."""
        raise NotImplementedError

    def hyper(self):
        return {"input_size": self.input_size, "hidden_size": self.hidden_size, "num_layers": self.num_layers,
                "bidirectional": self.bidirectional}


@register
class LSTM(_Recurrent):
    """Long short-term memory (PyTorch's ``nn.LSTM(batch_first=True)``, zero initial state).

    x : (N, T, input_size) -> y : (N, T, hidden_size * (2 if bidirectional else 1)), the
    hidden state of the last layer at every step (forward direction first). Per layer and
    direction, with gates ``i, f, g, o`` in that order along the 4H rows of the weights::

        i, f, o = sigmoid(.), g = tanh(.)   of   x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh
        c_t = f * c_{t-1} + i * g,  h_t = o * tanh(c_t)

    Parameters are drawn from U(-1/sqrt(H), 1/sqrt(H)) as in PyTorch. No buffers; train
    and eval mode compute the same.
    """

    GATES = 4

    def _run(self, proj, w, reverse):
        proj += w["b_ih"] + w["b_hh"]
        t_len, n, _ = proj.shape
        h = np.empty((t_len, n, self.hidden_size), self.dtype)
        c = np.empty_like(h)
        kernels.lstm_forward(proj, w["W_hh"], reverse, h, c)
        return h, (proj, c)

    def _run_backward(self, dh, h, state, w, reverse):
        gates, c = state
        dz = kernels.lstm_backward(dh, gates, c, w["W_hh"], reverse, np.empty_like(gates))
        return dz, dz


@register
class GRU(_Recurrent):
    """Gated recurrent unit (PyTorch's ``nn.GRU(batch_first=True)``, zero initial state).

    x : (N, T, input_size) -> y : (N, T, hidden_size * (2 if bidirectional else 1)). Per
    layer and direction, with gates ``r, z, n`` in that order along the 3H rows::

        r, z = sigmoid(x_t W_i{r,z}^T + b_i{r,z} + h_{t-1} W_h{r,z}^T + b_h{r,z})
        n = tanh(x_t W_in^T + b_in + r * (h_{t-1} W_hn^T + b_hn))
        h_t = (1 - z) * n + z * h_{t-1}

    Parameters are drawn from U(-1/sqrt(H), 1/sqrt(H)) as in PyTorch. No buffers; train
    and eval mode compute the same.
    """

    GATES = 3

    def _run(self, proj, w, reverse):
        proj += w["b_ih"]
        t_len, n, _ = proj.shape
        h = np.empty((t_len, n, self.hidden_size), self.dtype)
        hn = np.empty_like(h)
        kernels.gru_forward(proj, np.ascontiguousarray(w["W_hh"].T), w["b_hh"], reverse, h, hn)
        return h, (proj, hn)

    def _run_backward(self, dh, h, state, w, reverse):
        gates, hn = state
        dzx, dzh = np.empty_like(gates), np.empty_like(gates)
        kernels.gru_backward(dh, gates, hn, h, w["W_hh"], reverse, dzx, dzh)
        return dzx, dzh

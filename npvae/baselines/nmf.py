"""Supervised non-negative matrix factorisation (NMF) for source separation.

A non-negative data matrix ``V`` (D, N) -- one column per image or per spectrogram
frame -- is approximated by ``W H`` with a dictionary ``W`` (D, K) and activations
``H`` (K, N), both non-negative. Supervised separation:

1. learn a dictionary per source on that source's training data (``W_s``, ``H_s`` both
   updated);
2. on a mixture, keep ``W = [W_1, ..., W_S]`` fixed and fit only ``H``;
3. each source's part ``W_s H_s`` becomes a soft mask ``W_s H_s / sum_r W_r H_r``
   applied to the mixture (so the estimates add up to the mixture).

Updates are Lee & Seung's multiplicative rules, which keep the factors non-negative
and never increase the objective:

* Euclidean ``||V - WH||^2``: ``H <- H (W'V) / (W'WH)``, ``W <- W (VH') / (WHH')``;
* generalised KL ``sum(V log(V / WH) - V + WH)``: ``H <- H (W'(V / WH)) / (W'1)``,
  ``W <- W ((V / WH) H') / (1 H')``.
"""
from __future__ import annotations

import numpy as np

from ..audio.stft import istft, stft
from ..inputs import as_batch_size

OBJECTIVES = ("euclidean", "kl")
EPS = 1e-10


def objective(V, W, H, loss: str = "euclidean") -> float:
    """The NMF objective of ``V ~ W H`` (a float, summed over all entries)."""
    WH = W @ H
    if loss == "euclidean":
        return float(np.sum((V - WH) ** 2, dtype=np.float64))
    if loss == "kl":
        V64, WH64 = V.astype(np.float64), WH.astype(np.float64) + EPS
        return float(np.sum(np.where(V64 > 0, V64 * np.log((V64 + EPS) / WH64), 0.0) - V64 + WH64))
    raise ValueError(f"unknown NMF objective {loss!r}: choose one of {OBJECTIVES}")


def update_h(V, W, H, loss: str = "euclidean"):
    """One multiplicative update of the activations H (K, N); returns the new H."""
    if loss == "euclidean":
        return H * (W.T @ V) / (W.T @ (W @ H) + EPS)
    if loss == "kl":
        return H * (W.T @ (V / (W @ H + EPS))) / (W.sum(axis=0)[:, None] + EPS)
    raise ValueError(f"unknown NMF objective {loss!r}: choose one of {OBJECTIVES}")


def update_w(V, W, H, loss: str = "euclidean"):
    """One multiplicative update of the dictionary W (D, K); returns the new W."""
    if loss == "euclidean":
        return W * (V @ H.T) / ((W @ H) @ H.T + EPS)
    if loss == "kl":
        return W * ((V / (W @ H + EPS)) @ H.T) / (H.sum(axis=1)[None, :] + EPS)
    raise ValueError(f"unknown NMF objective {loss!r}: choose one of {OBJECTIVES}")


def nmf(V, k: int, n_iter: int = 200, loss: str = "euclidean", W=None, rng=None,
        record: bool = False):
    """Factorise V (D, N) >= 0 as W (D, k) H (k, N).

    With ``W`` given it stays fixed and only H is fitted (the separation step).
    Returns ``(W, H, objectives)``; ``objectives`` lists the objective before the
    first and after every iteration when ``record`` is true (else it is empty).
    """
    if loss not in OBJECTIVES:
        raise ValueError(f"unknown NMF objective {loss!r}: choose one of {OBJECTIVES}")
    V = np.asarray(V, np.float32)
    if np.any(V < 0):
        raise ValueError("NMF needs non-negative data")
    rng = np.random.default_rng(rng)
    scale = np.sqrt(max(float(V.mean()), EPS) / k)
    fixed = W is not None
    W = (np.asarray(W, np.float32) if fixed
         else (rng.uniform(0.1, 1.0, (V.shape[0], k)) * scale).astype(np.float32))
    H = (rng.uniform(0.1, 1.0, (W.shape[1], V.shape[1])) * scale).astype(np.float32)
    trace = [objective(V, W, H, loss)] if record else []
    for _ in range(n_iter):
        H = update_h(V, W, H, loss)
        if not fixed:
            W = update_w(V, W, H, loss)
        if record:
            trace.append(objective(V, W, H, loss))
    return W, H, trace


class SupervisedNMF:
    """One dictionary per source, learned on that source's data; masks on mixtures.

    k : atoms per source. loss : "euclidean" or "kl". n_iter : multiplicative updates
    for learning each dictionary; ``fit_iter`` for the activations of a mixture.
    """

    def __init__(self, k: int = 32, loss: str = "euclidean", n_iter: int = 200, fit_iter: int = 100,
                 seed: int = 0):
        if loss not in OBJECTIVES:
            raise ValueError(f"unknown NMF objective {loss!r}: choose one of {OBJECTIVES}")
        self.k, self.loss, self.n_iter, self.fit_iter, self.seed = int(k), loss, int(n_iter), int(fit_iter), seed
        self.dictionaries: list[np.ndarray] = []

    def fit(self, sources) -> "SupervisedNMF":
        """sources : one (D, N_s) non-negative training matrix per source."""
        self.dictionaries = [nmf(V, self.k, self.n_iter, self.loss, rng=[self.seed, s])[0]
                             for s, V in enumerate(sources)]
        return self

    def parts(self, V) -> np.ndarray:
        """Each source's part ``W_s H_s`` of the mixture V (D, N): (S, D, N)."""
        if not self.dictionaries:
            raise RuntimeError("SupervisedNMF.fit must run before separation")
        W = np.concatenate(self.dictionaries, axis=1)
        _, H, _ = nmf(V, W.shape[1], self.fit_iter, self.loss, W=W, rng=[self.seed, 99])
        return np.stack([Ws @ H[s * self.k:(s + 1) * self.k] for s, Ws in enumerate(self.dictionaries)])

    def masks(self, V) -> np.ndarray:
        """Soft masks (S, D, N) summing to one over the sources."""
        p = self.parts(V)
        return p / (p.sum(axis=0, keepdims=True) + EPS)

    def __repr__(self):
        return f"SupervisedNMF(k={self.k}, loss={self.loss!r}, n_iter={self.n_iter}, fit_iter={self.fit_iter})"


class ImageNMFSeparator:
    """Supervised NMF for images, with the models' ``separate`` interface.

    The sources are estimated as masks times the mixture's total intensity (``2m`` for
    the average rule, ``m`` for the sum rule), clipped to [0, 1].
    """

    def __init__(self, nmf_model: SupervisedNMF, rule: str = "average"):
        self.nmf, self.rule = nmf_model, rule

    @classmethod
    def train(cls, digits, fashion, rule: str = "average", **nmf_options) -> "ImageNMFSeparator":
        """digits, fashion : (N, 28, 28) training images in [0, 1]."""
        flat = [np.asarray(a, np.float32).reshape(len(a), -1).T for a in (digits, fashion)]
        return cls(SupervisedNMF(**nmf_options).fit(flat), rule)

    def separate(self, mixtures, batch_size: int = 2000):
        """mixtures (N, 28, 28) -> digit, fashion, mixture_hat, each (N, 28, 28)."""
        batch_size = as_batch_size(batch_size)
        m = np.asarray(mixtures, np.float32)
        outs = []
        for i in range(0, len(m), batch_size):
            mb = m[i:i + batch_size]
            masks = self.nmf.masks(mb.reshape(len(mb), -1).T)          # (2, 784, n)
            total = 2 * mb if self.rule == "average" else mb
            est = np.clip(masks.transpose(0, 2, 1).reshape(2, *mb.shape) * total, 0, 1)
            outs.append(est)
        d, f = np.concatenate(outs, axis=1)
        mix = (d + f) / 2 if self.rule == "average" else np.clip(d + f, 0, 1)
        return d, f, mix


class SpectrogramNMFSeparator:
    """Supervised NMF for music on STFT magnitudes, with the music ``Separator``'s
    ``separate_mono`` interface (so :func:`npvae.tasks.music.evaluate` scores it).

    The masks multiply the mixture's complex STFT (the mixture's phase is reused).
    """

    def __init__(self, nmf_model: SupervisedNMF, stft_cfg):
        self.nmf, self.stft_cfg = nmf_model, stft_cfg

    @classmethod
    def train(cls, tracks, stft_cfg, max_frames: int = 20000, seed: int = 0,
              **nmf_options) -> "SpectrogramNMFSeparator":
        """Dictionaries of voice and accompaniment magnitudes from ``tracks`` (at most
        ``max_frames`` frames per source, drawn at random)."""
        mags = [np.concatenate([np.abs(stft(getattr(t, name), stft_cfg)) for t in tracks], axis=1)
                for name in ("voice", "accompaniment")]
        rng = np.random.default_rng(seed)
        if mags[0].shape[1] > max_frames:
            keep = np.sort(rng.choice(mags[0].shape[1], max_frames, replace=False))
            mags = [m[:, keep] for m in mags]
        return cls(SupervisedNMF(seed=seed, **nmf_options).fit(mags), stft_cfg)

    def separate_mono(self, x, wiener: bool = False, shifts: int = 1) -> np.ndarray:
        """x : (n_samples,) at the STFT's rate -> float32 (2, n_samples). ``wiener`` and
        ``shifts`` are ignored (the masks are already ratios; NMF is the same at every
        frame offset)."""
        x = np.asarray(x, np.float32)
        X = stft(x, self.stft_cfg)
        M = self.nmf.masks(np.abs(X))
        return istft((M * X[None]).astype(np.complex64), self.stft_cfg, length=len(x))


__all__ = ["nmf", "objective", "update_h", "update_w", "SupervisedNMF", "ImageNMFSeparator",
           "SpectrogramNMFSeparator", "OBJECTIVES"]

"""Mixtures of an MNIST digit and a Fashion-MNIST item, the image separation task.

Images here are float32 in [0, 1] of shape (N, 28, 28); uint8 inputs (0..255)
are divided by 255. Two mixing rules:

* ``"average"``: ``(digit + fashion) / 2`` (stays in [0, 1], the default);
* ``"sum"``: ``clip(digit + fashion, 0, 1)``.

Splits (:class:`MixtureData`):

* **train**: the first ``N - n_validation`` images of each training split
  (55,000 by default); each epoch pairs them afresh with two independent
  permutations drawn from the caller's :class:`numpy.random.Generator`.
* **validation**: the last ``n_validation`` (5,000) images of each training
  split, paired once by a generator seeded from ``(seed, 1)``.
* **evaluation**: ``n_eval`` (10,000) pairs from the two test splits, paired by
  a generator seeded from ``(seed, 2)``.

The validation and evaluation pairs depend only on ``seed``, never on the
training generator, so every model of a comparison is scored on the same pairs.
"""
from __future__ import annotations

import os

import numpy as np

from .mnist import load_images

RULES = ("average", "sum")
N_VALIDATION = 5000
N_EVAL = 10000
_VALIDATION_STREAM, _EVAL_STREAM = 1, 2


def to_unit(images: np.ndarray) -> np.ndarray:
    """float32 images in [0, 1]: uint8 (0..255) is divided by 255, floats are only cast."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(255)
    return images.astype(np.float32, copy=False)


def mix(digit: np.ndarray, fashion: np.ndarray, rule: str = "average") -> np.ndarray:
    """Mix two equally shaped image arrays (float in [0, 1], or uint8) into float32 in [0, 1].

    ``rule="average"`` gives ``(digit + fashion) / 2``; ``rule="sum"`` gives
    ``clip(digit + fashion, 0, 1)``.
    """
    if rule not in RULES:
        raise ValueError(f"unknown mixing rule {rule!r}; choose one of {RULES}")
    d, f = to_unit(digit), to_unit(fashion)
    if d.shape != f.shape:
        raise ValueError(f"digit and fashion images differ in shape: {d.shape} vs {f.shape}")
    if rule == "average":
        return (d + f) * np.float32(0.5)
    return np.clip(d + f, 0.0, 1.0)


def _pairs(rng: np.random.Generator, n_digit: int, n_fashion: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` (digit, fashion) index pairs; no image is used twice."""
    return rng.permutation(n_digit)[:n], rng.permutation(n_fashion)[:n]


class MixtureData:
    """Digit/fashion pairs for training, validation and evaluation.

    Parameters
    ----------
    digit_train, fashion_train : ndarray of shape (N, 28, 28), uint8 or float in [0, 1]
        the two training splits; their last ``n_validation`` images are held out.
    digit_test, fashion_test : ndarray of shape (M, 28, 28)
        the two test splits, for the evaluation pairs.
    rule : ``"average"`` or ``"sum"`` (see :func:`mix`)
    seed : fixes the validation and evaluation pairs
    n_validation : images held out of each training split (5,000)
    n_eval : evaluation pairs drawn from the test splits (10,000, at most ``M``)

    Arrays are kept as given (uint8 stays uint8, four times smaller) and
    converted to float32 batch by batch.
    """

    def __init__(self, digit_train, fashion_train, digit_test, fashion_test, rule: str = "average",
                 seed: int = 0, n_validation: int = N_VALIDATION, n_eval: int = N_EVAL):
        if rule not in RULES:
            raise ValueError(f"unknown mixing rule {rule!r}; choose one of {RULES}")
        arrays = dict(digit_train=digit_train, fashion_train=fashion_train,
                      digit_test=digit_test, fashion_test=fashion_test)
        for name, a in arrays.items():
            if np.ndim(a) != 3:
                raise ValueError(f"{name} must have shape (N, H, W), got {np.shape(a)}")
        for name in ("digit_train", "fashion_train"):
            if not 0 <= n_validation < len(arrays[name]):
                raise ValueError(f"n_validation={n_validation} leaves no training images in {name} "
                                 f"({len(arrays[name])} images)")
        if not 0 < n_eval <= min(len(digit_test), len(fashion_test)):
            raise ValueError(f"n_eval={n_eval} must be between 1 and the test-split size "
                             f"{min(len(digit_test), len(fashion_test))}")
        self.rule, self.seed = rule, seed
        n_dt, n_ft = len(digit_train) - n_validation, len(fashion_train) - n_validation
        self.digit_train, self.digit_val = digit_train[:n_dt], digit_train[n_dt:]
        self.fashion_train, self.fashion_val = fashion_train[:n_ft], fashion_train[n_ft:]
        self.digit_test, self.fashion_test = digit_test, fashion_test
        self.n_validation, self.n_eval = n_validation, n_eval
        self._cache: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def __repr__(self) -> str:
        return (f"MixtureData(rule={self.rule!r}, train={self.n_train}, "
                f"validation={self.n_validation}, eval={self.n_eval}, seed={self.seed})")

    @property
    def n_train(self) -> int:
        """Training pairs per epoch: the smaller of the two training parts."""
        return min(len(self.digit_train), len(self.fashion_train))

    def n_batches(self, batch_size: int, drop_last: bool = False) -> int:
        """Batches per epoch that :meth:`batches` yields."""
        return self.n_train // batch_size if drop_last else -(-self.n_train // batch_size)

    def _make(self, digits: np.ndarray, fashion: np.ndarray):
        d, f = to_unit(digits), to_unit(fashion)
        return mix(d, f, self.rule), d, f

    def batches(self, rng: np.random.Generator, batch_size: int = 64, drop_last: bool = False, shard=None):
        """One epoch of training batches, paired afresh from ``rng``.

        ``shard(n) -> slice``, if given (``comm.shard`` under MPI), picks the part of each
        batch of ``n`` pairs that this process makes; the pairing is drawn in full, so the
        parts of all processes make up the batch a single process would get.

        Yields
        ------
        (mixture, digit, fashion) : three float32 ndarrays of shape (B, 28, 28) in [0, 1],
            ``B = batch_size`` except perhaps the last batch (dropped if ``drop_last``),
            or the shard's size.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        di, fi = _pairs(rng, len(self.digit_train), len(self.fashion_train), self.n_train)
        stop = self.n_batches(batch_size, drop_last) * batch_size
        for start in range(0, min(stop, self.n_train), batch_size):
            d, f = di[start:start + batch_size], fi[start:start + batch_size]
            if shard is not None:
                part = shard(len(d))
                d, f = d[part], f[part]
            yield self._make(self.digit_train[d], self.fashion_train[f])

    def validation_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Indices into the held-out digit and fashion images, each of shape (n_validation,)."""
        rng = np.random.default_rng([self.seed, _VALIDATION_STREAM])
        return _pairs(rng, len(self.digit_val), len(self.fashion_val), self.n_validation)

    def evaluation_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Indices into the digit and fashion test splits, each of shape (n_eval,)."""
        rng = np.random.default_rng([self.seed, _EVAL_STREAM])
        return _pairs(rng, len(self.digit_test), len(self.fashion_test), self.n_eval)

    def validation_set(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The fixed validation set: (mixture, digit, fashion), float32 (n_validation, 28, 28).

        Computed once and cached; the arrays are read-only.
        """
        if "val" not in self._cache:
            di, fi = self.validation_pairs()
            self._cache["val"] = self._freeze(self._make(self.digit_val[di], self.fashion_val[fi]))
        return self._cache["val"]

    def evaluation_set(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The fixed evaluation set from the test splits: (mixture, digit, fashion),
        float32 (n_eval, 28, 28). Computed once and cached; the arrays are read-only."""
        if "eval" not in self._cache:
            di, fi = self.evaluation_pairs()
            self._cache["eval"] = self._freeze(self._make(self.digit_test[di], self.fashion_test[fi]))
        return self._cache["eval"]

    @staticmethod
    def _freeze(arrays):
        for a in arrays:
            a.flags.writeable = False
        return arrays


def load_mixture_data(data_dir: str | os.PathLike | None = None, rule: str = "average", seed: int = 0,
                      n_validation: int = N_VALIDATION, n_eval: int = N_EVAL,
                      download: bool = True) -> MixtureData:
    """Load MNIST and Fashion-MNIST (see :func:`npvae.data.mnist.load_images`) into a :class:`MixtureData`."""
    digit_train, _ = load_images("mnist", "train", data_dir, download)
    fashion_train, _ = load_images("fashion-mnist", "train", data_dir, download)
    digit_test, _ = load_images("mnist", "test", data_dir, download)
    fashion_test, _ = load_images("fashion-mnist", "test", data_dir, download)
    return MixtureData(digit_train, fashion_train, digit_test, fashion_test, rule=rule, seed=seed,
                       n_validation=n_validation, n_eval=n_eval)

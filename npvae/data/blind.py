"""Data for blind separation: training sees mixtures, and only mixtures.

A blind model must learn from what an observer of mixtures would have. So the
training set is a fixed array of mixtures, made once (seeded) from the training
images and then the only thing kept: :class:`MixtureOnlyData` holds no source
image, and pairs are not redrawn each epoch (redrawing needs the sources).

:func:`load_blind_data` builds it for the two blind image tasks:

* ``"mnist-fashion"``: an MNIST digit with a Fashion-MNIST item (as the supervised models);
* ``"mnist-mnist"``: two MNIST digits (the setting of Neri et al. 2021).

Validation and evaluation pairs are those of :class:`npvae.data.mixtures.MixtureData`
(same seed, same 10,000 fixed test pairs as the supervised models, for MNIST +
Fashion-MNIST); their sources are used to *score* the model, never to train it.
"""
from __future__ import annotations

import os

import numpy as np

from .mixtures import MixtureData, mix
from .mnist import load_images

TASKS = {"mnist-fashion": ("mnist", "fashion-mnist"), "mnist-mnist": ("mnist", "mnist")}
SOURCE_NAMES = {"mnist-fashion": ("digit", "fashion"), "mnist-mnist": ("digit_a", "digit_b")}
_TRAIN_STREAM = 3


class MixtureOnlyData:
    """A fixed set of training mixtures, float32 (N, H, W), read-only: images in [0, 1]
    (``upper=1``) or non-negative magnitudes (``upper=None``).

    ``batches(rng, batch_size)`` shuffles them each epoch and yields (B, H, W)
    arrays: one array per batch, nothing else.
    """

    def __init__(self, mixtures: np.ndarray, upper: float | None = 1.0):
        m = np.asarray(mixtures, dtype=np.float32)
        if m.ndim != 3 or len(m) == 0:
            raise ValueError(f"mixtures must be a non-empty array (N, H, W), got shape {m.shape}")
        if m.min() < 0 or (upper is not None and m.max() > upper):
            raise ValueError(f"mixtures must lie in [0, {upper if upper is not None else 'inf'}), "
                             f"got values in [{m.min()}, {m.max()}]")
        m.flags.writeable = False
        self.mixtures = m

    def __len__(self) -> int:
        return len(self.mixtures)

    def n_batches(self, batch_size: int) -> int:
        return -(-len(self) // batch_size)

    def batches(self, rng: np.random.Generator, batch_size: int = 128, shard=None):
        """One epoch of shuffled batches. ``shard(n) -> slice`` (``comm.shard`` under MPI)
        picks this process's part of each batch of ``n``; the order is drawn in full, so
        the parts of all processes make up the batch one process would get."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        order = rng.permutation(len(self))
        for start in range(0, len(self), batch_size):
            idx = np.sort(order[start:start + batch_size])
            yield self.mixtures[idx if shard is None else idx[shard(len(idx))]]


def mix_training_pairs(sources_a: np.ndarray, sources_b: np.ndarray, rule: str, seed: int) -> MixtureOnlyData:
    """Pair the two training image sets once (seeded) and keep only the mixtures.

    Each image of the smaller set is used once; with the same array twice (MNIST +
    MNIST) the second permutation is rotated by one place so that no image is mixed
    with itself."""
    rng = np.random.default_rng([seed, _TRAIN_STREAM])
    n = min(len(sources_a), len(sources_b))
    ia, ib = rng.permutation(len(sources_a))[:n], rng.permutation(len(sources_b))[:n]
    if sources_a is sources_b:
        ib = np.roll(ia, 1)
    out = np.empty((n,) + sources_a.shape[1:], np.float32)
    for s in range(0, n, 10000):    # in blocks, to bound the float32 temporaries
        out[s:s + 10000] = mix(sources_a[ia[s:s + 10000]], sources_b[ib[s:s + 10000]], rule)
    return MixtureOnlyData(out)


def load_blind_data(task: str = "mnist-fashion", data_dir: str | os.PathLike | None = None,
                    rule: str = "average", seed: int = 0, train_limit: int | None = None,
                    eval_limit: int | None = None, n_validation: int = 5000):
    """``(train, scoring)``: the training mixtures (:class:`MixtureOnlyData`) and a
    :class:`MixtureData` whose validation and evaluation sets score the model.

    ``train_limit`` keeps that many training images per set (quick runs, tests);
    ``eval_limit`` that many evaluation pairs. The training images are dropped once
    the mixtures are made: only ``scoring`` keeps sources, and the training step
    never receives it.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {sorted(TASKS)}")
    a_name, b_name = TASKS[task]
    train_a, _ = load_images(a_name, "train", data_dir)
    test_a, _ = load_images(a_name, "test", data_dir)
    train_b, test_b = (train_a, test_a) if b_name == a_name else (load_images(b_name, "train", data_dir)[0],
                                                                  load_images(b_name, "test", data_dir)[0])
    if train_limit is not None:
        n_validation = max(64, min(n_validation, train_limit // 4))
    n_eval = len(test_a) if eval_limit is None else int(eval_limit)
    scoring = MixtureData(train_a, train_b, test_a, test_b, rule=rule, seed=seed, n_validation=n_validation,
                          n_eval=n_eval)
    fit_a, fit_b = scoring.digit_train, scoring.fashion_train   # the training parts (validation held out)
    if train_limit is not None:
        fit_a, fit_b = fit_a[:train_limit], fit_b[:train_limit]
    if b_name == a_name:
        fit_b = fit_a
    train = mix_training_pairs(fit_a, fit_b, rule, seed)
    # Scoring keeps only what scoring needs.
    scoring.digit_train = scoring.digit_train[:0]
    scoring.fashion_train = scoring.fashion_train[:0]
    return train, scoring

"""Supervised NMF: the multiplicative updates never increase the objective, stay
non-negative, and separate sources whose dictionaries differ."""
import numpy as np
import pytest

from npvae.baselines.nmf import ImageNMFSeparator, SupervisedNMF, nmf, objective


@pytest.mark.parametrize("loss", ["euclidean", "kl"])
def test_multiplicative_updates_reduce_the_objective(rng, loss):
    V = rng.uniform(size=(30, 40)).astype(np.float32) ** 2
    W, H, trace = nmf(V, 5, n_iter=60, loss=loss, rng=0, record=True)
    assert len(trace) == 61 and np.all(np.isfinite(trace))
    assert np.all(np.diff(trace) <= 1e-4 * np.abs(np.asarray(trace[:-1])) + 1e-6)   # float32 round-off
    assert trace[-1] < 0.8 * trace[0]
    assert W.min() >= 0 and H.min() >= 0
    assert objective(V, W, H, loss) == pytest.approx(trace[-1], rel=1e-5)


@pytest.mark.parametrize("loss", ["euclidean", "kl"])
def test_activation_fit_with_a_fixed_dictionary_reduces_the_objective(rng, loss):
    W = rng.uniform(size=(20, 6)).astype(np.float32)
    V = W @ rng.uniform(size=(6, 15)).astype(np.float32)
    W_out, H, trace = nmf(V, 6, n_iter=100, loss=loss, W=W, rng=1, record=True)
    assert W_out is not None and np.array_equal(W_out, W)
    assert np.all(np.diff(trace) <= 1e-4 * np.abs(np.asarray(trace[:-1])) + 1e-6)
    assert trace[-1] < 1e-2 * trace[0]


def test_supervised_nmf_separates_disjoint_sources(rng):
    # source 0 lives on the first half of the pixels, source 1 on the second half
    a = np.zeros((200, 28, 28), np.float32)
    b = np.zeros((200, 28, 28), np.float32)
    a[:, :14] = rng.uniform(size=(200, 14, 28))
    b[:, 14:] = rng.uniform(size=(200, 14, 28))
    sep = ImageNMFSeparator.train(a[:150], b[:150], k=8, n_iter=50, fit_iter=50)
    mix = (a[150:] + b[150:]) / 2
    d, f, m = sep.separate(mix)
    assert d.shape == f.shape == m.shape == mix.shape
    assert np.mean((d - a[150:]) ** 2) < 0.1 * np.mean((mix - a[150:]) ** 2)
    assert np.mean((f - b[150:]) ** 2) < 0.1 * np.mean((mix - b[150:]) ** 2)
    masks = SupervisedNMF(k=2, n_iter=5, fit_iter=5).fit([a[:20].reshape(20, -1).T,
                                                          b[:20].reshape(20, -1).T]).masks(mix.reshape(50, -1).T)
    np.testing.assert_allclose(masks.sum(axis=0), 1, atol=1e-4)


def test_bad_input_is_refused(rng):
    with pytest.raises(ValueError, match="non-negative"):
        nmf(-np.ones((3, 3)), 2)
    with pytest.raises(ValueError, match="objective"):
        nmf(np.ones((3, 3)), 2, loss="is")

"""Image metrics: MSE/PSNR known values, SSIM against a direct loop implementation of Wang et al. 2004."""

import numpy as np
import pytest

from npvae.metrics.image import mse, psnr, separation_report, ssim


def ssim_direct(x, y, data_range=1.0, size=11, sigma=1.5, k1=0.01, k2=0.03):
    """SSIM of one image pair, window by window, with centred weighted moments."""
    k = np.arange(size) - size // 2
    w = np.exp(-(k[:, None] ** 2 + k[None, :] ** 2) / (2 * sigma ** 2))
    w /= w.sum()
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    values = []
    for i in range(x.shape[0] - size + 1):
        for j in range(x.shape[1] - size + 1):
            px, py = x[i:i + size, j:j + size], y[i:i + size, j:j + size]
            mx, my = np.sum(w * px), np.sum(w * py)
            vx, vy = np.sum(w * (px - mx) ** 2), np.sum(w * (py - my) ** 2)
            cxy = np.sum(w * (px - mx) * (py - my))
            values.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
    return float(np.mean(values))


@pytest.fixture
def pairs(rng):
    """Three pairs of 28x28 images in [0, 1]: noisy copy, blurred-ish copy, unrelated."""
    x = rng.random((3, 28, 28))
    y = np.stack([np.clip(x[0] + 0.1 * rng.standard_normal((28, 28)), 0, 1),
                  0.5 * x[1] + 0.25 * (np.roll(x[1], 1, 0) + np.roll(x[1], 1, 1)),
                  rng.random((28, 28))])
    return x, y


def test_mse_and_psnr_known_values():
    x = np.zeros((2, 28, 28))
    y = np.stack([np.full((28, 28), 0.5), np.full((28, 28), 0.1)])
    assert np.allclose(mse(x, y), [0.25, 0.01])
    assert np.allclose(psnr(x, y), [10 * np.log10(4), 20.0])
    assert np.allclose(psnr(x * 255, y * 255, data_range=255), [10 * np.log10(4), 20.0])


def test_psnr_of_identical_images_is_finite(rng):
    x = rng.random((4, 28, 28))
    with np.errstate(all="raise"):
        p = psnr(x, x)
    assert p.shape == (4,) and np.all(np.isfinite(p)) and np.allclose(p, 100.0)


def test_ssim_of_identical_images_is_one(rng):
    x = rng.random((5, 28, 28))
    assert np.allclose(ssim(x, x), 1.0, atol=1e-12)
    flat = np.full((1, 28, 28), 0.3)
    assert np.allclose(ssim(flat, flat), 1.0)


def test_ssim_matches_direct_implementation(pairs):
    x, y = pairs
    got = ssim(x, y)
    want = [ssim_direct(a, b) for a, b in zip(x, y)]
    assert got.shape == (3,)
    assert np.allclose(got, want, rtol=0, atol=1e-10)
    assert got[0] > got[2] and got[2] < 0.2  # a noisy copy is far more similar than an unrelated image


def test_ssim_other_sizes_and_ranges(rng):
    x, y = rng.random((2, 16, 20)), rng.random((2, 16, 20))
    assert np.allclose(ssim(x, y), [ssim_direct(a, b) for a, b in zip(x, y)], atol=1e-10)
    assert np.allclose(ssim(255 * x, 255 * y, data_range=255), ssim(x, y), atol=1e-10)
    assert np.allclose(ssim(x, y), ssim(y, x))


def test_ssim_matches_skimage(pairs):
    metrics = pytest.importorskip("skimage.metrics")
    x, y = pairs
    want = [metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False, data_range=1.0) for a, b in zip(x, y)]
    assert np.allclose(ssim(x, y), want, atol=1e-8)


def test_shapes_accepted_and_rejected(rng):
    x = rng.random((4, 1, 28, 28)).astype(np.float32)
    assert ssim(x, x).shape == mse(x, x).shape == (4,)
    assert mse(x[0, 0], x[1, 0]).shape == (1,)
    with pytest.raises(ValueError, match="differ in shape"):
        mse(x, x[:2])
    with pytest.raises(ValueError, match="smaller than"):
        ssim(np.zeros((1, 8, 8)), np.zeros((1, 8, 8)))


def test_non_finite_pixels_are_refused_blank_images_are_scored(rng):
    x = rng.random((3, 28, 28))
    bad = x.copy()
    bad[2, 4, 4] = np.nan
    for fn in (mse, psnr, ssim):
        with pytest.raises(ValueError, match=rf"{fn.__name__}: y holds 1 NaN value\(s\) of 2,352"):
            fn(x, bad)
        with pytest.raises(ValueError, match=rf"{fn.__name__}: x holds 1 infinite"):
            fn(np.where(np.isnan(bad), -np.inf, bad), x)
    with pytest.raises(ValueError, match="separation_report: est_fashion holds 1 NaN"):
        separation_report(x, bad, x, x)
    with pytest.raises(ValueError, match="psnr: data_range must be a positive number"):
        psnr(x, x, data_range=0)
    blank = np.zeros((1, 28, 28))
    assert mse(blank, blank)[0] == 0 and psnr(blank, blank)[0] == pytest.approx(100.0)
    assert ssim(blank, blank)[0] == pytest.approx(1.0)


def test_separation_report():
    rng = np.random.default_rng(0)
    d, f = rng.random((6, 28, 28)), rng.random((6, 28, 28))
    r = separation_report(d, np.clip(f + 0.1, 0, None), d, f)
    assert set(r) == {f"{s}_{m}" for s in ("digit", "fashion", "mean") for m in ("mse", "psnr", "ssim")}
    assert r["digit_mse"] == 0 and np.isclose(r["digit_ssim"], 1) and np.isclose(r["digit_psnr"], 100)
    assert np.isclose(r["fashion_mse"], 0.01) and np.isclose(r["fashion_psnr"], 20)
    assert r["fashion_ssim"] < 1
    for m in ("mse", "psnr", "ssim"):
        assert np.isclose(r[f"mean_{m}"], (r[f"digit_{m}"] + r[f"fashion_{m}"]) / 2)
    assert all(isinstance(v, float) for v in r.values())


def test_ssim_on_a_full_evaluation_set():
    rng = np.random.default_rng(0)
    x = rng.random((10000, 28, 28), dtype=np.float32)
    y = np.clip(x + 0.1 * rng.standard_normal(x.shape, dtype=np.float32), 0, 1)
    s = ssim(x, y)
    assert s.shape == (10000,) and np.all((s > 0) & (s < 1))

"""Per-image quality metrics: MSE, PSNR and SSIM, plus a two-source separation report.

Every metric takes two arrays of images, shape (N, H, W) (also (H, W) for one
image, or (N, 1, H, W) as models output them), and returns one value per image,
shape (N,), computed in float64. NaN or infinite pixels are refused
(:mod:`npvae.metrics.checks`); blank images are scored like any other.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import correlate1d

from .checks import finite

# PSNR of a perfect estimate would be infinite; flooring the MSE caps it at
# 10*log10(data_range**2 / 1e-10) = 100 dB for data_range=1, so means stay finite.
MSE_FLOOR = 1e-10
_CHUNK = 2048  # images per SSIM block, to bound the float64 temporaries (~50 MB at 28x28)


def _images(x: np.ndarray, name: str, metric: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2:
        x = x[None]
    elif x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 3:
        raise ValueError(f"{metric}: {name} must have shape (N, H, W), (N, 1, H, W) or (H, W), got {x.shape}")
    return finite(x, metric, name)


def _pair(x, y, metric: str, data_range: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    x, y = _images(x, "x", metric), _images(y, "y", metric)
    if x.shape != y.shape:
        raise ValueError(f"{metric}: x and y differ in shape: {x.shape} vs {y.shape}")
    if not (np.isfinite(data_range) and data_range > 0):
        raise ValueError(f"{metric}: data_range must be a positive number (the images' full scale, 1.0 for "
                         f"images in [0, 1]), got {data_range}")
    return x, y


def _mse(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.mean((x - y) ** 2, axis=(1, 2))


def mse(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mean squared error of each image pair, shape (N,)."""
    return _mse(*_pair(x, y, "mse"))


def psnr(x: np.ndarray, y: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """Peak signal-to-noise ratio ``10 log10(data_range**2 / MSE)`` in dB, shape (N,).

    The MSE is floored at :data:`MSE_FLOOR`, so identical images give a finite
    100 dB (for ``data_range=1``) rather than infinity.
    """
    x, y = _pair(x, y, "psnr", data_range)
    return 10.0 * np.log10(data_range ** 2 / np.maximum(_mse(x, y), MSE_FLOOR))


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Normalised 1-D Gaussian of ``size`` taps; its outer product is the 2-D SSIM window."""
    k = np.arange(size) - (size - 1) / 2
    g = np.exp(-k ** 2 / (2 * sigma ** 2))
    return g / g.sum()


def ssim(x: np.ndarray, y: np.ndarray, data_range: float = 1.0, win_size: int = 11,
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> np.ndarray:
    """Structural similarity of each image pair (Wang, Bovik, Sheikh & Simoncelli 2004), shape (N,).

    Local means, variances and covariance are weighted by a ``win_size`` x
    ``win_size`` Gaussian window (sigma 1.5, normalised to sum 1; variances use
    those weights, no sample correction), ``C1 = (k1 L)^2``, ``C2 = (k2 L)^2``
    with ``L = data_range``, and the SSIM map

        ((2 mu_x mu_y + C1)(2 sigma_xy + C2)) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2))

    is averaged over the 'valid' positions, where the window lies wholly inside
    the image ((H - 10) x (W - 10) of them for the 11x11 window).
    """
    x, y = _pair(x, y, "ssim", data_range)
    if win_size % 2 == 0:
        raise ValueError(f"win_size must be odd, got {win_size}")
    if min(x.shape[1:]) < win_size:
        raise ValueError(f"images of {x.shape[1:]} are smaller than the {win_size}x{win_size} SSIM window")
    g = gaussian_window(win_size, sigma)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    r = win_size // 2
    valid = (slice(None), slice(r, x.shape[1] - r), slice(r, x.shape[2] - r))

    def local_mean(a):
        # The window is separable: filter rows then columns, keep the valid part.
        return correlate1d(correlate1d(a, g, axis=1), g, axis=2)[valid]

    out = np.empty(len(x))
    for s in range(0, len(x), _CHUNK):
        a, b = x[s:s + _CHUNK], y[s:s + _CHUNK]
        mu_a, mu_b = local_mean(a), local_mean(b)
        var_a = local_mean(a * a) - mu_a ** 2
        var_b = local_mean(b * b) - mu_b ** 2
        cov = local_mean(a * b) - mu_a * mu_b
        smap = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
        out[s:s + _CHUNK] = smap.mean(axis=(1, 2))
    return out


def separation_report(est_digit: np.ndarray, est_fashion: np.ndarray, true_digit: np.ndarray,
                      true_fashion: np.ndarray, data_range: float = 1.0) -> dict[str, float]:
    """Mean MSE, PSNR (dB) and SSIM of each separated source, and their average over the two sources.

    All four inputs are (N, H, W) images in the same units (``data_range`` is their full
    scale). Returns ``{"digit_mse", "digit_psnr", "digit_ssim", "fashion_mse", ...,
    "mean_mse", "mean_psnr", "mean_ssim"}`` as floats.
    """
    for name, a in (("est_digit", est_digit), ("est_fashion", est_fashion), ("true_digit", true_digit),
                    ("true_fashion", true_fashion)):
        finite(np.asarray(a), "separation_report", name)
    report: dict[str, float] = {}
    for source, est, true in (("digit", est_digit, true_digit), ("fashion", est_fashion, true_fashion)):
        report[f"{source}_mse"] = float(mse(est, true).mean())
        report[f"{source}_psnr"] = float(psnr(est, true, data_range).mean())
        report[f"{source}_ssim"] = float(ssim(est, true, data_range).mean())
    for metric in ("mse", "psnr", "ssim"):
        report[f"mean_{metric}"] = (report[f"digit_{metric}"] + report[f"fashion_{metric}"]) / 2
    return report


def format_report(metrics: dict, rows) -> str:
    """A plain-text table of MSE / PSNR (dB) / SSIM, one line per ``(label, key)`` of
    ``rows``, reading ``metrics[key + "_mse"]`` and so on (what :func:`separation_report`
    and :func:`npvae.metrics.permutation.permutation_report` return)."""
    rows = list(rows)
    width = max(10, max(len(label) for label, _ in rows) + 2)
    lines = [f"{'':{width}s}{'MSE':>10s}{'PSNR (dB)':>11s}{'SSIM':>8s}"]
    for label, key in rows:
        lines.append(f"{label:{width}s}{metrics[key + '_mse']:10.5f}{metrics[key + '_psnr']:11.2f}"
                     f"{metrics[key + '_ssim']:8.4f}")
    return "\n".join(lines)

"""What every metric refuses, in one place (the policy of :mod:`npvae.metrics`).

* Signals and images must be finite: a NaN or infinite sample or pixel has no score,
  and letting one through would turn a whole mean into NaN without a word.
* The ratio metrics of audio (BSS Eval's SDR/SIR/SAR, NSDR, SI-SDR) need energy in
  every reference, estimate and mixture they score: the log of a ratio with a silent
  (all-zero) signal on either side is undefined.
* Scores averaged over clips (:func:`~npvae.metrics.audio.gnsdr`,
  :func:`~npvae.metrics.audio.weighted_mean`) must not be NaN; +-inf is a score (the
  SDR of a perfect estimate is +inf) and is averaged as such.

Each refusal is a ValueError naming the metric, the argument and the fix.
"""
from __future__ import annotations

import numpy as np


def finite(x: np.ndarray, metric: str, arg: str) -> np.ndarray:
    """``x`` unchanged if every value is finite, else a ValueError naming ``metric`` and ``arg``."""
    ok = np.isfinite(x)
    if not ok.all():
        bad = int(ok.size - np.count_nonzero(ok))
        kinds = " and ".join(k for k, hit in (("NaN", np.isnan(x).any()), ("infinite", np.isinf(x).any())) if hit)
        raise ValueError(f"{metric}: {arg} holds {bad:,} {kinds} value(s) of {ok.size:,}; a metric scores finite "
                         "signals only: find where they came from (a diverged model, a damaged file) and score "
                         "the finite ones")
    return x


def not_silent(x: np.ndarray, metric: str, arg: str) -> np.ndarray:
    """``x`` (n_sources, n_samples) unchanged if every row has energy, else a ValueError
    naming ``metric``, ``arg`` and the silent rows."""
    silent = np.flatnonzero(~np.any(x, axis=1))
    if silent.size:
        rows = f"row(s) {silent.tolist()} of {arg}" if len(x) > 1 else arg
        raise ValueError(f"{metric}: silent {rows} (all zeros); the ratio it scores is undefined for a "
                         "silent signal: leave such clips out (npvae evaluate does) or score only the sources "
                         "that have energy")
    return x


def not_nan(values: np.ndarray, metric: str, arg: str) -> np.ndarray:
    """Scores ``values`` unchanged unless one is NaN (a ValueError naming ``metric`` and ``arg``)."""
    nan = np.isnan(values)
    if nan.any():
        raise ValueError(f"{metric}: {arg} holds {int(nan.sum()):,} NaN score(s) of {nan.size:,}; a NaN score "
                         "comes from scoring a NaN signal: leave that clip out or find where its NaN came from")
    return values

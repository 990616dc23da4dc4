"""BSS Eval, SI-SDR, NSDR and GNSDR against mir_eval and known values."""
import warnings

import numpy as np
import pytest

from npvae.metrics.audio import (bss_eval_sources, gnsdr, nsdr, separation_scores, si_sdr,
                                 weighted_mean)

mir_sep = pytest.importorskip("mir_eval.separation")


def _mir_eval(ref, est, perm):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mir_sep.bss_eval_sources(ref, est, compute_permutation=perm)


def _case(rng, n=8000):
    ref = rng.standard_normal((2, n))
    est = np.stack([
        ref[0] + 0.3 * ref[1] + 0.1 * rng.standard_normal(n),
        np.convolve(ref[1], [0.6, -0.2, 0.1])[:n] + 0.2 * ref[0] + 0.3 * rng.standard_normal(n),
    ])
    return ref, est


def test_matches_mir_eval_in_given_order(rng):
    ref, est = _case(rng)
    ours = bss_eval_sources(ref, est)
    theirs = _mir_eval(ref, est, False)
    for a, b in zip(ours[:3], theirs[:3]):
        np.testing.assert_allclose(a, b, atol=1e-3)
    np.testing.assert_array_equal(ours[3], [0, 1])


def test_matches_mir_eval_with_permutation(rng):
    ref, est = _case(rng)
    swapped = est[::-1].copy()
    ours = bss_eval_sources(ref, swapped, compute_permutation=True)
    theirs = _mir_eval(ref, swapped, True)
    np.testing.assert_array_equal(ours[3], theirs[3])
    np.testing.assert_array_equal(ours[3], [1, 0])
    for a, b in zip(ours[:3], theirs[:3]):
        np.testing.assert_allclose(a, b, atol=1e-3)
    # without the search the swapped estimates score badly
    assert np.all(bss_eval_sources(ref, swapped)[0] < ours[0])


def test_filtered_reference_is_perfect_up_to_the_filter(rng):
    ref = rng.standard_normal((2, 4000))
    ref[:, -10:] = 0          # so cutting the filtered tail loses nothing
    est = np.stack([np.convolve(r, [1.0, 0.5, -0.25])[:4000] for r in ref])
    sdr, sir, sar, _ = bss_eval_sources(ref, est)
    assert np.all(sdr > 60) and np.all(sir > 60) and np.all(sar > 60)


def test_rejects_silent_and_mismatched_inputs(rng):
    ref = rng.standard_normal((2, 1000))
    with pytest.raises(ValueError, match="silent"):
        bss_eval_sources(np.stack([ref[0], np.zeros(1000)]), ref)
    with pytest.raises(ValueError, match="silent"):
        bss_eval_sources(ref, np.stack([ref[0], np.zeros(1000)]))
    with pytest.raises(ValueError, match="shape"):
        bss_eval_sources(ref, ref[:, :999])


def test_si_sdr_known_value():
    t = np.arange(1000)
    s = np.sin(2 * np.pi * 5 * t / 1000)      # orthogonal over whole periods
    noise = np.cos(2 * np.pi * 7 * t / 1000)
    # estimate = 3 s + 0.3 n: scaled target |3 s|^2 = 9 * 500, error |0.3 n|^2 = 0.09 * 500
    assert si_sdr(s, 3 * s + 0.3 * noise) == pytest.approx(20.0, abs=1e-9)
    assert si_sdr(s, 0.01 * s) == np.inf
    out = si_sdr(np.stack([s, noise]), np.stack([s + noise, noise + 0.1 * s]))
    np.testing.assert_allclose(out, [0.0, 20.0], atol=1e-9)


def test_nsdr_is_sdr_gain_over_the_mixture(rng):
    ref, est = _case(rng)
    mix = ref.sum(axis=0)
    scores = separation_scores(ref, est, mix)
    sdr_est = _mir_eval(ref, est, False)[0]
    sdr_mix = _mir_eval(ref, np.stack([mix, mix]), False)[0]
    np.testing.assert_allclose(scores["sdr"], sdr_est, atol=1e-3)
    np.testing.assert_allclose(scores["mixture_sdr"], sdr_mix, atol=1e-3)
    np.testing.assert_allclose(nsdr(ref, est, mix), sdr_est - sdr_mix, atol=1e-3)


def test_gnsdr_weights_by_length():
    assert gnsdr([1.0, 4.0], [3, 1]) == pytest.approx(1.75)
    np.testing.assert_allclose(gnsdr([[1.0, 2.0], [4.0, 0.0]], [1, 1]), [2.5, 1.0])
    with pytest.raises(ValueError, match="one length per clip"):
        weighted_mean([1.0, 2.0], [1.0])


def test_ten_second_clip(rng):
    n = 160000
    ref = rng.standard_normal((2, n))
    est = ref + 0.3 * ref[::-1] + 0.1 * rng.standard_normal((2, n))
    scores = separation_scores(ref, est, ref.sum(axis=0))
    assert np.all(scores["nsdr"] > 0)


def test_silent_estimate_is_refused_by_every_ratio_metric(rng):
    ref = rng.standard_normal(1000)
    with pytest.raises(ValueError, match=r"si_sdr: silent estimate \(all zeros\)"):
        si_sdr(ref, np.zeros(1000))
    with pytest.raises(ValueError, match=r"si_sdr: silent row\(s\) \[1\] of estimate"):
        si_sdr(np.stack([ref, ref]), np.stack([ref, np.zeros(1000)]))
    with pytest.raises(ValueError, match=r"si_sdr: silent estimate \(without its mean\)"):
        si_sdr(ref, np.full(1000, 0.5), zero_mean=True)
    refs, ests = np.stack([ref, ref[::-1]]), np.stack([ref, np.zeros(1000)])
    for fn, args in ((bss_eval_sources, ()), (separation_scores, (ref,)), (nsdr, (ref,))):
        with pytest.raises(ValueError, match=rf"{fn.__name__}: silent row\(s\) \[1\] of estimated_sources"):
            fn(refs, ests, *args)


def test_non_finite_samples_are_refused_naming_metric_and_argument(rng):
    ref = rng.standard_normal((2, 1000))
    bad = ref.copy()
    bad[1, 5] = np.nan
    with pytest.raises(ValueError, match=r"si_sdr: estimate holds 1 NaN value\(s\) of 2,000"):
        si_sdr(ref, bad)
    with pytest.raises(ValueError, match=r"bss_eval_sources: reference_sources holds 1 infinite"):
        bss_eval_sources(np.where(np.isnan(bad), np.inf, bad), ref)
    with pytest.raises(ValueError, match=r"nsdr: mixture holds 1 NaN"):
        nsdr(ref, ref, np.r_[np.nan, ref.sum(0)[1:]])


def test_averages_refuse_nan_scores_and_take_infinite_ones():
    with pytest.raises(ValueError, match=r"gnsdr: nsdrs holds 1 NaN score"):
        gnsdr([1.0, np.nan], [1, 1])
    with pytest.raises(ValueError, match=r"weighted_mean: values holds 1 NaN score"):
        weighted_mean([[1.0, np.nan]], [1])
    with pytest.raises(ValueError, match="finite, non-negative"):
        gnsdr([1.0, 2.0], [1, np.inf])
    assert gnsdr([1.0, np.inf], [1, 1]) == np.inf


def test_transposed_arrays_are_refused_before_any_work(rng):
    ref = rng.standard_normal((2, 5000))
    for fn in (bss_eval_sources, si_sdr):
        with pytest.raises(ValueError, match=r"transpose.*\(n_sources, n_samples\)"):
            fn(ref.T, ref.T)
    with pytest.raises(ValueError, match="transpose"):
        separation_scores(ref.T, ref.T, ref.sum(0))


def test_silent_reference_is_named(rng):
    ref = rng.standard_normal((2, 2000))
    ref[1] = 0
    with pytest.raises(ValueError, match=r"bss_eval_sources: silent row\(s\) \[1\] of reference_sources"):
        bss_eval_sources(ref, rng.standard_normal((2, 2000)))

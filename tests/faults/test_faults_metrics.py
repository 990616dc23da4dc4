"""Fault cases of the separation scores (npvae.metrics.audio)."""
import numpy as np
import pytest
from _faults import lib_error

from npvae.metrics.audio import bss_eval_sources, gnsdr, separation_scores, si_sdr, weighted_mean

_r = np.random.default_rng(0)
REF = _r.standard_normal((2, 4000))
EST = REF + 0.1 * _r.standard_normal((2, 4000))

BAD = [
    ("si_sdr of a silent reference", lambda: si_sdr(np.zeros(4000), REF[0]), "silent reference"),
    ("si_sdr with NaN in the estimate", lambda: si_sdr(REF[0], np.r_[np.nan, REF[0][1:]]), "NaN"),
    ("si_sdr of arrays of different length", lambda: si_sdr(REF[0], REF[0][:100]), "shape"),
    ("si_sdr on (n, 2) arrays", lambda: si_sdr(REF.T, EST.T), "transpose"),
    ("bss_eval_sources on (n, 2) instead of (2, n)", lambda: bss_eval_sources(REF.T, EST.T), "transpose"),
    ("bss_eval_sources with a silent estimate",
     lambda: bss_eval_sources(REF, np.stack([EST[0], np.zeros(4000)])), "silent"),
    ("bss_eval_sources with a silent reference",
     lambda: bss_eval_sources(np.stack([REF[0], np.zeros(4000)]), EST), "silent"),
    ("bss_eval_sources, shapes differ", lambda: bss_eval_sources(REF, EST[:, :3000]), "same shape"),
    ("bss_eval_sources on empty arrays", lambda: bss_eval_sources(np.zeros((2, 0)), np.zeros((2, 0))), "shape"),
    ("bss_eval_sources on 3-D arrays", lambda: bss_eval_sources(REF[None], EST[None]), "shape"),
    ("bss_eval_sources with inf", lambda: bss_eval_sources(REF, EST * np.inf), "inf"),
    ("separation_scores with a silent mixture", lambda: separation_scores(REF, EST, np.zeros(4000)), "silent"),
    ("weighted_mean with negative lengths", lambda: weighted_mean([1.0, 2.0], [1.0, -3.0]), "non-negative"),
    ("weighted_mean with one length too few", lambda: weighted_mean([1.0, 2.0], [1.0]), "one length per clip"),
]


@pytest.mark.fault("metrics", "{description}", "clear error")
@pytest.mark.parametrize("description, call, match", BAD, ids=[b[0] for b in BAD])
def test_bad_input(description, call, match):
    with lib_error(match):
        call()


@pytest.mark.fault("metrics", "bss_eval_sources of a perfect estimate", "correct result")
def test_bss_eval_of_perfect_estimate():
    sdr = bss_eval_sources(REF, REF)[0]
    assert np.all(sdr > 100), sdr


@pytest.mark.fault("metrics", "gnsdr weights clips by length", "correct result")
def test_gnsdr_weights_by_length():
    v = gnsdr([1.0, 4.0], [3.0, 1.0])
    assert abs(v - 1.75) < 1e-12, v

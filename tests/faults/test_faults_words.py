"""Fault cases whose answer was a traceback, a silent NaN or a misleading word: the
metrics' one policy, and commands and library calls that must say what is wrong."""
import numpy as np
import pytest
from _faults import expect_error, lib_error

from npvae.metrics import gnsdr, mse, psnr, separation_report, si_sdr, ssim
from npvae.metrics.audio import weighted_mean

_r = np.random.default_rng(0)
IMG = _r.random((2, 28, 28))
NAN_IMG = IMG.copy()
NAN_IMG[1, 3, 3] = np.nan
WAVE = _r.standard_normal(4000)

METRICS = [
    ("psnr of an estimate with a NaN pixel", lambda: psnr(NAN_IMG, IMG), r"psnr: x holds 1 NaN"),
    ("mse of an estimate with a NaN pixel", lambda: mse(NAN_IMG, IMG), r"mse: x holds 1 NaN"),
    ("ssim of a reference with a NaN pixel", lambda: ssim(IMG, NAN_IMG), r"ssim: y holds 1 NaN"),
    ("ssim of an estimate with an infinite pixel", lambda: ssim(IMG * np.inf, IMG), r"ssim: x holds .* infinite"),
    ("separation_report of a NaN estimate", lambda: separation_report(NAN_IMG, IMG, IMG, IMG),
     r"separation_report: est_digit holds 1 NaN"),
    ("gnsdr of a NaN score", lambda: gnsdr([3.0, np.nan], [1.0, 2.0]), r"gnsdr: nsdrs holds 1 NaN"),
    ("weighted_mean of a NaN score", lambda: weighted_mean([np.nan, 1.0], [1.0, 2.0]), r"weighted_mean: values"),
    ("si_sdr of an all-zero estimate", lambda: si_sdr(WAVE, np.zeros(4000)), r"si_sdr: silent estimate"),
    ("si_sdr of a constant estimate with zero_mean", lambda: si_sdr(WAVE, np.ones(4000), zero_mean=True),
     r"si_sdr: silent estimate \(without its mean\)"),
]


@pytest.mark.fault("metrics", "{description}", "clear error")
@pytest.mark.parametrize("description, call, match", METRICS, ids=[m[0] for m in METRICS])
def test_metric_refuses_what_it_cannot_score(description, call, match):
    with lib_error(match):
        call()


# ----------------------------------------------------------------------------- npvae report

@pytest.mark.slow
@pytest.mark.fault("lab", "npvae report RUN where RUN/results.h5 came from npvae evaluate", "correct result")
def test_report_of_an_evaluation(cli, music_model, irmas, new_dir):
    run = new_dir()
    r = cli("evaluate", music_model, "--dataset", "irmas", "--data-dir", irmas, "--no-baselines",
            "--results", run / "results.h5")
    assert r.code == 0, r.err
    out = new_dir()
    r = cli("report", run, "--out", out, "--overwrite")
    assert r.code == 0, r.err
    md = (out / "report.md").read_text()
    assert "evaluation" in md and "GNSDR" in md, md[:2000]


@pytest.mark.fault("lab", "npvae report on a folder that does not exist", "clear error")
def test_report_of_a_missing_folder(cli, new_dir):
    missing = new_dir() / "nope"
    expect_error(cli("report", missing, "--out", new_dir() / "report"), rf"{missing.name}.*does not exist")

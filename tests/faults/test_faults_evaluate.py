"""Fault cases of ``npvae evaluate``: results files that exist or are not .h5, wrong
models and data folders, clips with silent vocals. All but one score a tiny trained run
(the music_run fixture), so they are marked slow."""
import shutil

import numpy as np
import pytest
import soundfile as sf
from _faults import expect_error, must_survive


@pytest.fixture
def evaluate(cli):
    """``evaluate(*argv)`` runs ``npvae evaluate ARGV``."""
    return lambda *args: cli("evaluate", *args)


@pytest.mark.slow
@pytest.mark.fault("evaluate", "--wiener does not overwrite the plain evaluation", "correct result")
def test_wiener_keeps_plain_results(evaluate, music_run, irmas, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(music_run, d)
    for extra in ((), ("--wiener",)):
        r = evaluate(d, "--dataset", "irmas", "--data-dir", irmas, "--no-baselines", *extra)
        assert r.code == 0, r.err
    names = sorted(p.name for p in d.glob("eval_*.h5"))
    assert names == ["eval_irmas_validation.h5", "eval_irmas_validation_wiener.h5"], names


@pytest.mark.slow
@pytest.mark.fault("evaluate", "an existing results file without --overwrite", "clear error")
def test_existing_results(evaluate, music_run, irmas, tmp_path):
    p = tmp_path / "e.h5"
    p.write_bytes(b"precious")
    r = evaluate(music_run, "--dataset", "irmas", "--data-dir", irmas, "--results", p)
    must_survive(p, b"precious")
    expect_error(r, "exists; pass --overwrite")


@pytest.mark.slow
@pytest.mark.fault("evaluate", "--results is a folder", "clear error")
def test_results_is_a_folder(evaluate, music_run, tmp_path):
    d = tmp_path / "x.h5"
    d.mkdir()
    expect_error(evaluate(music_run, "--dataset", "irmas", "--results", d), "is a folder|must end in .h5")


@pytest.mark.slow
@pytest.mark.fault("evaluate", "--results that is not .h5", "clear error")
def test_results_not_h5(evaluate, music_run, tmp_path):
    expect_error(evaluate(music_run, "--dataset", "irmas", "--results", tmp_path / "scores.txt"), "must end in .h5")


@pytest.mark.fault("evaluate", "a model that does not exist", "clear error")
def test_model_missing(evaluate, tmp_path):
    expect_error(evaluate(tmp_path / "none", "--dataset", "irmas", "--results", tmp_path / "e.h5"), "does not exist")


@pytest.mark.slow
@pytest.mark.fault("evaluate", "--data-dir typo", "clear error")
def test_data_dir_typo(evaluate, music_run, tmp_path):
    expect_error(evaluate(music_run, "--dataset", "irmas", "--data-dir", tmp_path / "typo",
                          "--results", tmp_path / "e.h5"), "does not exist")


def _stems(folder, silent_voice: list[bool]):
    """A stems folder (vocals/, accompaniment/) of 1 s clips; clip i's vocals are silent
    where ``silent_voice[i]``."""
    d = folder / "stems"
    t = np.arange(16000) / 16000
    for i, silent in enumerate(silent_voice):
        for k in ("vocals", "accompaniment"):
            (d / k).mkdir(parents=True, exist_ok=True)
            x = np.zeros(16000) if (k == "vocals" and silent) else 0.2 * np.sin(2 * np.pi * (200 + 50 * i) * t)
            if k == "accompaniment":
                x = 0.2 * np.sign(np.sin(2 * np.pi * (80 + 10 * i) * t))
            sf.write(str(d / k / f"clip{i}.wav"), x.astype(np.float32), 16000)
    return d


@pytest.mark.slow
@pytest.mark.fault("evaluate", "a clip with a silent vocal stem is left out by name", "correct result")
def test_silent_vocal_clip_left_out(evaluate, music_run, tmp_path):
    d = _stems(tmp_path, [False, True, False])
    r = evaluate(music_run, "--dataset", "stems", "--data-dir", d, "--split", "all", "--results", tmp_path / "e.h5",
                 "--no-baselines")
    assert r.code == 0, r.err
    assert "clip1 (silent vocals)" in r.out, r.out[-400:]


@pytest.mark.slow
@pytest.mark.fault("evaluate", "every clip has a silent vocal stem", "clear error")
def test_every_clip_silent(evaluate, music_run, tmp_path):
    d = _stems(tmp_path, [True, True])
    expect_error(evaluate(music_run, "--dataset", "stems", "--data-dir", d, "--split", "all",
                          "--results", tmp_path / "e.h5", "--no-baselines"), "no clip can be scored")

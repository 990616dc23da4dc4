"""Fault cases whose answer was a traceback, a silent NaN or a misleading word: the
metrics' one policy, and commands and library calls that must say what is wrong."""
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _faults import expect_error, lib_error, no_temporaries

from npvae.metrics import gnsdr, mse, psnr, separation_report, si_sdr, ssim
from npvae.metrics.audio import weighted_mean

_r = np.random.default_rng(0)
IMG = _r.random((2, 28, 28))
NAN_IMG = IMG.copy()
NAN_IMG[1, 3, 3] = np.nan
WAVE = _r.standard_normal(4000)
REPO = Path(__file__).resolve().parents[2]

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


# ----------------------------------------------------------------------------- SIGTERM

def _sigterm_here():
    """Send this process SIGTERM, as ``kill`` or a batch system's time limit would. With
    no handler that would end the test run itself, without a word: fail instead."""
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        pytest.fail("SIGTERM is not handled: the command would end at once, without a word or its clean-up",
                    pytrace=False)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)                 # the handler raises on the next bytecode, long before this ends
    pytest.fail("SIGTERM was handled but the command went on", pytrace=False)


@pytest.mark.fault("separate", "SIGTERM while a song is being separated", "clear error")
def test_sigterm_during_separate(cli, music_model, song, new_dir, monkeypatch):
    from npvae.separation.separator import Separator
    real, calls = Separator.separate, []

    def terminated(self, *a, **k):
        calls.append(1)
        if len(calls) == 3:
            _sigterm_here()
        return real(self, *a, **k)
    monkeypatch.setattr(Separator, "separate", terminated)
    d = new_dir()
    first, second = song("first.wav", seconds=1.0, folder=d), song("second.wav", seconds=3.0, folder=d)
    out = d / "out"
    r = cli("separate", "--model", music_model, "--out", out, "--no-progress", "--block-seconds", "0.5",
            first, second)
    assert r.code == 143, (r.code, r.err)
    assert re.search(r"interrupted \(SIGTERM\); the outputs of .*second\.wav were not written", r.err), r.err
    assert sorted(p.name for p in out.rglob("*")) == ["first_accompaniment.wav", "first_vocals.wav"]
    no_temporaries(out)


@pytest.mark.slow
@pytest.mark.fault("separate", "kill (SIGTERM) of a running npvae separate", "clear error")
def test_kill_of_a_running_separate(music_model, song, new_dir):
    """The real thing: another process sends SIGTERM while the outputs are being written."""
    from npvae.files.atomic import TMP_TAG
    path = song(seconds=240.0)
    out = new_dir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "npvae", "separate", str(path), "--model", str(music_model),
                             "--out", str(out), "--no-progress", "--block-seconds", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    def writing():      # a block of separated audio is in a temporary output (the kernels are compiled)
        return any(p.stat().st_size > 65536 for p in out.glob(f"*{TMP_TAG}*"))
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and not writing():
        time.sleep(0.05)
    assert proc.poll() is None, f"finished before it could be stopped: {proc.communicate()[1][-500:]}"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, (proc.returncode, err[-500:])
    assert "interrupted (SIGTERM)" in err and "Traceback" not in err, err[-500:]
    assert list(out.iterdir()) == [], sorted(p.name for p in out.iterdir())


@pytest.mark.fault("engine", "SIGTERM while training: exit 143 and the command that resumes", "clear error")
def test_sigterm_during_training(cli, mnist_run, tmp_path, monkeypatch):
    from npvae.tasks.mnist.objective import SeparationObjective

    def terminated(self, *args, **kwargs):
        _sigterm_here()
    monkeypatch.setattr(SeparationObjective, "terms", terminated)
    run = tmp_path / "run"
    shutil.copytree(mnist_run, run)
    before = (run / "checkpoint.npz").read_bytes()
    r = cli("train", "mnist", "--out", run, "--resume", "--epochs", "2")
    assert r.code == 143, (r.code, r.err)
    assert f"interrupted (SIGTERM); continue with: npvae train mnist --out {run} --resume" in r.err, r.err
    assert (run / "checkpoint.npz").read_bytes() == before
    no_temporaries(run)


# ----------------------------------------------------------------------------- short files

@pytest.mark.fault("separate", "a {frames}-sample {channels}-channel WAV (fewer samples than channels)",
                   "correct result")
@pytest.mark.parametrize("frames, channels", [(1, 2), (2, 6)])
def test_file_with_fewer_samples_than_channels(cli, music_model, new_dir, frames, channels):
    import soundfile as sf
    d = new_dir()
    x = np.linspace(-0.5, 0.5, frames * channels, dtype=np.float32).reshape(frames, channels)
    sf.write(str(d / "tiny.wav"), x, 8000, subtype="FLOAT")
    r = cli("separate", d / "tiny.wav", "--model", music_model, "--out", d / "out", "--no-progress")
    assert r.code == 0, r.err
    parts = [sf.read(str(d / "out" / f"tiny_{s}.wav"), dtype="float32", always_2d=True)[0]
             for s in ("vocals", "accompaniment")]
    assert all(p.shape == (frames, channels) for p in parts), [p.shape for p in parts]
    # each channel as a mono file gives the same
    for c in range(channels):
        sf.write(str(d / f"c{c}.wav"), x[:, c], 8000, subtype="FLOAT")
        assert cli("separate", d / f"c{c}.wav", "--model", music_model, "--out", d / "out", "--no-progress").code == 0
        mono = sf.read(str(d / "out" / f"c{c}_vocals.wav"), dtype="float32")[0]
        np.testing.assert_array_equal(np.atleast_1d(mono), parts[0][:, c])


@pytest.mark.fault("inputs", "Separator.separate of one sample of 2 channels, (1, 2)", "clear error")
def test_one_stereo_sample_through_the_library(music_model):
    from npvae import load_model
    sep = load_model(music_model)
    with lib_error(r"transpose .*If it really is 1 sample\(s\) of 2 channels, pass one channel at a time"):
        sep.separate(np.zeros((1, 2), np.float32), 8000)


# ----------------------------------------------------------------------------- output formats

@pytest.mark.fault("separate", "--format flac without --bits (24-bit FLAC)", "correct result")
def test_flac_alone_is_24_bit(cli, music_model, song, new_dir):
    import soundfile as sf
    d = new_dir()
    r = cli("separate", song(folder=d), "--model", music_model, "--out", d / "o", "--format", "flac", "--no-progress")
    assert r.code == 0, r.err
    assert sf.info(str(d / "o" / "song_vocals.flac")).subtype == "PCM_24"
    r = cli("separate", song(folder=d), "--model", music_model, "--out", d / "w", "--no-progress")
    assert r.code == 0 and sf.info(str(d / "w" / "song_vocals.wav")).subtype == "FLOAT", r.err


@pytest.mark.fault("separate", "--format flac --bits float names the --bits FLAC takes", "clear error")
def test_flac_float_names_the_bits_flac_takes(cli, music_model, song):
    r = cli("separate", song(), "--model", music_model, "--out", "o", "--format", "flac", "--bits", "float")
    expect_error(r, r"--bits float is not available in FLAC files, which take --bits 16 or 24 "
                    r"\(the default is 24\); for float use --format wav")
    assert r.code == 2


@pytest.mark.fault("separate", "separate_files(fmt='flac') from Python, without bits", "correct result")
def test_flac_from_python(music_model, song, new_dir):
    import soundfile as sf
    from npvae.separation.audio_files import separate_files
    d = new_dir()
    separate_files([song(folder=d)], d / "o", model=str(music_model), fmt="flac", log=lambda s: None)
    assert sf.info(str(d / "o" / "song_accompaniment.flac")).subtype == "PCM_24"
    with lib_error(r"--bits float is not available in FLAC files, which take --bits 16 or 24"):
        separate_files([song(folder=d)], d / "p", model=str(music_model), fmt="flac", bits="float")


@pytest.mark.fault("separate", "--chunk-frames 8 with the shipped model (whose rule is a multiple of 32)",
                   "clear error")
def test_chunk_frames_below_the_models_rule(cli, song, new_dir):
    out = new_dir() / "o"
    r = cli("separate", song(), "--out", out, "--chunk-frames", "8", "--no-progress")
    expect_error(r, r"--chunk-frames 8 must be a multiple of 32 for this model .*use 32")
    assert r.code == 2 and not any(out.rglob("*.wav"))


@pytest.mark.fault("separate", "--chunk-frames 8 with a 3-level model (a multiple of 8 is its rule)",
                   "correct result")
def test_chunk_frames_at_a_small_models_rule(cli, music_model, song, new_dir):
    d = new_dir()
    r = cli("separate", song(folder=d), "--model", music_model, "--out", d / "o", "--chunk-frames", "8",
            "--no-progress")
    assert r.code == 0 and (d / "o" / "song_vocals.wav").exists(), r.err


# ----------------------------------------------------------------------------- data

@pytest.fixture
def fashion_without_train_labels(shared_data, new_dir, monkeypatch):
    """A data root whose fashion-mnist/ lacks train-labels (its images are there, in another
    packaging than the official download), and a file:// mirror that serves every file."""
    root, mirror = new_dir(), new_dir()
    for name in ("mnist", "fashion-mnist"):
        shutil.copytree(shared_data / name, root / name)
    (root / "fashion-mnist" / "train-labels-idx1-ubyte.gz").unlink()
    for p in (shared_data / "fashion-mnist").iterdir():
        shutil.copy(p, mirror / p.name)
    # the official images differ in their bytes from the copy in the data root
    (mirror / "train-images-idx3-ubyte.gz").write_bytes(b"the official packaging")
    from npvae.data import mnist
    monkeypatch.setitem(mnist.CHECKSUMS, "fashion-mnist",
                        {p.name: mnist.md5sum(p) for p in mirror.iterdir()})
    monkeypatch.setitem(mnist.MIRRORS, "fashion-mnist", [mirror.as_uri() + "/"])
    return root, mirror


@pytest.mark.fault("data", "the Fashion-MNIST train labels file is missing (download switched off)", "clear error")
def test_missing_labels_file_is_named(fashion_without_train_labels):
    from npvae.data.mnist import load_images
    root, _ = fashion_without_train_labels
    with lib_error(r"fashion-mnist train split not found: .*fashion-mnist holds its images but not "
                   r"train-labels-idx1-ubyte\[\.gz\]\."):
        load_images("fashion-mnist", "train", data_dir=root, download=False)


@pytest.mark.fault("data", "the Fashion-MNIST train labels file is missing: only it is downloaded",
                   "correct result")
def test_missing_labels_file_alone_is_downloaded(fashion_without_train_labels):
    from npvae.data.mnist import load_images
    root, mirror = fashion_without_train_labels
    before = (root / "fashion-mnist" / "train-images-idx3-ubyte.gz").read_bytes()
    images, labels = load_images("fashion-mnist", "train", data_dir=root)
    assert images.shape == (60000, 28, 28) and labels.shape == (60000,)
    assert (root / "fashion-mnist" / "train-images-idx3-ubyte.gz").read_bytes() == before
    assert (root / "fashion-mnist" / "train-labels-idx1-ubyte.gz").exists()


# ----------------------------------------------------------------------------- library calls

@pytest.mark.fault("inputs", "load_model({arg}): not a name or a path", "clear error")
@pytest.mark.parametrize("arg", [None, 123, ["model.h5"]], ids=["None", "123", "a list"])
def test_load_model_of_something_else(arg):
    from npvae import load_model
    with pytest.raises(TypeError, match=r"a model is given as a shipped model's name .*a run directory or a "
                                        r"model\.h5 .* path \(str or pathlib\.Path\), got "):
        load_model(arg)


@pytest.mark.fault("inputs", "load_model(MODEL, dtype={dtype!r}) blames the argument, not the file",
                   "clear error")
@pytest.mark.parametrize("dtype", ["int8", "float16", "bogus"])
def test_load_model_with_a_bad_dtype(mnist_model, dtype):
    from npvae import load_model
    with lib_error(rf"^ValueError: dtype must be float32 or float64 .*got '{dtype}'$"):
        load_model(mnist_model, dtype=dtype)


@pytest.mark.fault("inputs", "Part I model.separate(x, batch_size={batch_size})", "clear error")
@pytest.mark.parametrize("batch_size", [0, -1, 2.5, None])
def test_image_separate_with_a_bad_batch_size(mnist_model, batch_size):
    from npvae import load_model
    model = load_model(mnist_model)
    with lib_error(rf"batch_size must be a whole number >= 1 .*got {batch_size}"):
        model.separate(np.zeros((3, 28, 28), np.float32), batch_size=batch_size)


@pytest.mark.fault("inputs", "blind Part I model.separate(x, batch_size=0)", "clear error")
def test_blind_image_separate_with_batch_size_0():
    from npvae.models.blind import BlindSeparationVAE
    model = BlindSeparationVAE(2, 2, (8,), rng=np.random.default_rng(0))
    with lib_error(r"batch_size must be a whole number >= 1 .*got 0"):
        model.separate(np.zeros((3, 28, 28), np.float32), batch_size=0)


# ----------------------------------------------------------------------------- commands

@pytest.mark.fault("ship", "npvae ship RUN --command '...' without NAME: the program is named npvae ship",
                   "clear error")
def test_ship_names_itself_not_the_command_flag(cli, new_dir):
    r = cli("ship", new_dir(), "--command", "python train.py --epochs 3")
    text = expect_error(r, r"^npvae ship: error: give the shipped name")
    assert "train.py" not in text, text


@pytest.mark.fault("lab", "npvae study --resume --out NEW (a folder that does not exist)", "clear error")
def test_study_resume_of_a_missing_folder(cli, new_dir):
    out = new_dir() / "study-that-never-ran"
    r = cli("study", "--task", "mnist", "--budget", "tiny", "--resume", "--out", out, "--only", "bce_beta1")
    expect_error(r, r"no study to resume in .*study-that-never-ran: the folder does not exist")
    assert not out.exists()


@pytest.mark.fault("engine", "npvae train blind-mnist --groups 1 (one group for two sources)", "clear error")
def test_blind_mnist_with_one_group(cli, new_dir):
    out = new_dir() / "run"
    r = cli("train", "blind-mnist", "--groups", "1", "--epochs", "1", "--train-limit", "64", "--out", out,
            "--no-progress")
    expect_error(r, r"--groups must be between 2 and 8 \(each of the two mixed images needs a group")
    assert r.code == 2 and not out.exists()


@pytest.mark.fault("engine", "npvae train {argv}: a count past any sane run", "clear error")
@pytest.mark.parametrize("argv", [["mnist", "--epochs", "1000000000000"], ["mnist", "--batch-size", "100001"],
                                  ["blind-mnist", "--epochs", "1000000000000"],
                                  ["music", "--display-every", "10000000"]],
                         ids=["mnist epochs", "mnist batch size", "blind-mnist epochs", "music display-every"])
def test_train_with_a_huge_count(cli, new_dir, argv):
    out = new_dir() / "run"
    r = cli("train", *argv, "--out", out, "--no-progress")
    expect_error(r, rf"{argv[1]} must be at most 100,000 \(a larger count is a typo, or work for years\), "
                    rf"got {argv[2]}")
    assert r.code == 2 and not out.exists()


@pytest.mark.fault("lab", "npvae {argv}: a count past any sane run", "clear error")
@pytest.mark.parametrize("argv", [["bench", "--steps", "1000000000000"],
                                  ["study", "--task", "mnist", "--jobs", "999999"]], ids=["bench steps", "study jobs"])
def test_lab_command_with_a_huge_count(cli, argv):
    r = cli(*argv)
    expect_error(r, rf"{argv[-2]}: must be at most 100,000")
    assert r.code == 2


@pytest.mark.fault("separate", "npvae separate SONG --out O --shifts 1000000", "clear error")
def test_separate_with_a_huge_shift_count(cli):
    r = cli("separate", "song.wav", "--out", "o", "--shifts", "1000000")
    expect_error(r, r"--shifts: must be at most 100,000")
    assert r.code == 2

"""Fault cases of the commands that use trained models: ``npvae separate``,
``npvae evaluate`` and ``npvae ship`` (inputs that are pipes, Ctrl-C, a full disk,
damaged songs, outputs that exist or cannot be written, wrong or unfinished runs)."""
import errno
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from _faults import expect_error, must_survive, no_temporaries

REPO = Path(__file__).resolve().parents[2]


def files_under(folder) -> list[str]:
    folder = Path(folder)
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) if folder.exists() \
        else []


def separate_args(music_model, out, *extra):
    return ["separate", "--model", music_model, "--out", out, "--no-progress", *extra]


@pytest.fixture
def reference(cli, music_model, song, new_dir):
    """A song and its two outputs separated from the file itself, to compare against."""
    path = song(seconds=2.0)
    out = new_dir()
    r = cli(*separate_args(music_model, out), path)
    assert r.code == 0, r.err
    return path, [sf.read(str(out / f"song_{s}.wav"), dtype="float32")[0] for s in ("vocals", "accompaniment")]


def assert_same_outputs(out: Path, stem: str, want) -> None:
    for s, w in zip(("vocals", "accompaniment"), want):
        got = sf.read(str(out / f"{stem}_{s}.wav"), dtype="float32")[0]
        assert got.shape == w.shape, (got.shape, w.shape)
        np.testing.assert_array_equal(got, w)


# ----------------------------------------------------------------------------- separate: pipes

@pytest.mark.fault("separate", "a named pipe (mkfifo x.wav) that nothing writes into", "clear error")
def test_named_pipe_with_no_writer_does_not_hang(cli, music_model, new_dir):
    d = new_dir()
    fifo = d / "x.wav"
    os.mkfifo(fifo)
    result = []
    worker = threading.Thread(target=lambda: result.append(cli(*separate_args(music_model, d / "out"), fifo)),
                              daemon=True)
    worker.start()
    worker.join(90)
    if worker.is_alive():                      # let the blocked reader go before failing
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        worker.join(30)
        pytest.fail("hang: separating a named pipe that nothing writes into did not return in 90 s", pytrace=False)
    expect_error(result[0], r"x\.wav.*pipe")
    assert files_under(d / "out") == []


@pytest.mark.fault("separate", "a song given as <(cat song.wav) (a pipe)", "correct result")
def test_process_substitution(cli, music_model, reference, new_dir):
    path, want = reference
    data = path.read_bytes()
    r_fd, w_fd = os.pipe()

    def feed():
        try:
            with os.fdopen(w_fd, "wb") as w:
                w.write(data)
        except BrokenPipeError:
            pass
    threading.Thread(target=feed, daemon=True).start()
    out = new_dir()
    try:
        r = cli(*separate_args(music_model, out), f"/dev/fd/{r_fd}")
    finally:
        os.close(r_fd)
    assert r.code == 0, r.err
    assert_same_outputs(out, str(r_fd), want)


@pytest.mark.fault("separate", "cat song.wav | npvae separate {name}", "correct result")
@pytest.mark.parametrize("name", ["/dev/stdin", "-"])
def test_standard_input(music_model, reference, new_dir, name):
    path, want = reference
    out = new_dir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    with open(path, "rb") as f:
        cat = subprocess.Popen(["cat"], stdin=f, stdout=subprocess.PIPE)
    r = subprocess.run([sys.executable, "-m", "npvae", "separate", name, "--model", str(music_model),
                        "--out", str(out), "--no-progress"], stdin=cat.stdout, capture_output=True, text=True,
                       env=env, timeout=300)
    cat.stdout.close()
    cat.wait()
    assert r.returncode == 0, r.stderr
    assert_same_outputs(out, "stdin", want)


@pytest.mark.fault("separate", "/dev/stdin when standard input is empty (nothing piped in)", "clear error")
def test_empty_standard_input(music_model, new_dir):
    out = new_dir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "npvae", "separate", "/dev/stdin", "--model", str(music_model),
                        "--out", str(out), "--no-progress"], stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "stdin" in r.stderr and "no data" in r.stderr, r.stderr
    assert files_under(out) == []


# ----------------------------------------------------------------------------- separate: Ctrl-C, full disk

@pytest.mark.fault("separate", "Ctrl-C while a song is being separated", "clear error")
def test_ctrl_c_leaves_no_partial_output(cli, music_model, song, new_dir, monkeypatch):
    from npvae.separation.separator import Separator
    real, calls = Separator.separate, []

    def interrupted(self, *a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, *a, **k)
    monkeypatch.setattr(Separator, "separate", interrupted)
    d = new_dir()
    first, second = song("first.wav", seconds=1.0, folder=d), song("second.wav", seconds=3.0, folder=d)
    out = d / "out"
    try:
        r = cli(*separate_args(music_model, out, "--block-seconds", "0.5"), first, second)
    except KeyboardInterrupt:
        pytest.fail("traceback: KeyboardInterrupt escaped the command", pytrace=False)
    assert r.code == 130, (r.code, r.err)
    assert "interrupted" in r.err and "Traceback" not in r.err, r.err
    assert "second.wav" in r.err, r.err                       # what was not finished
    # the first song was finished and stays; nothing of the second, no temporaries
    assert files_under(out) == ["first_accompaniment.wav", "first_vocals.wav"]
    no_temporaries(out)


def _enospc_on_second_write(monkeypatch):
    real, calls = sf.SoundFile.write, []

    def write(self, data):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, data)
    monkeypatch.setattr(sf.SoundFile, "write", write)


@pytest.mark.fault("separate", "the disk fills up while the outputs are written", "clear error")
def test_disk_full(cli, music_model, song, new_dir, monkeypatch):
    _enospc_on_second_write(monkeypatch)
    out = new_dir() / "sep"
    r = cli(*separate_args(music_model, out), song())
    expect_error(r, r"song_(vocals|accompaniment)\.wav.*no space left on device.*free .*space.*another --out")
    assert r.code == 1
    assert files_under(out) == []


@pytest.mark.fault("separate", "a file size limit (ulimit -f) is reached while writing", "clear error")
def test_file_size_limit(music_model, song, new_dir):
    path = song(sr=16000, seconds=20.0)
    out = new_dir() / "sep"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "NUMBA_CACHE_DIR": str(new_dir())}

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    r = subprocess.run([sys.executable, "-m", "npvae", "separate", str(path), "--model", str(music_model),
                        "--out", str(out), "--no-progress"], capture_output=True, text=True, env=env,
                       timeout=300, preexec_fn=limit)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "too large" in r.stderr and "song_" in r.stderr, r.stderr
    assert files_under(out) == []


# ----------------------------------------------------------------------------- separate: damaged songs

@pytest.mark.fault("separate", "a WAV file cut short (an interrupted download)", "correct result")
def test_truncated_wav_is_named(cli, music_model, song, new_dir):
    path = song(seconds=2.0, subtype="PCM_16")
    data = path.read_bytes()
    cut = path.with_name("cut.wav")
    cut.write_bytes(data[:len(data) // 2])
    out = new_dir()
    r = cli(*separate_args(music_model, out), cut)
    assert r.code == 0, r.err
    assert "warning" in r.err and "cut.wav" in r.err and "truncated" in r.err, r.err
    frames = sf.info(str(cut)).frames
    assert sf.info(str(out / "cut_vocals.wav")).frames == frames


@pytest.mark.fault("separate", "a FLAC file cut short (found while reading)", "clear error")
def test_truncated_flac(cli, music_model, song, new_dir):
    path = song("whole.flac", seconds=3.0)
    data = path.read_bytes()
    cut = path.with_name("cut.flac")
    cut.write_bytes(data[:len(data) // 2])
    out = new_dir()
    r = cli(*separate_args(music_model, out), cut)
    expect_error(r, r"cut\.flac.*not written")
    assert files_under(out) == []


@pytest.mark.fault("separate", "a WAV file at 2000 Hz", "correct result")
def test_very_low_sample_rate_is_named(cli, music_model, song, new_dir):
    path = song("low.wav", sr=2000, seconds=3.0)
    out = new_dir()
    r = cli(*separate_args(music_model, out), path)
    assert r.code == 0, r.err
    assert "warning" in r.err and "low.wav" in r.err and "2000 Hz" in r.err, r.err
    assert sf.info(str(out / "low_vocals.wav")).samplerate == 2000


# ----------------------------------------------------------------------------- separate: outputs, exit status

@pytest.mark.fault("separate", "--out holds a file where an input's folder of outputs goes", "clear error")
def test_output_folder_is_a_file(cli, music_model, song, new_dir):
    d = new_dir()
    a, b = song(folder=d / "a"), song(folder=d / "b", seed=1)
    out = d / "out"
    out.mkdir()
    (out / "b").write_text("a file")
    r = cli(*separate_args(music_model, out), a, b)
    expect_error(r, r"out/b is a file")
    assert files_under(out) == ["b"]


@pytest.mark.fault("separate", "{argv}", "clear error")
@pytest.mark.parametrize("argv, code, match", [
    ((), 2, "give at least one song"),
    (("SONG",), 2, "--out is required"),
    (("SONG", "--out", "OUT", "--format", "flac", "--bits", "float"), 2, "--bits float"),
    (("SONG", "--out", "OUT", "--chunk-frames", "7"), 2, "multiple of 8"),
    (("MISSING", "--out", "OUT"), 1, "no such file"),
], ids=["no song", "no --out", "flac float", "chunk 7", "missing song"])
def test_exit_status(cli, music_model, song, new_dir, argv, code, match):
    path, out = song(), new_dir() / "o"
    subst = {"SONG": path, "OUT": out, "MISSING": path.with_name("missing.wav")}
    r = cli("separate", "--model", music_model, "--no-progress", *[subst.get(a, a) for a in argv])
    assert r.code == code, (r.code, r.err)
    expect_error(r, match)


# ----------------------------------------------------------------------------- evaluate

def evaluate_args(music_model, irmas, *extra):
    return ["evaluate", "--model", music_model, "--dataset", "irmas", "--data-dir", irmas, "--split", "validation",
            "--no-baselines", *extra]


@pytest.mark.fault("evaluate", "--figure naming an existing PNG, without --overwrite", "clear error")
def test_figure_is_not_replaced(cli, music_model, irmas, new_dir):
    d = new_dir()
    fig = d / "fig.png"
    fig.write_bytes(b"precious")
    r = cli(*evaluate_args(music_model, irmas, "--results", d / "eval.h5", "--figure", fig))
    expect_error(r, r"fig\.png exists.*--overwrite")
    must_survive(fig, b"precious")
    assert not (d / "eval.h5").exists()                    # refused before the work


@pytest.mark.fault("evaluate", "--figure below a file", "clear error")
def test_figure_below_a_file(cli, music_model, irmas, new_dir):
    d = new_dir()
    (d / "f").write_text("x")
    r = cli(*evaluate_args(music_model, irmas, "--results", d / "eval.h5", "--figure", d / "f" / "fig.png"))
    expect_error(r, r"is a file")
    assert not (d / "eval.h5").exists()


@pytest.mark.fault("evaluate", "--figure with an existing PNG and --overwrite", "correct result")
def test_figure_replaced_with_overwrite(cli, music_model, irmas, new_dir):
    d = new_dir()
    fig = d / "fig.png"
    fig.write_bytes(b"old")
    r = cli(*evaluate_args(music_model, irmas, "--results", d / "eval.h5", "--figure", fig, "--overwrite"))
    assert r.code == 0, r.err
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    no_temporaries(d)


# ----------------------------------------------------------------------------- ship

@pytest.fixture
def run_of(new_dir):
    """``run_of(model_file)``: a finished run folder holding that model as model.h5."""
    def make(model_file) -> Path:
        run = new_dir() / "run"
        run.mkdir()
        shutil.copy(model_file, run / "model.h5")
        (run / "provenance.json").write_text(json.dumps({"command": "npvae train ...", "commit": "abc1234"}))
        return run
    return make


@pytest.mark.fault("ship", "shipping onto an existing model file without --overwrite", "clear error")
def test_ship_does_not_replace(cli, mnist_model, run_of, new_dir, monkeypatch):
    monkeypatch.setenv("NPVAE_DATA", str(new_dir()))        # no data: only the refusal can pass
    dest = new_dir()
    old = dest / "mnist-tiny.h5"
    old.write_bytes(b"shipped model")
    r = cli("ship", run_of(mnist_model), "--name", "mnist-tiny", "--dest", dest)
    expect_error(r, r"mnist-tiny\.h5 exists.*--overwrite")
    must_survive(old, b"shipped model")


@pytest.mark.fault("ship", "a music separator shipped under an mnist- name", "clear error")
def test_ship_music_model_as_mnist(cli, music_model, run_of, new_dir):
    r = cli("ship", run_of(music_model), "--name", "mnist-voice", "--dest", new_dir())
    expect_error(r, r"mnist-voice.*image .*model.*music separator")


@pytest.mark.fault("ship", "a Part I model shipped under a music- name", "clear error")
def test_ship_mnist_model_as_music(cli, mnist_model, run_of, new_dir):
    r = cli("ship", run_of(mnist_model), "--name", "music-digits", "--dest", new_dir())
    expect_error(r, r"music-digits.*music separator.*image .*model")


@pytest.mark.fault("ship", "a run folder that does not exist", "clear error")
def test_ship_missing_run(cli, new_dir):
    d = new_dir()
    r = cli("ship", d / "nope", "--name", "mnist-x", "--dest", d)
    expect_error(r, r"nope.*does not exist")


@pytest.mark.fault("ship", "a run folder whose training has not finished (no model.h5)", "clear error")
def test_ship_unfinished_run(cli, new_dir):
    run = new_dir() / "run"
    run.mkdir()
    (run / "checkpoint.npz").write_bytes(b"x")
    (run / "config.json").write_text("{}")
    r = cli("ship", run, "--name", "mnist-x", "--dest", new_dir())
    expect_error(r, r"run.*model\.h5.*(not finished|still training)")


@pytest.mark.fault("ship", "--dest {where}", "clear error")
@pytest.mark.parametrize("where, match", [("a file", r"f is a file"), ("a missing folder", r"deeper does not exist")])
def test_ship_bad_dest(cli, mnist_model, run_of, new_dir, monkeypatch, where, match):
    monkeypatch.setenv("NPVAE_DATA", str(new_dir()))        # no data: only the refusal can pass
    d = new_dir()
    (d / "f").write_text("x")
    dest = d / "f" if where == "a file" else d / "missing" / "deeper"
    r = cli("ship", run_of(mnist_model), "--name", "mnist-x", "--dest", dest)
    expect_error(r, match)
    assert r.code == 1


@pytest.mark.fault("ship", "a blind (unsupervised) model under an mnist- name", "clear error")
def test_ship_blind_model(cli, new_dir, run_of):
    from npvae.files.model_file import save_model
    from npvae.models.blind import BlindSeparationVAE
    net = BlindSeparationVAE(latent_dim=2, hidden=(16,), rng=np.random.default_rng(0))
    model = save_model(new_dir() / "blind.h5", net, {"mode": "mnist"})
    r = cli("ship", run_of(model), "mnist-blind", "--dest", new_dir())
    expect_error(r, r"BlindSeparationVAE.*cannot be shipped")


@pytest.mark.fault("ship", "a run folder that a training run is still using", "clear error")
def test_ship_run_still_training(cli, mnist_model, run_of, new_dir):
    from npvae.files.guard import RunLock
    run = run_of(mnist_model)
    with RunLock(run):
        r = cli("ship", run, "mnist-x", "--dest", new_dir())
    expect_error(r, r"run folder .*run is still training \(process \d+")

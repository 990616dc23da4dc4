"""The fault cases: a careless user's inputs and faults, each with what must happen.

A fault case is a test marked ``@pytest.mark.fault(group, description, expect)``:

* ``group`` names the part of npvae it concerns ("metrics", "separate", ...);
* ``description`` says in a few words what the user does; in a parametrized test it
  may name the parameters (``"{flags}"``), filled in from each case's values;
* ``expect`` is ``"clear error"`` (a non-zero exit or an exception whose message names
  the problem, and no traceback) or ``"correct result"`` (a result the case checks).

The fixtures here build what the cases share once per session, on first use, in one
temporary folder (a small music model, a small MNIST model, a synthetic IRMAS folder,
tiny training runs); ``cli(*argv)`` runs ``npvae ARGV`` in this process. The helpers
that check outcomes (:func:`_faults.expect_error`, ``must_survive``, ...) live in
``_faults.py`` beside this file.

``python -m pytest tests/faults --fault-report results/faults.md`` also writes the
table of every case's outcome, grouped by group.
"""
from __future__ import annotations

import contextlib
import io
import shutil
import signal
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
EXPECTS = ("clear error", "correct result")
HANG_SECONDS = 300          # a case with no answer by then fails as a hang; slow cases get 4 times


# ----------------------------------------------------------------------------- the marker
# (the --fault-report option is declared in tests/conftest.py, so that it is known however
# pytest is started)

def pytest_configure(config):
    config.addinivalue_line("markers", "fault(group, description, expect): a fault case (tests/faults); "
                                       "expect is 'clear error' or 'correct result'")


def fault_info(item) -> dict | None:
    """The case's group, description (parameters filled in) and expectation, or None."""
    mark = item.get_closest_marker("fault")
    if mark is None:
        return None
    kw = dict(zip(("group", "description", "expect"), mark.args))
    kw.update(mark.kwargs)
    missing = {"group", "description", "expect"} - set(kw)
    if missing:
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.fault needs {', '.join(sorted(missing))}")
    if kw["expect"] not in EXPECTS:
        raise pytest.UsageError(f"{item.nodeid}: fault expect must be one of {EXPECTS}, not {kw['expect']!r}")
    text = kw["description"]
    params = getattr(getattr(item, "callspec", None), "params", None)
    if params and "{" in text:
        try:
            text = text.format(**{k: _show(v) for k, v in params.items()})
        except (KeyError, IndexError, ValueError):
            pass
    return {"group": kw["group"], "description": text, "expect": kw["expect"]}


def _show(value) -> str:
    """A parameter as a user would type it: a list of flags joined by spaces."""
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return str(value)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE not in Path(item.path).resolve().parents:
            continue
        info = fault_info(item)
        if info is None:
            raise pytest.UsageError(f"{item.nodeid}: a test under tests/faults needs "
                                    "@pytest.mark.fault(group, description, expect)")
        item.user_properties.append(("fault", info))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """A fault case that gives no answer within its time limit fails as a hang."""
    if item.get_closest_marker("fault") is None or not hasattr(signal, "SIGALRM"):
        yield
        return
    seconds = HANG_SECONDS * (4 if item.get_closest_marker("slow") else 1)

    def alarm(*_):
        pytest.fail(f"hang: no answer in {seconds} s", pytrace=False)
    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ----------------------------------------------------------------------------- running npvae

@dataclass
class CliResult:
    """What ``npvae ARGV`` did: its exit status and what it printed."""
    code: int
    out: str
    err: str


def run_cli(*argv) -> CliResult:
    """Run ``npvae ARGV`` in this process with stdout and stderr captured. SystemExit
    becomes the exit status; any other exception escaping ``main`` is what a user would
    see as a traceback, and fails the test."""
    from npvae.cli import main
    out, err = io.StringIO(), io.StringIO()
    escaped = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code
            if isinstance(code, str):
                print(code, file=sys.stderr)
                code = 1
        except Exception as exc:  # noqa: BLE001 - anything else reaches the user as a traceback
            escaped = exc
            code = None
    if escaped is not None:
        where = traceback.extract_tb(escaped.__traceback__)[-1]
        pytest.fail(f"traceback: {type(escaped).__name__}: {escaped} ({Path(where.filename).name}:{where.lineno})"
                    f"\n--- stderr ---\n{err.getvalue()[-2000:]}", pytrace=False)
    return CliResult(0 if code is None else int(code), out.getvalue(), err.getvalue())


@pytest.fixture
def cli():
    """``cli(*argv)`` runs ``npvae ARGV`` here and returns a :class:`CliResult`."""
    return run_cli


# ----------------------------------------------------------------------------- shared fixtures

@pytest.fixture(scope="session")
def fault_root(tmp_path_factory) -> Path:
    """One temporary folder for the session's shared fixtures."""
    return tmp_path_factory.mktemp("faults")


@pytest.fixture
def new_dir(tmp_path):
    """``new_dir()`` makes a fresh empty folder for this case (d1, d2, ...)."""
    count = [0]

    def make() -> Path:
        count[0] += 1
        d = tmp_path / f"d{count[0]}"
        d.mkdir()
        return d
    return make


@pytest.fixture
def song(new_dir):
    """``song(name, sr, ch, seconds, folder, subtype, seed)`` writes a noise song and returns
    its path (in a fresh folder unless ``folder`` is given)."""
    import soundfile as sf

    def make(name="song.wav", sr=8000, ch=2, seconds=1.2, folder=None, subtype=None, seed=0) -> Path:
        folder = Path(folder) if folder is not None else new_dir()
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        x = (0.2 * rng.standard_normal((int(seconds * sr), ch))).astype(np.float32)
        path = folder / name
        sf.write(str(path), x, sr, subtype=subtype)
        return path
    return make


@pytest.fixture(scope="session")
def music_model(fault_root) -> Path:
    """An untrained small music separator (8 kHz, 256-point STFT) saved as model.h5."""
    from npvae.audio.stft import STFTConfig
    from npvae.files.model_file import save_separator
    from npvae.models.music import SpectrogramUNetVAE
    from npvae.separation.separator import Normalizer, Separator
    model = SpectrogramUNetVAE(channels=(4, 4, 8), latent_channels=4, rng=np.random.default_rng(0))
    sep = Separator(model, STFTConfig(sample_rate=8000, n_fft=256, hop=64),
                    Normalizer(mean=np.zeros(128), std=np.ones(128)))
    return save_separator(fault_root / "fixtures" / "music_model.h5", sep, {"epochs": 0})


@pytest.fixture(scope="session")
def mnist_model(fault_root) -> Path:
    """An untrained small Part I U-Net VAE saved as a model file."""
    from npvae.files.model_file import save_model
    from npvae.models.mnist import build_model
    m = build_model("unet", rng=np.random.default_rng(0), channels=(4, 4, 8), latent_dim=4)
    return save_model(fault_root / "fixtures" / "mnist_model.h5", m, {"model": "unet"})


@pytest.fixture(scope="session")
def irmas(fault_root) -> Path:
    """A synthetic IRMAS folder: 6 voice clips and 6 instrument clips of 1.5 s at 16 kHz."""
    import soundfile as sf
    root = fault_root / "fixtures" / "irmas"
    rng = np.random.default_rng(1)
    sr, n = 16000, 24000
    t = np.arange(n) / sr
    for i in range(6):
        v = root / "IRMAS-TrainingData" / "voi"
        inst = ("cla", "flu")[i % 2]
        m = root / "IRMAS-TrainingData" / inst
        v.mkdir(parents=True, exist_ok=True)
        m.mkdir(parents=True, exist_ok=True)
        voice = 0.3 * np.sin(2 * np.pi * (200 + 20 * i) * t) * (np.sin(2 * np.pi * t) > 0)
        music = 0.2 * np.sign(np.sin(2 * np.pi * (90 + 7 * i) * t)) + 0.02 * rng.standard_normal(n)
        sf.write(str(v / f"[voi][pop_roc]{2000 + i:04d}__{i % 3 + 1}.wav"),
                 np.stack([voice, voice], 1).astype(np.float32), sr)
        sf.write(str(m / f"{i:03d}__[{inst}][nod][cla]{1000 + i:04d}__1.wav"),
                 np.stack([music, music], 1).astype(np.float32), sr)
    return root


@pytest.fixture(scope="session")
def music_args(irmas):
    """``music_args(out, epochs=1, *extra)``: the flags of a tiny ``npvae train music`` run on
    the synthetic IRMAS folder."""
    def make(out, epochs=1, *extra) -> list[str]:
        return ["--dataset", "irmas", "--data-dir", str(irmas), "--epochs", str(epochs),
                "--channels", "4", "4", "8", "--latent-channels", "4", "--batch-size", "2", "--frames", "16",
                "--display-every", "1", "--out", str(out), "--no-progress", *extra]
    return make


@pytest.fixture(scope="session")
def music_run(fault_root, music_args) -> Path:
    """A finished one-epoch ``npvae train music`` run (copy it before changing it)."""
    out = fault_root / "fixtures" / "music_run"
    shutil.rmtree(out, ignore_errors=True)
    r = run_cli("train", "music", *music_args(out))
    assert r.code == 0, f"the tiny music run failed (exit {r.code}): {r.err[-500:]}"
    return out


def mnist_flags(out, epochs=1, *extra, data_dir=None) -> list[str]:
    """The flags of a tiny ``npvae train mnist`` run (a dense VAE, 256 training images)."""
    data = ["--data-dir", str(data_dir)] if data_dir is not None else []
    return ["--hidden", "16", "--latent-dim", "2", "--epochs", str(epochs), "--train-limit", "256",
            "--eval-limit", "50", "--batch-size", "64", *data, "--out", str(out), "--no-progress", *extra]


@pytest.fixture(scope="session")
def mnist_args():
    """``mnist_args(out, epochs=1, *extra, data_dir=None)``: the flags of a tiny
    ``npvae train mnist`` run."""
    return mnist_flags


@pytest.fixture(scope="session")
def mnist_run(fault_root, shared_data) -> Path:
    """A finished one-epoch ``npvae train mnist`` run on the real data (copy it before
    changing it). Its --data-dir is ``shared_data``."""
    out = fault_root / "fixtures" / "mnist_run"
    shutil.rmtree(out, ignore_errors=True)
    r = run_cli("train", "mnist", *mnist_flags(out, data_dir=shared_data))
    assert r.code == 0, f"the tiny MNIST run failed (exit {r.code}): {r.err[-500:]}"
    return out

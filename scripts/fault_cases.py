#!/usr/bin/env python
"""Run the careless-user fault cases and write a table of their outcomes.

    python scripts/fault_cases.py --out docs/fault_cases.md      # all cases, a few minutes
    python scripts/fault_cases.py --group separate --list        # what a group holds

Each case gives npvae a bad input or a fault (or a good input that is easy to get
wrong) and says what must happen: a clear error whose message names the problem, or a
correct result that the case checks. The outcome is one of

* ``clear error`` / ``correct result``: what should happen;
* ``silent wrong result``: bad input accepted, or a result that fails its check;
* ``data lost``: a file that must survive was changed or removed;
* ``traceback``: an exception a user would see as a traceback (for command-line
  cases: any exception that escapes ``main``);
* ``unclear error``: an error whose message does not name the problem;
* ``hang``: no answer within the time limit.

Command-line cases call each script's ``main(argv)`` in this process (faster than a
new interpreter each); the kill -9 cases run real processes. Needs ``NPVAE_DATA`` for
the MNIST training cases. Exit status 1 when any case fails.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

os.environ.setdefault("MPLBACKEND", "Agg")
import npvae  # noqa: E402  (before NumPy: OpenBLAS thread settings)
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from npvae import h5mat  # noqa: E402
from npvae.audio.io import read_audio, write_audio  # noqa: E402
from npvae.audio.stft import STFTConfig  # noqa: E402
from npvae.checkpoint import TMP_TAG, load_checkpoint, save_checkpoint  # noqa: E402
from npvae.data.idx import read_idx, write_idx  # noqa: E402
from npvae.errors import NpvaeError  # noqa: E402
from npvae.metrics.audio import bss_eval_sources, gnsdr, separation_scores, si_sdr, weighted_mean  # noqa: E402
from npvae.models.music import SpectrogramUNetVAE  # noqa: E402
from npvae.io import save_separator  # noqa: E402
from npvae.separator import Normalizer, Separator  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUTCOMES_OK = ("clear error", "correct result")
LIB_ERRORS = (NpvaeError, ValueError, FileNotFoundError)


class DataLost(AssertionError):
    """A file that had to survive did not."""


class Timeout(BaseException):
    pass


@dataclass
class Case:
    group: str
    name: str
    expect: str                 # "error" or "ok"
    fn: Callable
    match: str = ""             # regex the error message must contain (case-insensitive)
    cli: bool = False           # an exception escaping fn is a traceback
    slow: int = 1               # multiplies the time limit (real training runs)


CASES: list[Case] = []


def case(group, name, expect="error", match="", cli=False):
    def deco(fn):
        CASES.append(Case(group, name, expect, fn, match, cli))
        return fn
    return deco


def add(group, name, fn, expect="error", match="", cli=False, slow=1):
    CASES.append(Case(group, name, expect, fn, match, cli, slow))


# ----------------------------------------------------------------------------- helpers

class Ctx:
    """Fixtures built on first use, in one temporary folder."""

    def __init__(self, root: Path):
        self.root = root
        self._cache = {}
        self.n = 0

    def tmp(self) -> Path:
        self.n += 1
        d = self.root / f"case{self.n:03d}"
        d.mkdir()
        return d

    def get(self, name, make):
        if name not in self._cache:
            self._cache[name] = make()
        return self._cache[name]

    # -- fixtures
    @property
    def music_model(self) -> Path:
        def make():
            rng = np.random.default_rng(0)
            model = SpectrogramUNetVAE(channels=(4, 4, 8), latent_channels=4, rng=rng)
            cfg = STFTConfig(sample_rate=8000, n_fft=256, hop=64)
            sep = Separator(model, cfg, Normalizer(mean=np.zeros(128), std=np.ones(128)))
            return save_separator(self.root / "fixtures" / "music_model.h5", sep, {"epochs": 0})
        return self.get("music_model", make)

    def song(self, name="song.wav", sr=8000, ch=2, seconds=1.2, folder=None, subtype=None, seed=0):
        folder = Path(folder or self.tmp())
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        x = (0.2 * rng.standard_normal((int(seconds * sr), ch))).astype(np.float32)
        path = folder / name
        sf.write(str(path), x, sr, subtype=subtype)
        return path

    @property
    def mnist_model(self) -> Path:
        def make():
            from npvae.io import save_model
            from npvae.models.mnist import build_model
            m = build_model("unet", rng=np.random.default_rng(0), channels=(4, 4, 8), latent_dim=4)
            return save_model(self.root / "fixtures" / "mnist_model.h5", m, {"model": "unet"})
        return self.get("mnist_model", make)

    @property
    def irmas(self) -> Path:
        def make():
            root = self.root / "fixtures" / "irmas"
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
        return self.get("irmas", make)

    def music_args(self, out, epochs=1, *extra):
        return ["--dataset", "irmas", "--data-dir", str(self.irmas), "--epochs", str(epochs),
                "--channels", "4", "4", "8", "--latent-channels", "4", "--batch-size", "2", "--frames", "16",
                "--display-every", "1", "--out", str(out), "--no-progress", *extra]

    @property
    def music_run(self) -> Path:
        def make():
            out = self.root / "fixtures" / "music_run"
            shutil.rmtree(out, ignore_errors=True)
            r = cli("train_music.py", *self.music_args(out))
            assert r.code == 0, r.err
            return out
        return self.get("music_run", make)

    def mnist_args(self, out, epochs=1, *extra):
        return ["--hidden", "16", "--latent-dim", "2", "--epochs", str(epochs), "--train-limit", "256",
                "--eval-limit", "50", "--batch-size", "64", "--out", str(out), "--no-progress", *extra]

    @property
    def mnist_run(self) -> Path:
        def make():
            out = self.root / "fixtures" / "mnist_run"
            shutil.rmtree(out, ignore_errors=True)
            r = cli("train_mnist.py", *self.mnist_args(out))
            assert r.code == 0, r.err
            return out
        return self.get("mnist_run", make)


@dataclass
class CliResult:
    code: object
    out: str
    err: str


_SCRIPTS = {}


def cli(script: str, *args) -> CliResult:
    """Run ``scripts/<script>``'s main(argv) here; SystemExit becomes a result."""
    if script not in _SCRIPTS:
        spec = importlib.util.spec_from_file_location(script[:-3], REPO / "scripts" / script)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        _SCRIPTS[script] = mod
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = _SCRIPTS[script].main([str(a) for a in args])
            code = rc or 0
        except SystemExit as e:
            code = e.code if e.code is not None else 0
            if isinstance(code, str):
                print(code, file=sys.stderr)
                code = 1
    return CliResult(code, out.getvalue(), err.getvalue())


def expect_cli_error(script, *args):
    """For error cases: the script must exit non-zero; its stderr is the message."""
    r = cli(script, *args)
    if r.code == 0:
        raise AssertionError(f"accepted (exit 0): {r.out[-300:]}")
    raise CliError(r.err.strip() or r.out.strip())


class CliError(Exception):
    pass


def digest(path: Path) -> bytes:
    return Path(path).read_bytes()


def must_survive(path: Path, before: bytes):
    if not Path(path).exists() or Path(path).read_bytes() != before:
        raise DataLost(f"{path} was changed or removed")


def no_temporaries(folder: Path):
    stray = [p for p in Path(folder).rglob("*") if TMP_TAG in p.name or p.name.endswith(".tmp")]
    if stray:
        raise AssertionError(f"temporary files left: {stray[:3]}")


# ----------------------------------------------------------------------------- runner

SLOW_GROUPS = ("train_mnist", "train_music", "evaluate")   # may train a fixture run first


def run_case(c: Case, ctx: Ctx, timeout: int) -> tuple[str, str]:
    def alarm(*_):
        raise Timeout()
    old = signal.signal(signal.SIGALRM, alarm)
    slow = max(c.slow, 3 if c.group in SLOW_GROUPS else 1)
    signal.alarm(timeout * slow)
    try:
        result = c.fn(ctx)
        if c.expect == "error":
            return "silent wrong result", f"accepted: {str(result)[:120]}" if result is not None else "accepted"
        return "correct result", str(result or "")
    except Timeout:
        return "hang", f"no answer in {timeout * slow} s"
    except DataLost as e:
        return "data lost", str(e)
    except AssertionError as e:
        return "silent wrong result", str(e).splitlines()[0][:200] if str(e) else "check failed"
    except CliError as e:
        msg = str(e)
        return classify_error(c, msg)
    except LIB_ERRORS as e:
        if c.cli:
            return "traceback", f"{type(e).__name__}: {e}"[:200]
        return classify_error(c, f"{type(e).__name__}: {e}")
    except Exception as e:  # noqa: BLE001 - anything else is what the user would see as a traceback
        tb = traceback.extract_tb(e.__traceback__)[-1]
        return "traceback", f"{type(e).__name__}: {e} ({Path(tb.filename).name}:{tb.lineno})"[:200]
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def classify_error(c: Case, msg: str) -> tuple[str, str]:
    first = " ".join(msg.split())[:220]
    if c.expect == "ok":
        return "silent wrong result" if not c.cli else "unclear error", f"refused a good input: {first}"
    if "Traceback (most recent call last)" in msg:
        return "traceback", first
    if c.match and not re.search(c.match, msg, re.I | re.S):
        return "unclear error", f"(wanted /{c.match}/) {first}"
    return "clear error", first


# ============================================================================= the cases
# --- metrics -------------------------------------------------------------------------------
_r = np.random.default_rng(0)
REF = _r.standard_normal((2, 4000))
EST = REF + 0.1 * _r.standard_normal((2, 4000))


@case("metrics", "si_sdr of an all-zero estimate", "ok")
def _(ctx):
    v = si_sdr(REF[0], np.zeros(4000))
    assert v == -np.inf, f"got {v}"
    return "-inf"


add("metrics", "si_sdr of a silent reference", lambda c: si_sdr(np.zeros(4000), REF[0]), match="silent reference")
add("metrics", "si_sdr with NaN in the estimate", lambda c: si_sdr(REF[0], np.r_[np.nan, REF[0][1:]]), match="NaN")
add("metrics", "si_sdr of arrays of different length", lambda c: si_sdr(REF[0], REF[0][:100]), match="shape")
add("metrics", "si_sdr on (n, 2) arrays", lambda c: si_sdr(REF.T, EST.T), match="transpose")
add("metrics", "bss_eval_sources on (n, 2) instead of (2, n)", lambda c: bss_eval_sources(REF.T, EST.T),
    match="transpose")
add("metrics", "bss_eval_sources with a silent estimate",
    lambda c: bss_eval_sources(REF, np.stack([EST[0], np.zeros(4000)])), match="silent")
add("metrics", "bss_eval_sources with a silent reference",
    lambda c: bss_eval_sources(np.stack([REF[0], np.zeros(4000)]), EST), match="silent")
add("metrics", "bss_eval_sources, shapes differ", lambda c: bss_eval_sources(REF, EST[:, :3000]), match="same shape")
add("metrics", "bss_eval_sources on empty arrays", lambda c: bss_eval_sources(np.zeros((2, 0)), np.zeros((2, 0))),
    match="shape")
add("metrics", "bss_eval_sources on 3-D arrays", lambda c: bss_eval_sources(REF[None], EST[None]), match="shape")
add("metrics", "bss_eval_sources with inf", lambda c: bss_eval_sources(REF, EST * np.inf), match="inf")
add("metrics", "separation_scores with a silent mixture",
    lambda c: separation_scores(REF, EST, np.zeros(4000)), match="silent")
add("metrics", "weighted_mean with negative lengths", lambda c: weighted_mean([1.0, 2.0], [1.0, -3.0]),
    match="non-negative")
add("metrics", "weighted_mean with one length too few", lambda c: weighted_mean([1.0, 2.0], [1.0]),
    match="one length per clip")


@case("metrics", "bss_eval_sources of a perfect estimate", "ok")
def _(ctx):
    sdr = bss_eval_sources(REF, REF)[0]
    assert np.all(sdr > 100), sdr
    return f"SDR {sdr.min():.0f} dB"


@case("metrics", "gnsdr weights clips by length", "ok")
def _(ctx):
    v = gnsdr([1.0, 4.0], [3.0, 1.0])
    assert abs(v - 1.75) < 1e-12, v


# --- audio files ----------------------------------------------------------------------------
add("audio", "read_audio of a missing file", lambda c: read_audio(c.root / "none.wav"), match="not found")


@case("audio", "read_audio of a text file named .wav", match="cannot read")
def _(ctx):
    p = ctx.tmp() / "x.wav"
    p.write_text("hello")
    read_audio(p)


@case("audio", "read_audio of a WAV with no samples", match="no samples")
def _(ctx):
    p = ctx.tmp() / "e.wav"
    sf.write(str(p), np.zeros((0, 2), np.float32), 8000)
    read_audio(p)


@case("audio", "read_audio of a float WAV holding NaN", match="NaN")
def _(ctx):
    p = ctx.tmp() / "n.wav"
    sf.write(str(p), np.array([[0.1], [np.nan]], np.float32), 8000, subtype="FLOAT")
    read_audio(p)


@case("audio", "read_audio of a folder", match="not found")
def _(ctx):
    read_audio(ctx.tmp())


@case("audio", "read_audio of a FLAC file named .wav", "ok")
def _(ctx):
    p = ctx.song("x.flac")
    q = p.with_name("x.wav")
    p.rename(q)
    x, sr = read_audio(q)
    assert sr == 8000 and x.shape == (9600, 2)


@case("audio", "read_audio of an MP3 (libsndfile >= 1.1)", "ok")
def _(ctx):
    if "MP3" not in sf.available_formats():
        return "MP3 not supported by this libsndfile: documented"
    p = ctx.song("x.mp3", sr=16000, seconds=1.0)
    x, sr = read_audio(p)
    assert sr == 16000 and x.shape[1] == 2 and abs(x.shape[0] - 16000) < 2000
    return f"{x.shape[0]} samples"


@case("audio", "read_audio resampling 44.1 kHz -> 16 kHz keeps the duration", "ok")
def _(ctx):
    p = ctx.song("x.wav", sr=44100, seconds=1.0)
    x, sr = read_audio(p, sr=16000)
    assert sr == 16000 and x.shape == (16000, 2), x.shape


add("audio", "read_audio to 0 Hz", lambda c: read_audio(c.song(), sr=0), match="positive")
add("audio", "write_audio with an unknown extension", lambda c: write_audio(c.tmp() / "x.xyz", np.zeros(10), 8000),
    match="unknown audio extension")
add("audio", "write_audio of NaN samples", lambda c: write_audio(c.tmp() / "x.wav", np.full(10, np.nan), 8000),
    match="NaN")
add("audio", "write_audio 16-bit of samples beyond full scale",
    lambda c: write_audio(c.tmp() / "x.wav", np.full(10, 1.5), 8000, subtype="PCM_16"), match="clip")
add("audio", "write_audio of no samples", lambda c: write_audio(c.tmp() / "x.wav", np.zeros(0), 8000),
    match="n_samples > 0")
add("audio", "write_audio of a 3-D array", lambda c: write_audio(c.tmp() / "x.wav", np.zeros((4, 2, 2)), 8000),
    match="shape")


@case("audio", "write_audio creates files with normal permissions (not 0600)", "ok")
def _(ctx):
    p = write_audio(ctx.tmp() / "x.wav", np.zeros(10), 8000)
    mode = p.stat().st_mode & 0o777
    want = 0o666 & ~_umask()
    assert mode == want, oct(mode)
    return oct(mode)


def _umask():
    old = os.umask(0)
    os.umask(old)
    return old


# --- IDX files ------------------------------------------------------------------------------
def _idx_case(name, data: bytes, match, gz=False):
    def fn(ctx):
        p = ctx.tmp() / ("x.idx.gz" if gz else "x.idx")
        p.write_bytes(data)
        read_idx(p)
    add("idx", name, fn, match=match)


_good = bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3]) + bytes(range(6))
_idx_case("IDX shorter than a header", b"\x00\x00", "too short")
_idx_case("IDX with a wrong magic number (an HTML page)", b"<html>not idx</html>", "magic")
_idx_case("IDX with an unknown dtype code", bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 5]), "dtype code")
_idx_case("IDX with 0 dimensions", bytes([0, 0, 8, 0]), "0 dimensions")
_idx_case("IDX with a truncated header", bytes([0, 0, 8, 3, 0, 0, 0, 1]), "truncated header")
_idx_case("IDX with truncated data", _good[:-2], "truncated")
_idx_case("IDX with trailing bytes", _good + b"\x00", "trailing")
_idx_case("IDX header claiming 4 G x 4 G items", bytes([0, 0, 8, 2]) + b"\xff" * 8 + b"\x00", "truncated")
_idx_case("gzip IDX cut in half", __import__("gzip").compress(_good * 50)[:40], "gzip", gz=True)
for _seed in range(8):
    _idx_case(f"IDX of random bytes (seed {_seed})",
              bytes([0, 0]) + np.random.default_rng(_seed).integers(0, 256, 30, dtype=np.uint8).tobytes(),
              "IDX|truncated|dtype|dimensions|trailing")


@case("idx", "IDX round trip of every dtype", "ok")
def _(ctx):
    d = ctx.tmp()
    for dt in (np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64):
        a = (np.arange(24).reshape(2, 3, 4) - 5).astype(dt)
        back = read_idx(write_idx(d / f"a_{np.dtype(dt).name}.idx.gz", a))
        assert back.dtype == np.dtype(dt) and np.array_equal(back, a), dt


add("idx", "read_idx of a missing file", lambda c: read_idx(c.root / "nope.idx"), match="not found")


# --- model files ----------------------------------------------------------------------------
def _load(path):
    return npvae.load_model(path)


add("model file", "load_model of a missing file", lambda c: _load(c.root / "nope.h5"), match="does not exist")


@case("model file", "load_model of a text file named model.h5", match="not a readable HDF5")
def _(ctx):
    p = ctx.tmp() / "model.h5"
    p.write_text("x" * 2000)
    _load(p)


@case("model file", "load_model of a truncated model file", match="not a readable HDF5|corrupt|truncated")
def _(ctx):
    p = ctx.tmp() / "model.h5"
    p.write_bytes(digest(ctx.music_model)[:3000])
    _load(p)


@case("model file", "load_model of an HDF5 file that npvae did not write", match="not an npvae file")
def _(ctx):
    import h5py
    p = ctx.tmp() / "other.h5"
    with h5py.File(p, "w") as f:
        f["x"] = np.zeros(3)
    _load(p)


@case("model file", "load_model of a folder without a model", match="holds no model.h5")
def _(ctx):
    _load(ctx.tmp())


def _edited_model(ctx, edit):
    tree = h5mat.read_tree(ctx.mnist_model)
    edit(tree)
    p = ctx.tmp() / "model.h5"
    h5mat.write_tree(p, tree, kind="model")
    return p


def _shape_changed(tree):
    k = sorted(tree["model"]["params"])[0]
    a = tree["model"]["params"][k]
    tree["model"]["params"][k] = np.zeros(a.shape[:-1] + (a.shape[-1] + 1,), a.dtype)


add("model file", "a model file with one parameter's shape changed",
    lambda c: _load(_edited_model(c, _shape_changed)), match="do not fit the architecture")
add("model file", "a model file with a parameter missing",
    lambda c: _load(_edited_model(c, lambda t: t["model"]["params"].pop(sorted(t["model"]["params"])[0]))),
    match="do not fit the architecture")
add("model file", "a model file whose spec is not JSON",
    lambda c: _load(_edited_model(c, lambda t: t["model"].__setitem__("spec", "{not json"))),
    match="spec")
add("model file", "a model file whose spec names an unknown layer",
    lambda c: _load(_edited_model(c, lambda t: t["model"].__setitem__("spec", '{"type": "Nope"}'))),
    match="unknown layer type")
for _seed in range(5):
    def _rand(ctx, _seed=_seed):
        p = ctx.tmp() / "model.h5"
        p.write_bytes(np.random.default_rng(_seed).integers(0, 256, 4096, dtype=np.uint8).tobytes())
        _load(p)
    add("model file", f"a model file of random bytes (seed {_seed})", _rand, match="not a readable HDF5")


@case("model file", "a results file of the wrong kind where a model is wanted", match="expected a")
def _(ctx):
    p = ctx.tmp() / "r.h5"
    h5mat.write_tree(p, {"metrics": {"x": 1.0}}, kind="study")
    _load(p)


@case("model file", "load_model round trip gives identical outputs", "ok")
def _(ctx):
    from npvae.io import save_model
    m = _load(ctx.mnist_model)
    p = save_model(ctx.tmp() / "again.h5", m, {})
    x = np.random.default_rng(0).uniform(size=(3, 28, 28)).astype(np.float32)
    for a, b in zip(m.separate(x), _load(p).separate(x)):
        assert np.array_equal(a, b)


# --- checkpoints ----------------------------------------------------------------------------
def _ckpt(ctx, data: bytes):
    p = ctx.tmp() / "checkpoint.npz"
    p.write_bytes(data)
    load_checkpoint(p)


def _valid_ckpt_bytes(ctx):
    p = ctx.root / "fixtures" / "ck.npz"
    if not p.exists():
        save_checkpoint(p, {"a": np.arange(100.0)}, {"epoch": 1})
    return p.read_bytes()


add("checkpoint", "load_checkpoint of a missing file", lambda c: load_checkpoint(c.root / "none.npz"),
    match="does not exist")
add("checkpoint", "a checkpoint cut short", lambda c: _ckpt(c, _valid_ckpt_bytes(c)[:200]), match="corrupt")
add("checkpoint", "a checkpoint that is not a zip", lambda c: _ckpt(c, b"PK-not-really" * 10), match="corrupt")


@case("checkpoint", "a zip without npvae's meta record", match="corrupt|not an npvae checkpoint")
def _(ctx):
    p = ctx.tmp() / "x.npz"
    np.savez(p, a=np.zeros(3))
    load_checkpoint(p)


@case("checkpoint", "a checkpoint whose meta is not JSON", match="corrupt")
def _(ctx):
    p = ctx.tmp() / "x.npz"
    np.savez(p, meta=np.array("{broken"))
    load_checkpoint(p)


for _seed in range(5):
    add("checkpoint", f"a checkpoint of random bytes (seed {_seed})",
        lambda c, s=_seed: _ckpt(c, np.random.default_rng(s).integers(0, 256, 2048, dtype=np.uint8).tobytes()),
        match="corrupt")


@case("checkpoint", "atomic writes leave no temporary and keep normal permissions", "ok")
def _(ctx):
    d = ctx.tmp()
    save_checkpoint(d / "c.npz", {"a": np.zeros(3)}, {"epoch": 1})
    no_temporaries(d)
    assert (d / "c.npz").stat().st_mode & 0o777 == 0o666 & ~_umask()


def _kill9(ctx, seed):
    """Kill a tiny MNIST run with SIGKILL at a random moment, resume it, compare with a straight run."""
    base = ctx.get("kill_base", lambda: _straight_run(ctx))
    out = ctx.tmp() / "run"
    args = ctx.mnist_args(out, 3)
    env = {**os.environ, "PYTHONPATH": str(REPO), "MPLBACKEND": "Agg"}
    cmd = [sys.executable, str(REPO / "scripts" / "train_mnist.py"), *args]
    delay = np.random.default_rng(seed).uniform(0.3, 1.0) * base["seconds"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resume = ["--resume"] if (out / "checkpoint.npz").exists() else []
    r = subprocess.run(cmd + resume, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-300:]
    a, _ = load_checkpoint(out / "checkpoint.npz")
    for k, v in base["weights"].items():
        assert np.array_equal(a[k], v), f"weights differ after kill at {delay:.1f} s: {k}"
    no_temporaries(out)
    return f"killed after {delay:.1f} s, resumed bit-identical"


def _straight_run(ctx):
    out = ctx.root / "fixtures" / "straight"
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(REPO), "MPLBACKEND": "Agg"}
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "train_mnist.py"), *ctx.mnist_args(out, 3)],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-300:]
    return {"seconds": time.perf_counter() - t, "weights": load_checkpoint(out / "checkpoint.npz")[0]}


for _seed in range(3):
    add("checkpoint", f"kill -9 at a random moment, then --resume (seed {_seed})",
        lambda c, s=_seed: _kill9(c, s), expect="ok", slow=4)


# --- separate.py ----------------------------------------------------------------------------
def sep(ctx, *args):
    return cli("separate.py", *args, "--no-progress")


def sep_err(ctx, *args):
    expect_cli_error("separate.py", *args, "--no-progress")


@case("separate", "two inputs with the same name in different folders", "ok", cli=True)
def _(ctx):
    d = ctx.tmp()
    a, b = ctx.song(folder=d / "a"), ctx.song(folder=d / "b", seed=1)
    r = sep(ctx, a, b, "--model", ctx.music_model, "--out", d / "out")
    assert r.code == 0, r.err
    va, vb = (sf.read(str(d / "out" / x / "song_vocals.wav"))[0] for x in ("a", "b"))
    assert not np.array_equal(va, vb), "one output replaced the other"


@case("separate", "song.wav and song.flac in one folder (same output names)", match="would both write", cli=True)
def _(ctx):
    d = ctx.tmp()
    ctx.song("song.wav", folder=d)
    ctx.song("song.flac", folder=d)
    sep_err(ctx, d / "song.wav", d / "song.flac", "--model", ctx.music_model, "--out", d / "out")


@case("separate", "an existing output without --overwrite", match="exists; pass --overwrite", cli=True)
def _(ctx):
    d = ctx.tmp()
    s = ctx.song(folder=d)
    (d / "out").mkdir()
    old = d / "out" / "song_vocals.wav"
    old.write_bytes(b"precious")
    try:
        sep_err(ctx, s, "--model", ctx.music_model, "--out", d / "out")
    finally:
        must_survive(old, b"precious")


@case("separate", "an existing output with --overwrite", "ok", cli=True)
def _(ctx):
    d = ctx.tmp()
    s = ctx.song(folder=d)
    (d / "out").mkdir()
    (d / "out" / "song_vocals.wav").write_bytes(b"old")
    r = sep(ctx, s, "--model", ctx.music_model, "--out", d / "out", "--overwrite")
    assert r.code == 0, r.err
    assert sf.info(str(d / "out" / "song_vocals.wav")).frames == 9600


@case("separate", "an input inside --out that an output would replace", match="would replace the input", cli=True)
def _(ctx):
    d = ctx.tmp()
    victim = ctx.song("song_vocals.wav", folder=d / "sep")
    other = ctx.song("song.wav", folder=d / "sep")
    before = digest(victim)
    try:
        sep_err(ctx, other, victim, "--model", ctx.music_model, "--out", d / "sep", "--overwrite")
    finally:
        must_survive(victim, before)


@case("separate", "a folder scan that includes --out leaves --out's files alone", "ok", cli=True)
def _(ctx):
    d = ctx.tmp()
    ctx.song("one.wav", folder=d)
    inside = ctx.song("old_vocals.wav", folder=d / "out")
    before = digest(inside)
    r = sep(ctx, d, "--model", ctx.music_model, "--out", d / "out")
    assert r.code == 0, r.err
    must_survive(inside, before)
    assert not (d / "out" / "out").exists() and (d / "out" / "one_vocals.wav").exists()


@case("separate", "--out is a file", match="is a file", cli=True)
def _(ctx):
    d = ctx.tmp()
    (d / "f").write_text("x")
    sep_err(ctx, ctx.song(folder=d), "--model", ctx.music_model, "--out", d / "f")


@case("separate", "--out below a file", match="is a file", cli=True)
def _(ctx):
    d = ctx.tmp()
    (d / "f").write_text("x")
    sep_err(ctx, ctx.song(folder=d), "--model", ctx.music_model, "--out", d / "f" / "sub")


@case("separate", "an unreadable input among good ones (nothing done)", match="not readable audio", cli=True)
def _(ctx):
    d = ctx.tmp()
    (d / "bad.wav").write_text("no")
    try:
        sep_err(ctx, ctx.song(folder=d), d / "bad.wav", "--model", ctx.music_model, "--out", d / "out")
    finally:
        assert not (d / "out").exists(), "work started before the check"


add("separate", "a missing input", lambda c: sep_err(c, c.root / "nope.wav", "--model", c.music_model, "--out",
                                                     c.tmp()), match="no such file", cli=True)
add("separate", "an empty folder", lambda c: sep_err(c, c.tmp(), "--model", c.music_model, "--out", c.tmp() / "o"),
    match="no audio files", cli=True)


@case("separate", "--stems vocals writes only vocals", "ok", cli=True)
def _(ctx):
    d = ctx.tmp()
    r = sep(ctx, ctx.song(folder=d), "--model", ctx.music_model, "--out", d / "o", "--stems", "vocals")
    assert r.code == 0, r.err
    assert sorted(p.name for p in (d / "o").iterdir()) == ["song_vocals.wav"]


add("separate", "--stems drums", lambda c: sep_err(c, c.song(), "--model", c.music_model, "--out", c.tmp(),
                                                   "--stems", "drums"), match="invalid choice", cli=True)


def _format_case(fmt, bits, subtype):
    def fn(ctx):
        d = ctx.tmp()
        r = sep(ctx, ctx.song(folder=d), "--model", ctx.music_model, "--out", d / "o", "--format", fmt,
                "--bits", bits)
        assert r.code == 0, r.err
        info = sf.info(str(d / "o" / f"song_vocals.{fmt}"))
        assert info.subtype == subtype and info.frames == 9600, (info.subtype, info.frames)
    add("separate", f"--format {fmt} --bits {bits}", fn, expect="ok", cli=True)


for _f, _b, _s in (("wav", "16", "PCM_16"), ("wav", "24", "PCM_24"), ("wav", "float", "FLOAT"),
                   ("flac", "16", "PCM_16"), ("flac", "24", "PCM_24")):
    _format_case(_f, _b, _s)
add("separate", "--format flac --bits float", lambda c: sep_err(c, c.song(), "--model", c.music_model, "--out",
                                                                c.tmp(), "--format", "flac", "--bits", "float"),
    match="not available in FLAC", cli=True)


def _rate_case(sr, ch, seconds=1.1, name="song.wav", subtype=None):
    def fn(ctx):
        d = ctx.tmp()
        s = ctx.song(name, sr=sr, ch=ch, seconds=seconds, folder=d, subtype=subtype)
        r = sep(ctx, s, "--model", ctx.music_model, "--out", d / "o")
        assert r.code == 0, r.err
        info = sf.info(str(d / "o" / f"{Path(name).stem}_accompaniment.wav"))
        n_in = sf.info(str(s)).frames
        assert (info.samplerate, info.channels, info.frames) == (sr, ch, n_in), (info.samplerate, info.channels,
                                                                                 info.frames)
    add("separate", f"{'mono' if ch == 1 else f'{ch}-channel'} {sr} Hz {Path(name).suffix[1:].upper()} "
        f"input{' (' + subtype + ')' if subtype else ''}", fn, expect="ok", cli=True)


for _sr, _ch in ((8000, 1), (8000, 2), (11025, 1), (16000, 6), (44100, 2), (48000, 1), (96000, 2), (7919, 1)):
    _rate_case(_sr, _ch)
_rate_case(22050, 2, name="song.flac")
_rate_case(16000, 1, subtype="PCM_16")
_rate_case(8000, 1, seconds=0.01)
if "MP3" in sf.available_formats():
    _rate_case(16000, 2, name="song.mp3")

for _bad, _m in ((["--chunk-frames", "7"], "multiple of 8"), (["--chunk-frames", "0"], "multiple of 8"),
                 (["--chunk-frames", "-8"], "multiple of 8"), (["--block-seconds", "0"], "positive"),
                 (["--block-seconds", "nan"], "positive"), (["--block-seconds", "-3"], "positive"),
                 (["--format", "mp3"], "invalid choice"), (["--bits", "8"], "invalid choice")):
    add("separate", " ".join(_bad), lambda c, b=_bad: sep_err(c, c.song(), "--model", c.music_model, "--out",
                                                              c.tmp(), *b), match=_m, cli=True)
add("separate", "--model that does not exist", lambda c: sep_err(c, c.song(), "--model", c.root / "no.h5", "--out",
                                                                 c.tmp()), match="does not exist", cli=True)
add("separate", "--model is a Part I (MNIST) model", lambda c: sep_err(c, c.song(), "--model", c.mnist_model,
                                                                       "--out", c.tmp()),
    match="not a music separation model", cli=True)
add("separate", "--model with a changed parameter shape",
    lambda c: sep_err(c, c.song(), "--model", _edited_model(c, _shape_changed), "--out", c.tmp()),
    match="do not fit|not a music", cli=True)


@case("separate", "--model of random bytes", match="not a readable HDF5", cli=True)
def _(ctx):
    p = ctx.tmp() / "m.h5"
    p.write_bytes(os.urandom(3000))
    sep_err(ctx, ctx.song(), "--model", p, "--out", ctx.tmp())


add("separate", "no songs given", lambda c: sep_err(c, "--model", c.music_model, "--out", c.tmp()),
    match="at least one song", cli=True)
add("separate", "no --out given", lambda c: sep_err(c, c.song(), "--model", c.music_model),
    match="--out", cli=True)


@case("separate", "an input with no samples", match="no samples", cli=True)
def _(ctx):
    d = ctx.tmp()
    sf.write(str(d / "e.wav"), np.zeros((0, 1), np.float32), 8000)
    sep_err(ctx, d / "e.wav", "--model", ctx.music_model, "--out", d / "o")


@case("separate", "a float input holding NaN (found while reading)", match="NaN", cli=True)
def _(ctx):
    d = ctx.tmp()
    x = np.full((4000, 1), 0.1, np.float32)
    x[3000] = np.nan
    sf.write(str(d / "n.wav"), x, 8000, subtype="FLOAT")
    try:
        sep_err(ctx, d / "n.wav", "--model", ctx.music_model, "--out", d / "o")
    finally:
        assert not (d / "o").exists() or not any(p.is_file() for p in (d / "o").rglob("*")), "partial outputs"


@case("separate", "the same file given twice is separated once", "ok", cli=True)
def _(ctx):
    d = ctx.tmp()
    s = ctx.song(folder=d)
    r = sep(ctx, s, s, "--model", ctx.music_model, "--out", d / "o")
    assert r.code == 0, r.err
    assert r.out.count("song_vocals.wav") == 1


@case("separate", "blocks of 0.5 s equal one 100 s block (no seams)", "ok", cli=True)
def _(ctx):
    d = ctx.tmp()
    s = ctx.song(folder=d, sr=22050, seconds=4.3)
    for name, bs in (("small", "0.5"), ("big", "100")):
        r = sep(ctx, s, "--model", ctx.music_model, "--out", d / name, "--block-seconds", bs)
        assert r.code == 0, r.err
    a = sf.read(str(d / "small" / "song_vocals.wav"))[0]
    b = sf.read(str(d / "big" / "song_vocals.wav"))[0]
    err = float(np.max(np.abs(a - b)))
    assert err < 1e-5 * max(1e-9, float(np.max(np.abs(b)))), err
    return f"max difference {err:.1e}"


@case("separate", "writing fails midway (file size limit, as a full disk)", match="failed.*not written", cli=True)
def _(ctx):
    d = ctx.tmp()
    s = ctx.song(folder=d, seconds=3.0)
    old_sig = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20000, old[1]))
    try:
        sep_err(ctx, s, "--model", ctx.music_model, "--out", d / "o")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, old_sig)
        no_temporaries(d)
        assert not any(p.is_file() for p in (d / "o").rglob("*")), "half-written outputs left"


@case("separate", "not enough free space is found before any work", match="not enough free space", cli=True)
def _(ctx):
    import npvae.fileguard as fg
    d = ctx.tmp()
    real = fg.shutil.disk_usage
    fg.shutil.disk_usage = lambda p: type("U", (), {"free": 1000})()
    try:
        sep_err(ctx, ctx.song(folder=d), "--model", ctx.music_model, "--out", d / "o")
    finally:
        fg.shutil.disk_usage = real
    assert not (d / "o").exists()


# --- model.separate and Separator.separate (inputs at the edge) ----------------------------
def _mnist_sep(x):
    return _load_cached_mnist().separate(x)


_MN = {}


def _load_cached_mnist():
    if "m" not in _MN:
        from npvae.models.mnist import build_model
        _MN["m"] = build_model("unet", rng=np.random.default_rng(0), channels=(4, 4, 8), latent_dim=4)
    return _MN["m"]


_U8 = np.random.default_rng(3).integers(0, 256, (4, 28, 28)).astype(np.uint8)


@case("inputs", "model.separate of uint8 images (as load_images returns them)", "ok")
def _(ctx):
    a = _mnist_sep(_U8)
    b = _mnist_sep(_U8 / np.float32(255))
    assert all(np.allclose(x, y, atol=1e-6) for x, y in zip(a, b))
    assert max(float(x.max()) for x in a) <= 1.0
    return f"max output {max(float(x.max()) for x in a):.3f}"


add("inputs", "model.separate of float images in 0..255", lambda c: _mnist_sep(_U8.astype(np.float32)),
    match="divide by 255")
add("inputs", "model.separate of int64 images", lambda c: _mnist_sep(_U8.astype(np.int64)), match="ambiguous")
add("inputs", "model.separate of images holding NaN", lambda c: _mnist_sep(np.full((2, 28, 28), np.nan)), match="NaN")
add("inputs", "model.separate of an empty batch", lambda c: _mnist_sep(np.zeros((0, 28, 28))), match="empty")
add("inputs", "model.separate of flat (N, 784) images", lambda c: _mnist_sep(np.zeros((2, 784))), match="reshape")
add("inputs", "model.separate of one (28, 28) image", lambda c: _mnist_sep(np.zeros((28, 28))), match=r"x\[None\]")
add("inputs", "model.separate of (N, 1, 28, 28) images", lambda c: _mnist_sep(np.zeros((2, 1, 28, 28))),
    match=r"\(N, 28, 28\)")
add("inputs", "model.separate of 32 x 32 images", lambda c: _mnist_sep(np.zeros((2, 32, 32))), match=r"\(N, 28, 28\)")
add("inputs", "model.separate of negative values", lambda c: _mnist_sep(np.full((1, 28, 28), -0.5)),
    match=r"\[0, 1\]")
add("inputs", "model.separate of complex images", lambda c: _mnist_sep(np.zeros((1, 28, 28), complex)),
    match="numbers")
add("inputs", "model.separate of strings", lambda c: _mnist_sep(np.full((1, 28, 28), "a")), match="numbers")


@case("inputs", "model.separate of float64 images in [0, 1]", "ok")
def _(ctx):
    d, f, m = _mnist_sep(np.random.default_rng(0).uniform(size=(2, 28, 28)))
    assert d.shape == (2, 28, 28) and d.dtype == np.float32


_SEPR = {}


def _separator():
    if "s" not in _SEPR:
        rng = np.random.default_rng(0)
        model = SpectrogramUNetVAE(channels=(4, 4, 8), latent_channels=4, rng=rng)
        _SEPR["s"] = Separator(model, STFTConfig(sample_rate=8000, n_fft=256, hop=64),
                               Normalizer(mean=np.zeros(128), std=np.ones(128)))
    return _SEPR["s"]


_PCM = (np.random.default_rng(4).standard_normal((4000, 2)) * 3000).astype(np.int16)


@case("inputs", "Separator.separate of int16 audio (scaled by 1/32768)", "ok")
def _(ctx):
    a = _separator().separate(_PCM, 8000)
    b = _separator().separate(_PCM / np.float32(32768), 8000)
    assert np.array_equal(a, b) and float(np.abs(a).max()) < 2
    return f"peak {float(np.abs(a).max()):.2f}"


@case("inputs", "Separator.separate of int32 audio", "ok")
def _(ctx):
    a = _separator().separate(_PCM.astype(np.int32) << 16, 8000)
    b = _separator().separate(_PCM / np.float32(32768), 8000)
    assert np.allclose(a, b, atol=1e-6)


@case("inputs", "Separator.separate of 8-bit (uint8, offset) audio", "ok")
def _(ctx):
    u = (_PCM // 256 + 128).astype(np.uint8)
    a = _separator().separate(u, 8000)
    assert float(np.abs(a).max()) < 2


add("inputs", "Separator.separate of audio holding NaN",
    lambda c: _separator().separate(np.r_[np.zeros(100), np.nan].astype(np.float32), 8000), match="NaN")
add("inputs", "Separator.separate of empty audio", lambda c: _separator().separate(np.zeros(0, np.float32), 8000),
    match="empty")
add("inputs", "Separator.separate of (channels, samples) audio",
    lambda c: _separator().separate(np.zeros((2, 4000), np.float32), 8000), match="transpose")
add("inputs", "Separator.separate at 0 Hz", lambda c: _separator().separate(np.zeros(4000, np.float32), 0),
    match="sample rate")
add("inputs", "Separator.separate at 44100.5 Hz", lambda c: _separator().separate(np.zeros(4000, np.float32),
                                                                                  44100.5), match="sample rate")
add("inputs", "Separator.separate of complex audio",
    lambda c: _separator().separate(np.zeros(4000, complex), 8000), match="dtype")
add("inputs", "Separator.separate of uint16 audio",
    lambda c: _separator().separate(np.zeros(4000, np.uint16), 8000), match="unsigned")


@case("inputs", "Separator.separate of one sample", "ok")
def _(ctx):
    out = _separator().separate(np.array([0.5], np.float32), 8000)
    assert out.shape == (2, 1)


# --- data folders ---------------------------------------------------------------------------
def _mnist_load(data_dir=None, env=None):
    from npvae.data.mnist import load_images
    old = os.environ.get("NPVAE_DATA")
    if env is not None:
        os.environ["NPVAE_DATA"] = str(env)
    try:
        return load_images("mnist", "test", data_dir=data_dir, download=False)
    finally:
        if env is not None:
            if old is None:
                os.environ.pop("NPVAE_DATA", None)
            else:
                os.environ["NPVAE_DATA"] = old


add("data", "load_images with a --data-dir typo", lambda c: _mnist_load(c.root / "dta"), match="does not exist")
add("data", "load_images with NPVAE_DATA pointing nowhere", lambda c: _mnist_load(env=c.root / "nowhere"),
    match="NPVAE_DATA=.*not a folder")
add("data", "load_images with a --data-dir that lacks mnist/ (no fallback)", lambda c: _mnist_load(c.tmp()),
    match="not found")
add("data", "load_images with --data-dir being a file",
    lambda c: _mnist_load(Path(c.song())), match="is a file")


@case("data", "load_tracks mir1k with a --data-dir typo", match="does not exist")
def _(ctx):
    from npvae.audio.datasets import load_tracks
    load_tracks("mir1k", "train", ctx.root / "typo")


@case("data", "a stems folder without vocals/", match="vocals")
def _(ctx):
    from npvae.audio.datasets import load_tracks
    d = ctx.tmp()
    (d / "accompaniment").mkdir()
    load_tracks("stems", "all", d)


@case("data", "load_tracks of an unknown dataset", match="unknown dataset")
def _(ctx):
    from npvae.audio.datasets import load_tracks
    load_tracks("musdb", "train")


# --- train_mnist.py -------------------------------------------------------------------------
def mn_err(ctx, *args):
    expect_cli_error("train_mnist.py", *ctx.mnist_args(ctx.tmp() / "run"), *args)


for _bad, _m in ((["--epochs", "0"], "--epochs must be >= 1"), (["--epochs", "-3"], "--epochs must be >= 1"),
                 (["--epochs", "1.5"], "invalid int"), (["--batch-size", "0"], "--batch-size must be >= 1"),
                 (["--lr", "0"], "--lr must be > 0"), (["--lr=-1e-3"], "--lr must be > 0"),
                 (["--lr", "nan"], "--lr must be a finite number"), (["--lr", "inf"], "--lr must be a finite number"),
                 (["--beta", "-1"], "--beta must be >= 0"), (["--warmup", "-2"], "--warmup must be >= 0"),
                 (["--mix-weight", "-1"], "--mix-weight must be >= 0"),
                 (["--latent-dim", "0"], "--latent-dim must be >= 1"), (["--hidden", "0"], "--hidden must be >= 1"),
                 (["--hidden", "abc"], "invalid ints"), (["--channels", "0,4"], "--channels must be >= 1"),
                 (["--model", "resnet"], "invalid choice"), (["--rule", "max"], "invalid choice"),
                 (["--loss", "hinge"], "invalid choice"), (["--display-every", "0"], "--display-every must be >= 1"),
                 (["--train-limit", "0"], "--train-limit must be >= 1"),
                 (["--eval-limit", "0"], "--eval-limit must be >= 1"), (["--seed", "-1"], "--seed must be >= 0")):
    add("train_mnist", " ".join(_bad), lambda c, b=_bad: mn_err(c, *b), match=re.escape(_m), cli=True)

add("train_mnist", "--data-dir typo", lambda c: mn_err(c, "--data-dir", c.root / "dta"), match="does not exist",
    cli=True)


@case("train_mnist", "--out is a file", match="is a file", cli=True)
def _(ctx):
    f = ctx.tmp() / "f"
    f.write_text("x")
    expect_cli_error("train_mnist.py", *ctx.mnist_args(f))


@case("train_mnist", "--out holds another run (no --resume / --overwrite)", match="not empty.*--resume.*--overwrite",
      cli=True)
def _(ctx):
    d = ctx.tmp()
    (d / "config.json").write_text("{}")
    (d / "model.h5").write_bytes(b"precious")
    try:
        expect_cli_error("train_mnist.py", *ctx.mnist_args(d))
    finally:
        must_survive(d / "model.h5", b"precious")


@case("train_mnist", "--resume with --overwrite", match="one of them", cli=True)
def _(ctx):
    expect_cli_error("train_mnist.py", *ctx.mnist_args(ctx.tmp()), "--resume", "--overwrite")


@case("train_mnist", "--resume without --out", match="--resume needs --out", cli=True)
def _(ctx):
    expect_cli_error("train_mnist.py", "--epochs", "1", "--resume")


def _resume_changed(ctx, *change, task="mnist"):
    """Resume a copy of ``task``'s tiny run with ``change`` (flag, value, ...) applied to its
    arguments: the script must refuse, and the checkpoint must survive untouched."""
    d = ctx.tmp() / "run"
    shutil.copytree(getattr(ctx, f"{task}_run"), d)
    before = digest(d / "checkpoint.npz")
    args = getattr(ctx, f"{task}_args")(d, 2)
    for i in range(0, len(change), 2):
        if change[i] in args:
            args[args.index(change[i]) + 1] = change[i + 1]
        else:
            args += [change[i], change[i + 1]]
    try:
        expect_cli_error(f"train_{task}.py", *args, "--resume")
    finally:
        must_survive(d / "checkpoint.npz", before)


add("train_mnist", "--resume with a new --lr", lambda c: _resume_changed(c, "--lr", "0.01"),
    match="cannot resume.*lr: 0.001 -> 0.01", cli=True)
add("train_mnist", "--resume with a new --loss", lambda c: _resume_changed(c, "--loss", "mse"),
    match="cannot resume.*loss", cli=True)
add("train_mnist", "--resume with another architecture (--hidden)", lambda c: _resume_changed(c, "--hidden", "32"),
    match="cannot resume.*hidden", cli=True)
add("train_mnist", "--resume with a new --batch-size", lambda c: _resume_changed(c, "--batch-size", "32"),
    match="cannot resume.*batch_size", cli=True)


@case("train_mnist", "--resume with more --epochs continues the run", "ok", cli=True)
def _(ctx):
    d = ctx.tmp() / "run"
    shutil.copytree(ctx.mnist_run, d)
    r = cli("train_mnist.py", *ctx.mnist_args(d, 2), "--resume")
    assert r.code == 0, r.err
    assert json.loads((d / "history.json").read_text())["epoch"] == [1, 2]


@case("train_mnist", "--overwrite replaces the old run's files", "ok", cli=True)
def _(ctx):
    d = ctx.tmp() / "run"
    shutil.copytree(ctx.mnist_run, d)
    (d / "figures" / "epoch_099.png").write_bytes(b"stale")
    (d / "notes.txt").write_text("mine")
    r = cli("train_mnist.py", *ctx.mnist_args(d, 1), "--overwrite")
    assert r.code == 0, r.err
    assert not (d / "figures" / "epoch_099.png").exists(), "a stale figure of the old run survived"
    must_survive(d / "notes.txt", b"mine")


@case("train_mnist", "two runs with the default --out get different folders", "ok", cli=True)
def _(ctx):
    d = ctx.tmp()
    cwd = os.getcwd()
    os.chdir(d)
    try:
        args = [a for a in ctx.mnist_args("x") if a not in ("--out", "x")]
        for _ in range(2):
            r = cli("train_mnist.py", *args)
            assert r.code == 0, r.err
    finally:
        os.chdir(cwd)
    runs = sorted(p.name for p in (d / "runs").iterdir())
    assert len(runs) == 2, runs
    return ", ".join(runs)


@case("train_mnist", "the data folder used is printed and recorded", "ok", cli=True)
def _(ctx):
    cfg = json.loads((ctx.mnist_run / "config.json").read_text())
    folders = cfg.get("data_folder") or {}
    assert folders.get("mnist") and Path(folders["mnist"]).is_dir(), cfg.get("data_folder")
    return folders["mnist"]


# --- train_music.py -------------------------------------------------------------------------
def mu_err(ctx, *args):
    expect_cli_error("train_music.py", *ctx.music_args(ctx.tmp() / "run"), *args)


for _bad, _m in ((["--epochs", "0"], "--epochs must be >= 1"), (["--batch-size", "0"], "--batch-size must be >= 1"),
                 (["--frames", "0"], "--frames must be >= 1"), (["--frames", "7"], "multiple of 8"),
                 (["--frames", "-8"], "--frames must be >= 1"), (["--lr", "0"], "--lr must be > 0"),
                 (["--lr", "nan"], "--lr must be a finite number"), (["--channels", "0", "4", "8"], "--channels must be >= 1"),
                 (["--latent-channels", "0"], "--latent-channels must be >= 1"),
                 (["--beta", "-0.1"], "--beta must be >= 0"), (["--mix-weight", "-1"], "--mix-weight must be >= 0"),
                 (["--display-every", "0"], "--display-every must be >= 1"), (["--seed", "-5"], "--seed must be >= 0"),
                 (["--loss", "hinge"], "invalid choice"), (["--dataset", "musdb"], "invalid choice")):
    add("train_music", " ".join(_bad), lambda c, b=_bad: mu_err(c, *b), match=re.escape(_m), cli=True)
add("train_music", "--data-dir typo", lambda c: mu_err(c, "--data-dir", c.root / "typo"), match="does not exist",
    cli=True)


@case("train_music", "--dataset stems without --data-dir", match="stems need", cli=True)
def _(ctx):
    expect_cli_error("train_music.py", "--dataset", "stems", "--out", ctx.tmp() / "r", "--epochs", "1",
                     "--no-progress")


@case("train_music", "--out holds another run", match="not empty", cli=True)
def _(ctx):
    d = ctx.tmp()
    (d / "model.h5").write_bytes(b"precious")
    try:
        expect_cli_error("train_music.py", *ctx.music_args(d))
    finally:
        must_survive(d / "model.h5", b"precious")


@case("train_music", "--out is a file", match="is a file", cli=True)
def _(ctx):
    f = ctx.tmp() / "f"
    f.write_text("x")
    expect_cli_error("train_music.py", *ctx.music_args(f))


@case("train_music", "--resume without --out", match="--resume needs --out", cli=True)
def _(ctx):
    args = ctx.music_args("x")
    i = args.index("--out")
    expect_cli_error("train_music.py", *(args[:i] + args[i + 2:]), "--resume")


add("train_music", "--resume with a new --lr", lambda c: _resume_changed(c, "--lr", "0.01", task="music"),
    match="cannot resume.*lr", cli=True)
add("train_music", "--resume with a new --loss", lambda c: _resume_changed(c, "--loss", "mse", task="music"),
    match="cannot resume.*loss", cli=True)


@case("train_music", "a tiny run records its data folder and resumes", "ok", cli=True)
def _(ctx):
    d = ctx.tmp() / "run"
    shutil.copytree(ctx.music_run, d)
    r = cli("train_music.py", *ctx.music_args(d, 2), "--resume")
    assert r.code == 0, r.err
    tree = h5mat.read_tree(d / "results.h5", expected_kind="music_results")
    assert list(tree["history"]["epoch"]) == [1, 2]
    assert Path(tree["config"]["data_folder"]).is_dir()
    assert "data:" in r.out


# --- evaluate_music.py ----------------------------------------------------------------------
def ev(ctx, *args):
    return cli("evaluate_music.py", "--model", ctx.music_run, "--dataset", "irmas", "--data-dir", ctx.irmas,
               "--no-baselines", *args)


@case("evaluate", "--wiener does not overwrite the plain evaluation", "ok", cli=True)
def _(ctx):
    d = ctx.tmp() / "run"
    shutil.copytree(ctx.music_run, d)
    for extra in ((), ("--wiener",)):
        r = cli("evaluate_music.py", "--model", d, "--dataset", "irmas", "--data-dir", ctx.irmas, "--no-baselines",
                *extra)
        assert r.code == 0, r.err
    names = sorted(p.name for p in d.glob("eval_*.h5"))
    assert names == ["eval_irmas_validation.h5", "eval_irmas_validation_wiener.h5"], names


@case("evaluate", "an existing results file without --overwrite", match="exists; pass --overwrite", cli=True)
def _(ctx):
    p = ctx.tmp() / "e.h5"
    p.write_bytes(b"precious")
    try:
        expect_cli_error("evaluate_music.py", "--model", ctx.music_run, "--dataset", "irmas", "--data-dir",
                         ctx.irmas, "--results", p)
    finally:
        must_survive(p, b"precious")


@case("evaluate", "--results is a folder", match="is a folder|must end in .h5", cli=True)
def _(ctx):
    d = ctx.tmp() / "x.h5"
    d.mkdir()
    expect_cli_error("evaluate_music.py", "--model", ctx.music_run, "--dataset", "irmas", "--results", d)


@case("evaluate", "--results that is not .h5", match="must end in .h5", cli=True)
def _(ctx):
    expect_cli_error("evaluate_music.py", "--model", ctx.music_run, "--dataset", "irmas", "--results",
                     ctx.tmp() / "scores.txt")


@case("evaluate", "--model that does not exist", match="does not exist", cli=True)
def _(ctx):
    expect_cli_error("evaluate_music.py", "--model", ctx.root / "none", "--dataset", "irmas", "--results",
                     ctx.tmp() / "e.h5")


@case("evaluate", "--data-dir typo", match="does not exist", cli=True)
def _(ctx):
    expect_cli_error("evaluate_music.py", "--model", ctx.music_run, "--dataset", "irmas", "--data-dir",
                     ctx.root / "typo", "--results", ctx.tmp() / "e.h5")


def _stems(ctx, silent_voice: list[bool]):
    d = ctx.tmp() / "stems"
    for i, silent in enumerate(silent_voice):
        for k in ("vocals", "accompaniment"):
            (d / k).mkdir(parents=True, exist_ok=True)
            t = np.arange(16000) / 16000
            x = np.zeros(16000) if (k == "vocals" and silent) else 0.2 * np.sin(2 * np.pi * (200 + 50 * i) * t)
            if k == "accompaniment":
                x = 0.2 * np.sign(np.sin(2 * np.pi * (80 + 10 * i) * t))
            sf.write(str(d / k / f"clip{i}.wav"), x.astype(np.float32), 16000)
    return d


@case("evaluate", "a clip with a silent vocal stem is left out by name", "ok", cli=True)
def _(ctx):
    d = _stems(ctx, [False, True, False])
    r = cli("evaluate_music.py", "--model", ctx.music_run, "--dataset", "stems", "--data-dir", d, "--split", "all",
            "--results", d.parent / "e.h5", "--no-baselines")
    assert r.code == 0, r.err
    assert "clip1 (silent vocals)" in r.out, r.out[-400:]


@case("evaluate", "every clip has a silent vocal stem", match="no clip can be scored", cli=True)
def _(ctx):
    d = _stems(ctx, [True, True])
    expect_cli_error("evaluate_music.py", "--model", ctx.music_run, "--dataset", "stems", "--data-dir", d,
                     "--split", "all", "--results", d.parent / "e.h5", "--no-baselines")


# ============================================================================= main

def write_table(results, path: Path, seconds: float) -> str:
    counts = {}
    for _, outcome, _ in results:
        counts[outcome] = counts.get(outcome, 0) + 1
    bad = sum(v for k, v in counts.items() if k not in OUTCOMES_OK)
    lines = ["# Fault cases", "",
             "Produced by `python scripts/fault_cases.py --out docs/fault_cases.md` "
             f"({len(results)} cases, {seconds:.0f} s). Each case is a careless-user input or a fault; "
             "*clear error* and *correct result* are what should happen, anything else is a failure.", "",
             "| outcome | cases |", "|---|---|"]
    for k in ("clear error", "correct result", "silent wrong result", "data lost", "traceback", "unclear error",
              "hang"):
        lines.append(f"| {k} | {counts.get(k, 0)} |")
    lines += [f"| **failures** | **{bad}** |", "", "| # | group | case | expected | outcome | message or check |",
              "|---|---|---|---|---|---|"]
    for i, (c, outcome, detail) in enumerate(results, 1):
        cell = detail.replace("|", "\\|").replace("\n", " ")
        cell = cell.replace(str(Path(tempfile.gettempdir())), "$TMP")
        mark = outcome if outcome in OUTCOMES_OK else f"**{outcome}**"
        lines.append(f"| {i} | {c.group} | {c.name.replace('|', '/')} | {c.expect} | {mark} | {cell[:160]} |")
    text = "\n".join(lines) + "\n"
    if path:
        from npvae.checkpoint import atomic_write_text
        atomic_write_text(path, text)
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="Markdown file for the table (e.g. docs/fault_cases.md)")
    p.add_argument("--group", action="append", help="run only these groups")
    p.add_argument("--match", help="run only cases whose name contains this text")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument("--timeout", type=int, default=600, help="seconds per case before it counts as a hang")
    a = p.parse_args(argv)
    cases = [c for c in CASES if (not a.group or c.group in a.group) and (not a.match or a.match in c.name)]
    if a.list:
        for c in cases:
            print(f"{c.group:12s} {c.expect:5s} {c.name}")
        print(f"{len(cases)} cases")
        return 0
    t0 = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="npvae-faults-") as tmp:
        ctx = Ctx(Path(tmp))
        (ctx.root / "fixtures").mkdir()
        for i, c in enumerate(cases, 1):
            outcome, detail = run_case(c, ctx, a.timeout)
            results.append((c, outcome, detail))
            flag = "  " if outcome in OUTCOMES_OK else "!!"
            print(f"{flag} {i:3d}/{len(cases)} [{c.group}] {c.name}: {outcome}", flush=True)
            if outcome not in OUTCOMES_OK:
                print(f"       {detail}", flush=True)
    text = write_table(results, Path(a.out) if a.out else None, time.perf_counter() - t0)
    summary = text.split("| # |")[0]
    print(summary)
    return 1 if any(o not in OUTCOMES_OK for _, o, _ in results) else 0


if __name__ == "__main__":
    sys.exit(main())

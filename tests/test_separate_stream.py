"""Separation of long files in blocks (equal to one pass at every join), `npvae separate`'s
safety rules (no overwrite, no collisions, inputs never touched, checks before work),
its options (folders, stems, format, bit depth, channels, rates), and inputs checked
at the edge (integer audio and images scaled, nonsense refused)."""
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from npvae.audio.stft import STFTConfig
from npvae.audio.stream import block_layout, block_quantum, separate_blocks
from npvae.cli.common import UsageError
from npvae.models.music import SpectrogramUNetVAE
from npvae.files.model_file import save_separator
from npvae.separation.separator import Normalizer, Separator
from npvae.inputs import as_float_audio, as_unit_images

REPO = Path(__file__).resolve().parents[1]
CFG = STFTConfig(sample_rate=8000, n_fft=256, hop=64)


def tiny_separator(seed=0):
    rng = np.random.default_rng(seed)
    model = SpectrogramUNetVAE(channels=(4, 4, 8), latent_channels=4, rng=rng)
    norm = Normalizer(mean=np.zeros(128), std=np.ones(128))
    return Separator(model, CFG, norm)


@pytest.mark.parametrize("sr,channels,wiener", [(8000, 1, False), (22050, 2, True), (44100, 2, False),
                                                (11025, 3, False), (6000, 1, True)])
def test_blocks_equal_one_pass_at_every_join(sr, channels, wiener):
    sep = tiny_separator()
    rng = np.random.default_rng(sr)
    n = int(6.3 * sr) + 17
    x = (0.3 * rng.standard_normal((n, channels))).astype(np.float32)
    whole = sep.separate(x, sr, wiener=wiener)
    block, context = block_layout(sr, CFG.sample_rate, CFG.hop, sep.model.DOWNSAMPLE, CFG.n_fft, 1.0)
    assert block % block_quantum(sr, CFG.sample_rate, CFG.hop, 8) == 0
    out = np.full_like(whole, np.nan)
    starts = []
    for start, est in separate_blocks(lambda b: sep.separate(b, sr, wiener=wiener),
                                      lambda a, b: x[a:b], n, block, context):
        out[:, start:start + est.shape[1]] = est
        starts.append(start)
    assert len(starts) >= 5 and not np.isnan(out).any()
    scale = np.abs(whole).max()
    for s in starts:                                   # 200 samples either side of each join
        seg = slice(max(0, s - 200), s + 200)
        np.testing.assert_allclose(out[:, seg], whole[:, seg], atol=1e-5 * scale)
    np.testing.assert_allclose(out, whole, atol=1e-5 * scale)


def test_block_layout_quanta():
    # 44.1 kHz -> 16 kHz is up 160 / down 441; hop 256 x stride 8 = 2048 model samples.
    assert block_quantum(44100, 16000, 256, 8) == 441 * 64
    assert block_quantum(16000, 16000, 256, 8) == 2048
    block, context = block_layout(44100, 16000, 256, 8, 1024, 10.0)
    assert block % (441 * 64) == 0 and context % (441 * 64) == 0 and abs(block / 44100 - 10) < 0.7


# ----------------------------------------------------------------------------- inputs at the edge

def test_integer_audio_is_scaled_and_nonsense_refused():
    x = np.array([[-32768, 16384], [0, 32767]], np.int16)
    np.testing.assert_allclose(as_float_audio(x), [[-1, 0.5], [0, 32767 / 32768]])
    np.testing.assert_allclose(as_float_audio(np.array([0, 128, 255], np.uint8)), [-1, 0, 127 / 128])
    for bad, match in [(np.zeros((2, 1000)), "transpose"), (np.zeros(0), "empty"),
                       (np.array([0.0, np.nan]), "NaN"), (np.zeros(3, complex), "dtype"),
                       (np.zeros((2, 2, 2)), "shape"), (np.zeros(4, np.uint16), "unsigned")]:
        with pytest.raises(ValueError, match=match):
            as_float_audio(bad)
    sep = tiny_separator()
    pcm = (np.random.default_rng(0).standard_normal(4000) * 3000).astype(np.int16)
    np.testing.assert_array_equal(sep.separate(pcm, 8000), sep.separate(pcm / np.float32(32768), 8000))
    with pytest.raises(ValueError, match="sample rate"):
        sep.separate(pcm, 0)


def test_images_uint8_scaled_and_nonsense_refused():
    u8 = np.random.default_rng(0).integers(0, 256, (3, 28, 28)).astype(np.uint8)
    np.testing.assert_allclose(as_unit_images(u8, 28), u8 / 255.0, rtol=1e-6)
    for bad, match in [(u8.astype(np.float32), "divide by 255"), (np.zeros((0, 28, 28)), "empty"),
                       (np.zeros((28, 28)), r"x\[None\]"), (np.zeros((2, 784)), "reshape"),
                       (np.full((1, 28, 28), np.nan), "NaN"), (u8.astype(np.int64), "ambiguous"),
                       (np.zeros((1, 32, 32)), r"\(N, 28, 28\)")]:
        with pytest.raises(ValueError, match=match):
            as_unit_images(bad, 28)


def test_mnist_separate_scales_uint8():
    from npvae.models.mnist import build_model
    model = build_model("unet", rng=np.random.default_rng(0), channels=(4, 8, 8), latent_dim=4)
    u8 = np.random.default_rng(1).integers(0, 128, (2, 28, 28)).astype(np.uint8)
    a = model.separate(u8)
    b = model.separate(u8.astype(np.float32) / 255)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, atol=1e-6)
    assert max(float(np.max(x)) for x in a) <= 1.0
    with pytest.raises(ValueError, match="divide by 255"):
        model.separate(u8.astype(np.float32))


# ----------------------------------------------------------------------------- npvae separate

class Command:
    """``npvae separate`` run in this process: ``main(argv)`` and ``parse_args(argv)``
    (SystemExit 2 for argparse's usage mistakes, UsageError for those it does not see)."""

    @staticmethod
    def main(argv):
        from npvae.cli import main
        return main(["separate", *argv])

    @staticmethod
    def parse_args(argv):
        from npvae.cli import parser
        from npvae.cli.separate import check_args
        a = parser().parse_args(["separate", *argv])
        return check_args(a)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("sep")
    model = save_separator(root / "model.h5", tiny_separator())
    rng = np.random.default_rng(2)
    songs = {"a/song.wav": (44100, 2), "b/song.wav": (16000, 1), "c/deep/x.flac": (22050, 4)}
    for rel, (sr, ch) in songs.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / rel, (0.2 * rng.standard_normal((int(1.3 * sr), ch))).astype(np.float32), sr)
    return root, model, Command


def run(mod, *args):
    """``npvae separate ARGS``: None when it succeeded, else what it printed on stderr."""
    import contextlib
    import io
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            status = mod.main([str(a) for a in args] + ["--no-progress"])
        except SystemExit as e:
            status = e.code
    return None if status == 0 else err.getvalue() or f"exit {status}"


def test_duplicate_names_keep_their_folders(setup, tmp_path):
    root, model, mod = setup
    out = tmp_path / "out"
    assert run(mod, root / "a/song.wav", root / "b/song.wav", "--model", model, "--out", out) is None
    for d, (sr, ch) in (("a", (44100, 2)), ("b", (16000, 1))):
        for s in ("vocals", "accompaniment"):
            info = sf.info(str(out / d / f"song_{s}.wav"))
            assert (info.samplerate, info.channels, info.frames) == (sr, ch, int(1.3 * sr))
            assert info.subtype == "FLOAT"
    before = (out / "a/song_vocals.wav").read_bytes()
    msg = run(mod, root / "a/song.wav", root / "b/song.wav", "--model", model, "--out", out)
    assert "exists; pass --overwrite" in msg and (out / "a/song_vocals.wav").read_bytes() == before
    assert run(mod, root / "a/song.wav", root / "b/song.wav", "--model", model, "--out", out,
               "--overwrite") is None


def test_same_stem_in_one_folder_is_refused_before_work(setup, tmp_path):
    root, model, mod = setup
    d = tmp_path / "in"
    d.mkdir()
    sf.write(d / "song.wav", np.zeros((800, 1), np.float32) + 0.1, 8000)
    sf.write(d / "song.flac", np.zeros((800, 1), np.float32) + 0.1, 8000)
    msg = run(mod, d, "--model", model, "--out", tmp_path / "out")
    assert "would both write" in msg and not (tmp_path / "out").exists()


def test_inputs_inside_out_are_never_touched(setup, tmp_path):
    root, model, mod = setup
    out = tmp_path / "out"
    out.mkdir()
    victim = out / "song_vocals.wav"                      # an input that an output would replace
    sf.write(victim, np.full((900, 1), 0.1, np.float32), 8000)
    other = tmp_path / "song.wav"
    sf.write(other, np.full((900, 1), 0.1, np.float32), 8000)
    before = victim.read_bytes()
    msg = run(mod, victim, other, "--model", model, "--out", out, "--overwrite")
    assert victim.read_bytes() == before
    assert msg is not None and "would replace the input" in msg
    # a folder scan leaves out what lies inside --out (it is not separated again), and
    # an output that exists is still refused without --overwrite
    msg = run(mod, tmp_path, "--model", model, "--out", out)
    assert "song_vocals.wav exists; pass --overwrite" in msg and "would replace the input" not in msg
    assert victim.read_bytes() == before and not (out / "out").exists()


def test_folder_stems_format_and_bits(setup, tmp_path):
    root, model, mod = setup
    out = tmp_path / "out"
    assert run(mod, root / "c", "--model", model, "--out", out, "--stems", "vocals", "--format", "flac",
               "--bits", "24") is None
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == ["x_vocals.flac"]                      # relative to the inputs' common folder
    info = sf.info(str(out / "x_vocals.flac"))
    assert (info.samplerate, info.channels, info.subtype) == (22050, 4, "PCM_24")
    with pytest.raises(UsageError, match="float"):
        mod.parse_args([str(root / "c"), "--model", str(model), "--out", str(out), "--format", "flac",
                        "--bits", "float"])
    assert mod.main([str(root / "c"), "--model", str(model), "--out", str(out), "--format", "flac", "--bits",
                     "float"]) == 2                        # a usage error, as every subcommand reports one
    for bad in (["--chunk-frames", "7"], ["--chunk-frames", "0"], ["--block-seconds", "0"],
                ["--block-seconds", "nan"], ["--stems", "drums"]):
        with pytest.raises(SystemExit):
            mod.parse_args([str(root / "c"), "--model", str(model), "--out", str(out), *bad])


def test_checks_happen_before_any_work(setup, tmp_path):
    root, model, mod = setup
    f = tmp_path / "file"
    f.write_text("x")
    msg = run(mod, root / "a/song.wav", "--model", model, "--out", f)
    assert "is a file" in msg
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    out = tmp_path / "out"
    msg = run(mod, root / "a/song.wav", bad, "--model", model, "--out", out)
    assert "bad.wav: not readable audio" in msg and not out.exists()
    msg = run(mod, root / "a/song.wav", tmp_path / "missing.wav", "--model", model, "--out", out)
    assert "missing.wav: no such file" in msg and not out.exists()
    msg = run(mod, root / "a/song.wav", "--model", tmp_path / "nope.h5", "--out", out)
    assert "does not exist" in msg and not out.exists()


def test_no_temporaries_left_when_writing_fails(setup, tmp_path, monkeypatch):
    root, model, mod = setup
    out = tmp_path / "out"

    def disk_full(*a, **k):
        yield 0, np.zeros((2, 10, 2), np.float32)
        raise OSError(28, "No space left on device")
    import npvae.separation.audio_files
    monkeypatch.setattr(npvae.separation.audio_files, "separate_blocks", disk_full)
    msg = run(mod, root / "a/song.wav", "--model", model, "--out", out)
    assert "No space left on device" in msg and "not written" in msg
    assert [p for p in out.rglob("*") if p.is_file()] == []

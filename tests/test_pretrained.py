"""The models that ship with npvae (npvae/pretrained/*.h5).

* each one loads by name and records how it was made; ``docs/models.md`` holds the
  table ``npvae.pretrained.models_table()`` makes from those records;
* re-scored here on a small slice of its test set, it is no worse than the slice score
  ``npvae ship`` measured when it was shipped (minus ``TOLERANCE_DB``:
  float rounding differs between BLAS builds and kernel backends);
* ``npvae separate`` with no ``--model`` uses the shipped music model;
* the MATLAB scripts load the shipped files, and ``npvae_forward`` runs the Part I ones.
"""
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import soundfile

import npvae
from _octave import needs_octave, octave_ok
from npvae.pretrained.scoring import HEADLINE, score

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ("mnist-dense", "mnist-dense-best", "mnist-unet", "mnist-vae", "music-mir1k")     # the names the docs list
PART_ONE = tuple(name for name in SHIPPED if name.startswith("mnist-"))
TOLERANCE_DB = 0.05


def test_the_documented_models_ship():
    assert set(SHIPPED) <= set(npvae.list_models())
    assert npvae.list_models() == sorted(npvae.list_models())


def test_docs_table_is_the_files_own_records():
    table = npvae.pretrained.models_table()
    for name in npvae.list_models():
        assert f"| `{name}` |" in table
    assert table in (REPO / "docs" / "models.md").read_text(), (
        "docs/models.md must hold the table the shipped files' records give; paste this:\n" + table)


def test_unknown_name_lists_the_shipped_ones():
    with pytest.raises(FileNotFoundError, match="mnist-unet"):
        npvae.pretrained.path("mnist-nope")
    with pytest.raises(FileNotFoundError, match="shipped model"):
        npvae.load_model("mnist-nope")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_loads_and_records_its_making(name):
    model = npvae.load_model(name)
    info = npvae.pretrained.info(name)
    assert info["name"] == name
    assert re.fullmatch(r"[0-9a-f]{7,40}", info["commit"]), info["commit"]
    assert info["command"].startswith(("npvae train ", "python scripts/train_"))
    assert isinstance(info["seed"], int)
    assert info["task"] == ("music" if name.startswith("music") else "mnist")
    assert hasattr(model, "stft_cfg") == (info["task"] == "music")
    headline = info["headline"]
    assert headline == HEADLINE[info["task"]]
    assert np.isfinite(info["scores"][headline]) and np.isfinite(info["slice_scores"][headline])
    assert (REPO / "npvae" / "pretrained" / f"{name}.h5").stat().st_size < 8e6


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_rescored_on_a_slice(name, shared_data):
    info = npvae.pretrained.info(name)
    model = npvae.load_model(name)
    config = npvae.files.h5mat.read_tree(npvae.pretrained.path(name), subtree="config")
    got = score(model, config, shared_data, slice=True)
    want = info["slice_scores"]
    for key in ((HEADLINE[info["task"]], "accompaniment_gnsdr") if info["task"] == "music" else ("mean_psnr",)):
        assert got[key] >= want[key] - TOLERANCE_DB, (name, key, got[key], want[key])
        assert got[key] <= want[key] + TOLERANCE_DB, (name, key, got[key], want[key])  # same model, same data


def test_separate_script_uses_the_shipped_music_model(tmp_path, shared_data):
    from npvae.cli import main
    from npvae.files.model_file import load_separator
    rng = np.random.default_rng(0)
    song = (0.1 * rng.standard_normal((8000, 2))).astype(np.float32)
    soundfile.write(tmp_path / "song.wav", song, 16000, subtype="FLOAT")
    assert main(["separate", str(tmp_path / "song.wav"), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    want = load_separator(npvae.pretrained.path("music-mir1k")).separate(song, 16000)
    for k, src in enumerate(("vocals", "accompaniment")):
        got, sr = soundfile.read(tmp_path / "out" / f"song_{src}.wav", dtype="float32")
        assert sr == 16000 and got.shape == song.shape
        np.testing.assert_allclose(got, want[k], atol=1e-6)
        assert np.abs(got).max() > 1e-4


@needs_octave
def test_matlab_loads_the_shipped_models(tmp_path, rng):
    mixtures = rng.random((4, 28, 28), dtype=np.float32) / 2
    scipy.io.savemat(tmp_path / "mix.mat", {"mix": mixtures})
    code = "load('mix.mat');"
    for name in PART_ONE:
        code += (f"[d, f, m] = npvae_forward('{npvae.pretrained.path(name)}', mix);"
                 f"save('-v7', '{name}.mat', 'd', 'f', 'm');")
    music = npvae.pretrained.path("music-mir1k")
    params = npvae.files.h5mat.read_tree(music, subtree="model/params")
    first = min(k for k in params if k.endswith("enc1.W"))    # enc1.W, or stack1.enc1.W of stacked U-Nets
    code += (f"S = npvae_load('{music}', 'model'); p = S.provenance.scores.vocals_gnsdr;"
             f"w = S.model.params.{first.replace('.', '_')}; save('-v7', 'music.mat', 'p', 'w');")
    octave_ok(code, tmp_path, timeout=300)
    for name in PART_ONE:
        want = npvae.load_model(name).separate(mixtures)
        got = scipy.io.loadmat(tmp_path / f"{name}.mat")
        for key, w in zip("dfm", want):
            np.testing.assert_allclose(got[key], w, atol=1e-5, rtol=0, err_msg=f"{name} {key}")
    got = scipy.io.loadmat(tmp_path / "music.mat")
    assert got["p"].item() == pytest.approx(npvae.pretrained.info("music-mir1k")["scores"]["vocals_gnsdr"])
    np.testing.assert_array_equal(got["w"], params[first])

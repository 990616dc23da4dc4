"""`npvae ship` and the registry of shipped models (npvae.pretrained), on a tiny real
Part I run shipped into a temporary folder."""
import json
from pathlib import Path

import numpy as np
import pytest

import npvae
from npvae import pretrained
from npvae.cli import main
from npvae.pretrained.shipping import source_commit


def ship(*argv):
    return main(["ship", *map(str, argv)])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, shared_data):
    run = tmp_path_factory.mktemp("run")
    assert main(["train", "mnist", "--model", "unet", "--channels", "4", "4", "8", "--latent-dim", "4",
                 "--epochs", "1", "--batch-size", "64", "--train-limit", "256", "--n-examples", "4",
                 "--data-dir", str(shared_data), "--out", str(run), "--overwrite", "--no-progress",
                 "--seed", "3"]) == 0
    return run


def test_a_training_run_records_the_command_that_trained_it(tiny_run):
    """npvae train writes provenance.json, so that npvae ship needs no --command/--commit."""
    record = json.loads((tiny_run / "provenance.json").read_text())
    assert record["command"].startswith("npvae train mnist --model unet --channels 4 4 8 --latent-dim 4 ")
    assert record["command"].endswith(" --seed 3")
    assert record["commit"] == source_commit() and record["commit"]


def test_a_resumed_run_keeps_the_command_that_started_it(tiny_run):
    before = (tiny_run / "provenance.json").read_text()
    assert main(["train", "mnist", "--out", str(tiny_run), "--resume", "--no-progress"]) == 0   # finished: says so
    assert (tiny_run / "provenance.json").read_text() == before


def test_ship_model_records_provenance_and_scores(tiny_run, tmp_path, shared_data, monkeypatch):
    (tiny_run / "provenance.json").write_text(json.dumps({"command": "python scripts/train_mnist.py --tiny",
                                                          "commit": "abc1234"}))
    # no --dest: the user's models folder (made), which list_models and load_model search;
    # npvae's own shipped files are not touched
    own = {p.name: p.stat().st_mtime_ns for p in pretrained.DIR.glob("*.h5")}
    monkeypatch.setenv("NPVAE_MODELS", str(tmp_path / "my-models"))
    assert ship(tiny_run, "tiny-unet", "--data-dir", shared_data) == 0
    assert (tmp_path / "my-models" / "tiny-unet.h5").is_file()
    assert {p.name: p.stat().st_mtime_ns for p in pretrained.DIR.glob("*.h5")} == own
    assert set(npvae.list_models()) == set(p[:-3] for p in own) | {"tiny-unet"}
    monkeypatch.setattr(pretrained, "DIR", tmp_path / "empty")
    assert npvae.list_models() == ["tiny-unet"]
    info = pretrained.info("tiny-unet")
    assert (info["name"], info["commit"], info["seed"], info["task"]) == ("tiny-unet", "abc1234", 3, "mnist")
    assert info["command"] == "python scripts/train_mnist.py --tiny"
    # scored on the same 10,000 fixed pairs the training run scored itself on
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert metrics["n_eval_pairs"] == info["scores"]["n_pairs"] == 10000
    assert info["scores"]["mean_psnr"] == pytest.approx(metrics["mean_psnr"], abs=1e-9)
    assert info["slice_scores"]["n_pairs"] == 500
    assert info["scores_latent_at_prior_mean"]["n_pairs"] == 10000
    assert info["scores_latent_at_prior_mean"]["mean_psnr"] != info["scores"]["mean_psnr"]
    assert info["scores"]["psnr_of_mean_mse"] == pytest.approx(10 * np.log10(1 / metrics["mean_mse"]))
    # by name, the same model as from the run directory
    mixtures = np.random.default_rng(0).random((3, 28, 28), dtype=np.float32) / 2
    for a, b in zip(npvae.load_model("tiny-unet").separate(mixtures), npvae.load_model(tiny_run).separate(mixtures)):
        np.testing.assert_array_equal(a, b)


def test_ship_quantized_scores_the_weights_it_stores(tiny_run, tmp_path, shared_data):
    """--quantize int8: the file holds int8 codes and scales, loads to the round trip of
    the run's weights, and its recorded scores are that model's."""
    import h5py
    from npvae.files.quantize import quantized_round_trip
    from npvae.pretrained.scoring import score
    (tiny_run / "provenance.json").write_text(json.dumps({"command": "npvae train mnist --tiny", "commit": "abc1234"}))
    assert ship(tiny_run, "tiny-int8", "--dest", tmp_path, "--data-dir", shared_data, "--quantize", "int8") == 0
    path = tmp_path / "tiny-int8.h5"
    with h5py.File(path, "r") as f:
        codes = [name for name in f["model/param_scales"]]
        assert codes and all(f["model/params"][name].dtype == np.int8 for name in codes)
    info = npvae.files.h5mat.read_tree(path, subtree="provenance")
    assert info["weights"] == "int8"
    run_model = npvae.load_model(tiny_run)
    want = quantized_round_trip(run_model.state_dict())
    shipped = npvae.load_model(path)
    for name, value in shipped.state_dict().items():
        np.testing.assert_array_equal(value, want[name], err_msg=name)
    run_model.load_state_dict(want)
    run_model.eval()
    assert info["scores"]["mean_psnr"] == pytest.approx(score(run_model, {"seed": 3}, shared_data)["mean_psnr"],
                                                        abs=1e-9)
    with pytest.raises(SystemExit):          # argparse: "invalid choice: 'int4' (choose from 'int8')"
        ship(tiny_run, "tiny-int4", "--dest", tmp_path, "--quantize", "int4")


def test_ship_model_needs_command_and_commit(tiny_run, tmp_path, capsys):
    (tiny_run / "provenance.json").unlink(missing_ok=True)
    assert ship(tiny_run, "--name", "x", "--dest", tmp_path) == 1
    assert "--command and" in capsys.readouterr().err
    assert ship(tiny_run, "--name", "a/b", "--command", "c", "--commit", "d", "--dest", tmp_path) == 2
    assert "NAME must be letters" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_ship_model_refuses_before_scoring(tiny_run, tmp_path, capsys):
    (tmp_path / "mnist-x.h5").write_bytes(b"shipped")
    assert ship(tiny_run, "mnist-x", "--command", "c", "--commit", "d", "--dest", tmp_path) == 1
    assert "mnist-x.h5 exists; pass --overwrite" in capsys.readouterr().err
    assert ship(tiny_run, "music-x", "--command", "c", "--commit", "d", "--dest", tmp_path) == 1
    assert "music separator" in capsys.readouterr().err
    assert (tmp_path / "mnist-x.h5").read_bytes() == b"shipped"


def test_unknown_names_list_what_is_shipped(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="none"):
        npvae.load_model("mnist-unet")
    assert not pretrained.is_name("mnist-unet") and not pretrained.is_name(Path("mnist-unet"))


def test_zero_latent_mean_gives_the_prior_mean(rng):
    from npvae.models.mnist import build_model
    from npvae.models.music import SpectrogramUNetVAE
    from npvae.pretrained.scoring import zero_latent_mean
    for model in (build_model("unet", channels=(4, 4, 8), latent_dim=3, rng=rng),
                  build_model("dense", hidden=(16,), latent_dim=3, rng=rng)):
        mixtures = rng.random((2, 28, 28), dtype=np.float32) / 2
        zero_latent_mean(model).separate(mixtures)
        mu = model.head.mu.forward(rng.random((2, model.head.in_features), dtype=np.float32))
        assert np.all(mu == 0)
    net = SpectrogramUNetVAE((4, 4, 8), 2, rng=rng)
    zero_latent_mean(net).forward(rng.standard_normal((1, 1, 16, 16)).astype(np.float32), sample=False)
    assert np.all(net.mu == 0) and not np.all(net.logvar == 0)

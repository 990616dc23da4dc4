"""Part I runs on real data, kept tiny: loss falls, files round-trip, resume is exact."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import npvae
from npvae.files import h5mat
from npvae.engine.checkpoint import load_checkpoint, model_state
from npvae.tasks.mnist import MnistConfig, load_data

pytestmark = pytest.mark.slow     # an end-to-end file (CI runs it on the default backend only)

REPO = Path(__file__).resolve().parents[1]


def tiny(tmp_path, shared_data, **kw):
    """The settings of a tiny run (a dict for npvae.train)."""
    base = dict(model="dense", hidden=(64, 32), latent_dim=8, epochs=3, batch_size=64, train_limit=640,
                eval_limit=200, display_every=1, data_dir=str(shared_data), out=str(tmp_path / "run"),
                progress=False, kl_warmup=1.0, n_examples=6)
    base.update(kw)
    return base


def train(settings, **kw):
    return npvae.train("mnist", settings, log=quiet, **kw)


def quiet(*args):
    pass


def test_short_run_learns_and_writes_everything(tmp_path, shared_data):
    result = train(tiny(tmp_path, shared_data))
    run = result.run_dir
    hist = result.history
    assert run == tmp_path / "run" and not result.finished_before
    assert hist["epoch"] == [1, 2, 3]
    assert hist["train_digit"][-1] < hist["train_digit"][0]
    assert hist["val_psnr"][-1] > hist["val_psnr"][0]
    for name in ("checkpoint.npz", "config.json", "history.json", "metrics.json", "model.h5", "results.h5",
                 "grid.png", "loss_curves.png", "figures/epoch_001.png", "figures/epoch_003.png"):
        assert (run / name).is_file(), name
    assert (run / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_eval_pairs"] == 200 and result.metrics == pytest.approx(metrics)
    config = json.loads((run / "config.json").read_text())
    assert config["pipeline"] == "mnist" and config["kl_warmup"] == 1.0 and config["hidden"] == [64, 32]
    assert all(np.isfinite(metrics[f"{s}_{m}"]) for s in ("digit", "fashion") for m in ("mse", "psnr", "ssim"))
    tree = h5mat.read_tree(run / "results.h5", expected_kind="mnist_results")
    assert tree["examples"]["mixture"].shape == (6, 28, 28)
    assert set(tree["history"]) >= {"epoch", "train_total", "val_total", "train_kl", "val_psnr"}
    assert tree["metrics"]["mean_psnr"] == pytest.approx(metrics["mean_psnr"])


def test_a_run_records_what_its_latent_carries(tmp_path, shared_data):
    """Scores with the latent at the prior mean, the posterior's KL and its active
    dimensions are in every run's metrics; the vae model decodes nothing but z, so at the
    prior mean it gives the same two images for every mixture."""
    result = train(tiny(tmp_path, shared_data, model="vae", channels=(4, 8), latent_dim=2, hidden=None,
                        epochs=2, beta=0.01, display_every=2))
    metrics = result.metrics
    assert metrics["latent_size"] == 2 * 14 * 14
    assert 0 < metrics["active_latents"] <= metrics["latent_size"] and metrics["kl_nats"] > 0
    assert np.isfinite(metrics["prior_mean_mean_psnr"]) and 0 < metrics["prior_mean_mean_ssim"] < 1
    from npvae.pretrained.scoring import zero_latent_mean
    model = zero_latent_mean(npvae.load_model(result.run_dir))
    mixtures = np.random.default_rng(0).random((3, 28, 28), dtype=np.float32) / 2
    digit, fashion, _ = model.separate(mixtures)
    assert np.ptp(digit, axis=0).max() < 1e-6 and np.ptp(fashion, axis=0).max() < 1e-6   # rounding only


def test_cosine_schedule_lowers_the_learning_rate_at_the_end(tmp_path, shared_data):
    hist = train(tiny(tmp_path, shared_data, epochs=5, lr_schedule="cosine")).history
    # the rate of each epoch's last step: flat for the first 60%, then down towards lr / 10
    assert hist["val_lr"][:3] == [1e-3] * 3
    assert 1e-3 > hist["val_lr"][3] > hist["val_lr"][4] > 1e-4 and hist["val_lr"][4] < 1.2e-4


def test_weight_decay_shrinks_the_weights_and_is_recorded(tmp_path, shared_data):
    def weight_norm(wd):
        settings = tiny(tmp_path / f"wd{wd}", shared_data, epochs=1, train_limit=320, weight_decay=wd)
        train(settings)
        run = Path(settings["out"])
        assert json.loads((run / "config.json").read_text())["weight_decay"] == wd
        weights = npvae.load_model(run).state_dict().values()
        return np.sqrt(sum(float(np.sum(w.astype(np.float64) ** 2)) for w in weights))
    plain, decayed = weight_norm(0.0), weight_norm(20.0)     # 5 steps of lr 1e-3: each takes 2% off
    assert decayed < 0.95 * plain


def test_weight_average_is_validated_and_shipped_and_resumes_exactly(tmp_path, shared_data):
    def run(name, epochs, resume=False):
        settings = tiny(tmp_path / name, shared_data, epochs=epochs, train_limit=320, ema_decay=0.9)
        return train({"out": settings["out"], "epochs": epochs} if resume else settings, resume=resume)
    straight = run("a", 2)
    assert json.loads((straight.run_dir / "config.json").read_text())["ema_decay"] == 0.9
    shipped = npvae.load_model(straight.run_dir).state_dict()
    arrays, _ = load_checkpoint(straight.run_dir / "checkpoint.npz")
    trained = model_state(arrays)
    for k, w in shipped.items():        # the model file holds the average, the checkpoint both
        np.testing.assert_array_equal(w, arrays[f"opt/ema/{k}"], err_msg=k)
        assert not np.array_equal(w, trained[k]), k
    run("b", 1)
    resumed = run("b", 2, resume=True)
    drop = {"seconds"}
    assert {k: v for k, v in resumed.history.items() if k not in drop} == \
        {k: v for k, v in straight.history.items() if k not in drop}
    for k, w in npvae.load_model(resumed.run_dir).state_dict().items():
        np.testing.assert_array_equal(w, shipped[k], err_msg=k)
    with pytest.raises(ValueError, match="--ema-decay must be below 1"):
        MnistConfig(ema_decay=1.0)


def test_saved_model_reproduces_the_outputs(tmp_path, shared_data):
    settings = tiny(tmp_path, shared_data, model="unet", channels=(4, 4, 8), hidden=None, epochs=1,
                    train_limit=256)
    train(settings)
    run = Path(settings["out"])
    tree = h5mat.read_tree(run / "results.h5")
    mixtures = tree["examples"]["mixture"]
    for source in (run, run / "model.h5", run / "results.h5"):
        model = npvae.load_model(source)
        d, f, m = model.separate(mixtures)
        np.testing.assert_array_equal(d, tree["examples"]["digit_hat"])
        np.testing.assert_array_equal(f, tree["examples"]["fashion_hat"])
        np.testing.assert_array_equal(m, tree["examples"]["mixture_hat"])


def test_resume_is_identical_to_an_uninterrupted_run(tmp_path, shared_data):
    straight = train(tiny(tmp_path / "a", shared_data, epochs=3))
    train(tiny(tmp_path / "b", shared_data, epochs=1))
    out = str(tmp_path / "b" / "run")
    # the resumed run keeps its own settings: only the change is named
    resumed = train({"out": out, "epochs": 3}, resume=True)
    assert resumed.config == MnistConfig(**{**tiny(tmp_path / "b", shared_data), "epochs": 3})
    drop = {"seconds"}
    assert {k: v for k, v in resumed.history.items() if k not in drop} == \
        {k: v for k, v in straight.history.items() if k not in drop}
    a = npvae.load_model(straight.run_dir).state_dict()
    b = npvae.load_model(resumed.run_dir).state_dict()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    # a finished run is left as it is; a setting that would change what was learnt is refused
    before = (resumed.run_dir / "model.h5").read_bytes()
    again = train({"out": out}, resume=True)
    assert again.finished_before and again.metrics is None and again.config.epochs == 3
    with pytest.raises(ValueError, match="latent_dim: 8 -> 4"):
        train({"out": out, "epochs": 4, "latent_dim": 4}, resume=True)
    assert (resumed.run_dir / "model.h5").read_bytes() == before


def test_mixtures_follow_the_rule(tmp_path, shared_data):
    data = load_data(MnistConfig(**tiny(tmp_path, shared_data, rule="sum")))
    mixture, digit, fashion = next(data.batches(np.random.default_rng(0), 32))
    np.testing.assert_allclose(mixture, np.clip(digit + fashion, 0, 1))


def test_script_runs_and_resumes(tmp_path, shared_data):
    out = tmp_path / "cli"
    env = {**os.environ, "NPVAE_DATA": str(shared_data), "MPLBACKEND": "Agg"}
    cmd = [sys.executable, str(REPO / "scripts" / "train_mnist.py"), "--hidden", "32", "--latent-dim", "4",
           "--epochs", "1", "--train-limit", "256", "--eval-limit", "100", "--out", str(out), "--no-progress"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "PSNR" in done.stdout and (out / "results.h5").is_file()
    # the resumed run keeps its own settings (network, limits, no progress bar): only the change is named
    again = subprocess.run([sys.executable, str(REPO / "scripts" / "train_mnist.py"), "--out", str(out), "--epochs",
                            "2", "--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "resumed from" in again.stdout
    assert json.loads((out / "history.json").read_text())["epoch"] == [1, 2]
    config = json.loads((out / "config.json").read_text())
    assert (config["hidden"], config["latent_dim"], config["train_limit"], config["progress"], config["epochs"]) == \
        ([32], 4, 256, False, 2)


def test_missing_data_is_explained(tmp_path):
    env = {**os.environ, "NPVAE_DATA": str(tmp_path / "nowhere"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    cmd = [sys.executable, str(REPO / "scripts" / "train_mnist.py"), "--epochs", "1", "--out", str(tmp_path / "x"),
           "--data-dir", str(tmp_path / "empty")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr      # the work failed: exit 1, no traceback
    assert "NPVAE_DATA" in done.stderr or "--data-dir" in done.stderr


def test_blocks_is_a_unet_setting_checked_before_training():
    from npvae.models.mnist import build_model
    assert MnistConfig(model="unet", blocks=2).model_kwargs()["blocks"] == 2
    assert MnistConfig(model="unet").model_kwargs()["blocks"] == 1
    with pytest.raises(ValueError, match="setting of the unet and vae models"):
        MnistConfig(model="dense", blocks=2)
    with pytest.raises(ValueError, match="blocks"):
        MnistConfig(model="unet", blocks=0)
    with pytest.raises(ValueError, match="blocks"):
        build_model("unet", blocks=1.5)
    # a one-block U-Net's file keeps the old spec (no "blocks"), so older files load unchanged
    assert "blocks" not in build_model("unet", channels=(2, 2, 2)).spec()
    assert build_model("unet", channels=(2, 2, 2), blocks=2).spec()["blocks"] == 2


def test_latent_usage_script_tells_a_latent_that_carries_from_one_that_does_not(shared_data, capsys):
    import latent_usage
    assert latent_usage.main(["mnist-vae", "mnist-unet", "--data-dir", str(shared_data), "--limit", "50"]) == 0
    rows = {line.split("|")[1].strip(" `"): [c.strip() for c in line.split("|")[2:6]]
            for line in capsys.readouterr().out.splitlines() if line.startswith("| `")}
    vae, unet = rows["mnist-vae"], rows["mnist-unet"]
    assert float(vae[0]) - float(vae[1]) > 10             # the VAE's separation is in its latent
    assert float(unet[0]) - float(unet[1]) < 5            # the U-Net's travels mostly through the skips
    # without its latent the VAE falls below the mixture itself (13.54 dB); the U-Net stays far above
    # (the U-Net's KL is no measure here: trained without a KL term, nothing keeps its code small)
    assert float(vae[1]) < 13.54 < 25 < float(unet[1])


def test_a_run_killed_while_writing_its_last_files_resumes_to_write_them(tmp_path, shared_data):
    settings = tiny(tmp_path, shared_data, epochs=1, train_limit=256)
    train(settings)
    run = Path(settings["out"])
    (run / "results.h5").unlink()                                  # killed between model.h5 and results.h5
    stale = run / ".results.h5.999999999.abc.npvae-tmp.h5"         # its half-written temporary
    stale.write_bytes(b"partial")
    again = train({"out": settings["out"]}, resume=True)
    assert not again.finished_before and (run / "results.h5").exists() and not stale.exists()


def test_a_unet_with_batchnorm_and_dropout_resumes_as_if_never_stopped(tmp_path, shared_data):
    """Running statistics (buffers) and dropout masks (the run's generator) go through the
    checkpoint: a resumed run ends where the uninterrupted one does, bit for bit, and its
    file scores what the run scored (the scoring moves no running statistic)."""
    unet = dict(model="unet", hidden=None, channels=(4, 4, 8, 8), blocks=2, norm="batch", down="max", dropout=0.2,
                residual=True, epochs=2, train_limit=256, eval_limit=64)
    straight = train(tiny(tmp_path / "a", shared_data, **unet))
    train(tiny(tmp_path / "b", shared_data, **{**unet, "epochs": 1}))
    resumed = train({"out": str(tmp_path / "b" / "run"), "epochs": 2}, resume=True)
    drop = {"seconds"}
    assert {k: v for k, v in resumed.history.items() if k not in drop} == \
        {k: v for k, v in straight.history.items() if k not in drop}
    a = npvae.load_model(straight.run_dir)
    b = npvae.load_model(resumed.run_dir)
    assert any(k.endswith("running_var") for k in a.state_dict())
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(v, b.state_dict()[k], err_msg=k)
    from npvae.tasks.mnist.task import evaluate
    mixture, digit, fashion = load_data(MnistConfig(**tiny(tmp_path / "a", shared_data, **unet))).evaluation_set()
    assert evaluate(a, mixture, digit, fashion)["mean_psnr"] == straight.metrics["mean_psnr"]

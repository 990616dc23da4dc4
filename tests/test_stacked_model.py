"""Stacked hourglasses (npvae.models.stacked): gradients against finite differences, the
objective's intermediate supervision, model files, chunked separation, and a short
`npvae train music --stacks 2` run on MIR-1K clips that separates a clip afterwards."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import npvae
from npvae import build_layer
from npvae.audio.stft import STFTConfig
from npvae.errors import FileFormatError
from npvae.files import h5mat
from npvae.files.model_file import save_separator
from npvae.layers.fold import fold_batchnorm
from npvae.models.music import SpectrogramUNetVAE
from npvae.models.stacked import StackedSpectrogramUNetVAE, mask_network
from npvae.separation.separator import Normalizer, Separator, predict_masks
from npvae.tasks.music import LossConfig, MusicObjective, sample_batch
from npvae.vae import kl_divergence
from _gradcheck import numerical_gradient, rel_error
from test_music_pipeline import CFG, synth_track

REPO = Path(__file__).resolve().parents[1]


def tiny_stack(stacks=2, dtype=np.float64, seed=0, **kw):
    return StackedSpectrogramUNetVAE(stacks, channels=(2, 3, 2), latent_channels=2, kernel_size=3,
                                     rng=np.random.default_rng(seed), dtype=dtype, **kw)


@pytest.mark.parametrize("stacks,kw", [(2, {}), (3, {}), (2, dict(norm="group", groups=2, residual=True)),
                                       (2, dict(rnn_layers=1, rnn_hidden=2, freq_bins=16))])
def test_stacked_gradients_match_finite_differences(rng, stacks, kw):
    model = tiny_stack(stacks, **kw)
    x = rng.standard_normal((2, 1, 16, 8))
    r = rng.standard_normal((2, 2, 16, 8))
    a, b = rng.standard_normal((2, 2, 2 * stacks, 2, 1))      # on mu and logvar: every stack's latent
    c = rng.standard_normal((2, 2 * stacks, 16, 8))            # on every stack's logits
    e = [rng.standard_normal((2, 2, 16, 8)) for _ in range(stacks - 1)]     # on the earlier stacks' masks

    def loss():
        model.rng = np.random.default_rng(7)    # the same eps in every evaluation
        y = model.forward(x)
        extra = sum(float(np.sum(m * g)) for m, g in zip(model.earlier, e))
        return float(np.sum(y * r) + np.sum(model.mu * a) + np.sum(model.logvar * b) + np.sum(model.logits * c)) \
            + extra

    loss()
    assert len(model.earlier) == stacks - 1 and model.mu.shape == (2, 2 * stacks, 2, 1)
    dx = model.backward(r, a, b, dlogits=c, dearlier=e)
    analytic = {path: g.copy() for path, _, g in model.named_parameters()}
    assert {path.split(".")[0] for path in analytic} == {f"stack{k + 1}" for k in range(stacks)}
    tol = 1e-5 if kw else 1e-6      # the options' tolerance in test_music_model
    assert rel_error(dx, numerical_gradient(loss, x)) < tol
    for path, p, _ in model.named_parameters():
        numeric = numerical_gradient(loss, p)
        err = rel_error(analytic[path], numeric)
        # a bias followed by a norm has no effect: its gradient is 0 up to round-off
        assert err < tol or np.max(np.abs(analytic[path] - numeric)) < 1e-8, f"{path}: relative error {err:.2e}"


def test_later_stacks_see_the_mixture_and_the_masks_before(rng):
    model = tiny_stack().eval()
    x = rng.standard_normal((1, 1, 16, 8))
    first, second = model.hourglasses
    assert first.encoders[0].in_channels == 1 and second.encoders[0].in_channels == 3
    m1 = first.forward(x)
    np.testing.assert_array_equal(model.forward(x), second.forward(np.concatenate([x, m1], axis=1)))
    np.testing.assert_array_equal(model.earlier[0], m1)
    assert model.context_frames == first.context_frames + second.context_frames
    with pytest.raises(ValueError, match=r"\(N, 1, F, T\)"):
        model.forward(np.zeros((1, 3, 16, 8)))


def test_one_stack_is_the_u_net_and_bad_stacks_are_refused():
    one = mask_network(1, channels=(2, 3, 2), latent_channels=2, rng=np.random.default_rng(0))
    alone = SpectrogramUNetVAE(channels=(2, 3, 2), latent_channels=2, rng=np.random.default_rng(0))
    assert type(one) is SpectrogramUNetVAE and one.spec() == alone.spec() and "in_channels" not in one.spec()
    for k, v in one.state_dict().items():
        np.testing.assert_array_equal(v, alone.state_dict()[k])
    for stacks in (1, 0, 9, 2.0, True):
        with pytest.raises(ValueError, match="stacks must be a whole number from 2 to 8"):
            StackedSpectrogramUNetVAE(stacks, channels=(2, 3))
    with pytest.raises(ValueError, match="in_channels is not a setting"):
        StackedSpectrogramUNetVAE(2, channels=(2, 3), in_channels=3)


@pytest.mark.parametrize("value,words", [(0, "--stacks must be >= 1"), (9, "at most 8"),
                                         (2.5, "--stacks must be a whole number")])
def test_the_stacks_flag_is_checked(value, words):
    from npvae.engine.run import make_config
    assert make_config("music", {}).stacks == 1
    with pytest.raises(ValueError, match=words):
        make_config("music", {"stacks": value})


def test_objective_supervises_every_stack_and_sums_the_kls(rng):
    model = StackedSpectrogramUNetVAE(2, channels=(4, 4, 8), latent_channels=2, kernel_size=3,
                                      rng=np.random.default_rng(0), dtype=np.float64)
    sep = Separator(model, CFG, Normalizer.fit([synth_track(rng)], CFG))
    batch = sample_batch([synth_track(rng)], rng, 2, 8, CFG)
    obj = MusicObjective(sep, LossConfig(loss="mse", mix_weight=0.7, logit_penalty=0.3))

    def total():
        model.rng = np.random.default_rng(3)
        return obj.terms(batch, beta=0.5, backward=False)["total"]

    model.rng = np.random.default_rng(3)
    terms = obj.terms(batch, beta=0.5)
    first, second = model.hourglasses
    n, f, t = 2, 128, 8
    kls = [kl_divergence(h.mu.reshape(n, -1), h.logvar.reshape(n, -1))[0] / (f * t) for h in (first, second)]
    assert terms["kl"] == pytest.approx(sum(kls), rel=1e-12)
    # the first stack's masks pay the terms the final masks pay
    _, mix, (v, a) = obj._inputs(batch)
    (lv, la, lm), _ = obj._reconstruction(model.earlier[0], mix, v, a)
    assert terms["earlier_stacks"] == pytest.approx(lv + la + 0.7 * lm) and lv + la > 0
    last = terms["vocals"] + terms["accompaniment"] + 0.7 * terms["mixture"]
    assert terms["total"] == pytest.approx(last + terms["earlier_stacks"] + 0.5 * terms["kl"] + 0.3 * terms["logits"])
    for layer, name in ((first.dec1, "W"), (first.head, "b"), (second.enc1, "W"), (second.head, "b")):
        err = rel_error(layer.grads[name], numerical_gradient(total, layer.params[name]))
        assert err < 1e-5, f"{name}: {err:.2e}"


def test_batchnorm_folds_in_every_stack(rng):
    model = tiny_stack(norm="batch", dtype=np.float32)
    for _ in range(3):      # running statistics away from their initial values
        model.forward(rng.standard_normal((4, 1, 16, 8)).astype(np.float32))
    model.eval()
    x = rng.standard_normal((2, 1, 16, 8)).astype(np.float32)
    folded = fold_batchnorm(model)
    assert not any("norm" in path for path in folded.state_dict())
    np.testing.assert_allclose(folded.forward(x), model.forward(x), atol=2e-6)


def test_chunked_masks_of_a_stack_equal_one_shot(rng):
    model = StackedSpectrogramUNetVAE(2, channels=(4, 4, 8), latent_channels=4, rng=rng)
    feats = rng.standard_normal((CFG.n_freq - 1, 230)).astype(np.float32)
    one = predict_masks(model, feats, CFG.n_freq, chunk_frames=1024)
    chunked = predict_masks(model, feats, CFG.n_freq, chunk_frames=16)    # the model's context, 96 frames
    np.testing.assert_allclose(chunked, one, atol=1e-5)
    # one hourglass's context is too short for two: the test can tell them apart
    assert np.max(np.abs(predict_masks(model, feats, CFG.n_freq, 16, context=16) - one)) > 1e-4


def stacked_separator(rng):
    model = StackedSpectrogramUNetVAE(2, channels=(4, 4, 8), latent_channels=4, norm="batch", rng=rng)
    for _ in range(2):
        model.forward(rng.standard_normal((2, 1, 128, 16)).astype(np.float32))
    return Separator(model.eval(), CFG, Normalizer.fit([synth_track(rng)], CFG))


def test_stacked_model_file_round_trip(rng, tmp_path):
    sep = stacked_separator(rng)
    path = save_separator(tmp_path / "model.h5", sep, {"epochs": 0})
    back = npvae.load_model(path)
    assert isinstance(back, Separator) and isinstance(back.model, StackedSpectrogramUNetVAE)
    assert back.model.spec() == sep.model.spec() and back.model.spec()["stacks"] == 2
    mix = synth_track(rng, seconds=1.1).mixture()
    np.testing.assert_array_equal(back.separate(mix, CFG.sample_rate), sep.separate(mix, CFG.sample_rate))
    twin = build_layer(sep.model.spec())
    twin.load_state_dict(sep.model.state_dict())
    x = rng.standard_normal((1, 1, 128, 16)).astype(np.float32)
    np.testing.assert_array_equal(twin.eval().forward(x), sep.model.forward(x))


@pytest.mark.parametrize("edit,words", [
    (lambda s, p: s.update(stacks=3), "tensors missing ['stack3.dec1.W'"),
    (lambda s, p: s.update(stacks=1000), "stacks must be at most 8"),
    (lambda s, p: s.update(stacks="2"), "stacks must be a whole number >= 2"),
    (lambda s, p: s.pop("stacks"), "StackedSpectrogramUNetVAE has no 'stacks'"),
    (lambda s, p: s.update(in_channels=3), "has no in_channels"),
    (lambda s, p: s.update(n_sources=3), "tensor stack1.dec1.W has shape (8, 2, 5, 5)"),
    (lambda s, p: p.pop("stack2.dec1.b"), "tensors missing ['stack2.dec1.b']"),
    (lambda s, p: p.__setitem__("stack2.enc1.W", p["stack2.enc1.W"][:, :1]), "stack2.enc1.W has shape"),
])
def test_a_damaged_stacked_file_is_refused_naming_the_problem(rng, tmp_path, edit, words):
    path = save_separator(tmp_path / "model.h5", stacked_separator(rng))
    tree = h5mat.read_tree(path)
    spec = json.loads(tree["model"]["spec"])
    edit(spec, tree["model"]["params"])
    tree["model"]["spec"] = json.dumps(spec)
    h5mat.write_tree(tmp_path / "damaged.h5", tree, kind="model")
    with pytest.raises(FileFormatError) as e:
        npvae.load_model(tmp_path / "damaged.h5")
    assert words in str(e.value) and "damaged.h5" in str(e.value)


# -- end to end on MIR-1K clips -------------------------------------------------------------------
def _data():
    return os.environ.get("NPVAE_DATA") or str(REPO.parent / "shared" / "data")


@pytest.mark.slow
@pytest.mark.skipif(not (Path(_data()) / "MIR-1K").is_dir(), reason="MIR-1K not found (set NPVAE_DATA)")
def test_train_music_with_two_stacks_then_separate(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1"}
    # one 12 s clip in excerpts of 8 x 32 frames: 2 steps
    args = ["train", "music", "--stacks", "2", "--train-limit", "1", "--eval-limit", "1", "--frames", "32",
            "--batch-size", "8", "--epochs", "1", "--channels", "4", "4", "8", "--latent-channels", "2",
            "--norm", "batch", "--snippet-seconds", "1", "--data-dir", _data(), "--out", str(out), "--no-progress"]
    r = subprocess.run([sys.executable, "-m", "npvae", *args], capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]
    tree = h5mat.read_tree(out / "results.h5", expected_kind="music_results")
    history = tree["history"]
    assert np.isfinite(history["train_earlier_stacks"]).all() and history["train_earlier_stacks"][-1] > 0
    assert np.isfinite(history["val_earlier_stacks"]).all()
    assert tree["config"]["stacks"] == 2
    sep = npvae.load_model(out)
    assert isinstance(sep.model, StackedSpectrogramUNetVAE) and sep.model.stacks == 2
    rate = sep.stft_cfg.sample_rate
    clip = 0.1 * np.random.default_rng(0).standard_normal(rate).astype(np.float32)
    est = sep.separate(clip, rate)
    assert est.shape == (2, rate) and np.isfinite(est).all() and np.abs(est).max() > 0


def test_the_prior_mean_ablation_zeroes_every_stacks_latent_mean(rng):
    from npvae.models.ablation import zero_latent_mean
    sep = stacked_separator(rng)
    x = rng.standard_normal((1, 1, 128, 16)).astype(np.float32)
    sep.model.forward(x)
    assert np.abs(sep.model.mu).max() > 0
    zero_latent_mean(sep)
    sep.model.forward(x)
    np.testing.assert_array_equal(sep.model.mu, 0)
    assert np.abs(sep.model.logvar).max() > 0       # the variances' half of the heads is left alone


@pytest.mark.slow
@pytest.mark.skipif(not (Path(_data()) / "MIR-1K").is_dir(), reason="MIR-1K not found (set NPVAE_DATA)")
def test_a_resumed_stacked_run_equals_a_straight_one(tmp_path):
    """Two epochs straight, and one then a resumed second: the same weights, bit for bit
    (both stacks' latent noise and dropout masks come from the run's one generator)."""
    from npvae.files.model_file import read_model_file
    settings = {"stacks": 2, "train_limit": 1, "eval_limit": 1, "frames": 32, "batch_size": 8,
                "channels": (4, 4, 8), "latent_channels": 2, "norm": "batch", "dropout": 0.2, "snippet_seconds": 1.0,
                "data_dir": _data(), "progress": False}
    quiet = lambda *a, **k: None    # noqa: E731
    npvae.train("music", {**settings, "epochs": 2, "out": str(tmp_path / "straight")}, log=quiet)
    npvae.train("music", {**settings, "epochs": 1, "out": str(tmp_path / "resumed")}, log=quiet)
    npvae.train("music", {"epochs": 2, "out": str(tmp_path / "resumed")}, resume=True, log=quiet)
    straight, _ = read_model_file(tmp_path / "straight")
    resumed, _ = read_model_file(tmp_path / "resumed")
    assert isinstance(straight, StackedSpectrogramUNetVAE)
    for key, value in straight.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[key], value, err_msg=key)

"""Blind separation (Part I): gradients of the model and its objective, mixture
consistency, permutation-invariant scoring, and mixtures-only training data."""
import numpy as np
import pytest

from npvae.data.blind import MixtureOnlyData, mix_training_pairs
from npvae.layers.base import build_layer
from npvae.metrics.permutation import best_permutation, matched, permutation_report
from npvae.models.blind import BlindSeparationVAE
from npvae.tasks.blind_objective import (BlindLossConfig, BlindObjective, consistent_sources, group_kl,
                                             remix)


def tiny(k=2, dtype=np.float64, seed=1):
    return BlindSeparationVAE(k, 3, hidden=(7, 5), rng=np.random.default_rng(seed), dtype=dtype)


def mixtures(rng, n=3, rule="average"):
    a, b = rng.uniform(size=(n, 28, 28)), rng.uniform(size=(n, 28, 28))
    a[a < 0.5] = 0
    b[b < 0.4] = 0
    return (a + b) / 2 if rule == "average" else np.clip(a + b, 0, 1)


def directional_check(model, loss, seed=3, h=1e-6):
    """Centred differences of ``loss()`` along a random direction per parameter tensor,
    against the gradients the last backward left in the model."""
    grads = {path: g.copy() for path, _, g in model.named_parameters()}
    for path, p, _ in model.named_parameters():
        v = np.random.default_rng(seed).standard_normal(p.shape)
        p += h * v
        up = loss()
        p -= 2 * h * v
        down = loss()
        p += h * v
        numeric, analytic = (up - down) / (2 * h), float(np.sum(grads[path] * v))
        assert abs(numeric - analytic) <= 1e-5 * max(abs(numeric) + abs(analytic), 1e-4), (path, numeric, analytic)


@pytest.mark.parametrize("k,rule,recon", [(2, "average", "mse"), (2, "sum", "mse"), (3, "average", "l1"),
                                          (3, "sum", "l1"), (4, "average", "mse")])
def test_objective_gradient_for_every_parameter(rng, k, rule, recon):
    """The whole negative ELBO (mixture term through the mixing rule, KL of every group,
    sampled latents) against centred differences in float64."""
    model = tiny(k)
    objective = BlindObjective(model, BlindLossConfig(rule=rule, loss=recon))
    m = mixtures(rng, rule=rule)
    if rule == "sum":
        model.decoder.layers[-1].params["b"][...] += 1.0   # some sums above 1: the censored branch is exercised
    objective.terms(m, beta=0.7, rng=np.random.default_rng(5))

    def loss():
        return objective.terms(m, beta=0.7, rng=np.random.default_rng(5), backward=False)["total"]

    directional_check(model, loss)


def test_model_backward_gives_the_input_gradient(rng):
    """forward/backward like a layer: L = sum(y * R) + sum(mu * A) + sum(logvar * B)."""
    model = tiny(3)
    m = mixtures(rng)
    r = rng.standard_normal((3, 3, 28, 28))
    a, b = rng.standard_normal((3, 3, 3)), rng.standard_normal((3, 3, 3))

    def loss():
        y = model.forward(m, rng=np.random.default_rng(2))
        return float(np.sum(y * r) + np.sum(model.mu * a) + np.sum(model.logvar * b))

    loss()
    dx = model.backward(r, a, b)
    assert dx.shape == m.shape
    v = rng.standard_normal(m.shape)
    h = 1e-6
    m += h * v
    up = loss()
    m -= 2 * h * v
    down = loss()
    m += h * v
    assert abs((up - down) / (2 * h) - np.sum(dx * v)) <= 1e-6 * abs(np.sum(dx * v)) + 1e-9
    loss()
    model.backward(r, a, b)
    directional_check(model, loss)


def test_shared_decoder_and_groups():
    """Every group goes through the one decoder: group k's image is decode(mu_k)."""
    model = tiny(3, dtype=np.float32)
    m = mixtures(np.random.default_rng(0)).astype(np.float32)
    y = model.separate(m)
    assert y.shape == (3, 3, 28, 28) and 0 < y.min() and y.max() < 1
    np.testing.assert_allclose(model.decode(model.mu), y, rtol=1e-6, atol=1e-7)
    assert not any("group" in path for path, _, _ in model.named_parameters())
    clone = build_layer(model.spec())
    clone.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(clone.separate(m), y)


def test_sampling_needs_an_rng_and_eval_uses_the_mean(rng):
    model = tiny(2, dtype=np.float32)
    m = mixtures(rng).astype(np.float32)
    with pytest.raises(ValueError, match="rng"):
        model.forward(m)
    a = model.forward(m, rng=np.random.default_rng(0)).copy()
    b = model.forward(m, rng=np.random.default_rng(1)).copy()
    assert not np.allclose(a, b)
    model.eval()
    np.testing.assert_array_equal(model.forward(m), model.separate(m))


def test_remix_and_censored_sum(rng):
    y = rng.uniform(size=(2, 3, 4, 4))
    np.testing.assert_allclose(remix(y, "average"), y.sum(1) / 2)
    np.testing.assert_allclose(remix(y, "sum"), y.sum(1))
    model = tiny(2)
    obj = BlindObjective(model, BlindLossConfig(rule="sum", loss="l1"))
    m = np.ones((1, 28, 28))
    y = np.full((1, 2, 28, 28), 0.7)            # sum 1.4 over a saturated pixel: consistent, no cost
    value, dy = obj.reconstruction(y, m)
    assert value == 0 and not dy.any()
    m[0, 0, 0] = 0.5                             # an unsaturated pixel must be matched exactly
    value, dy = obj.reconstruction(y, m)
    assert value == pytest.approx(0.9) and dy[0, :, 0, 0].tolist() == [1.0, 1.0] and np.abs(dy).sum() == 2


@pytest.mark.parametrize("rule", ["average", "sum"])
def test_masked_estimates_mix_back_exactly(rng, rule):
    y = rng.uniform(0.01, 1, size=(5, 3, 28, 28))
    m = mixtures(rng, 5, rule)
    est = consistent_sources(y, m, rule)
    np.testing.assert_allclose(remix(est, rule), m, atol=1e-12)


def test_group_kl_sums_to_the_kl(rng):
    from npvae.vae import kl_divergence
    mu, lv = rng.standard_normal((4, 3, 5)), rng.standard_normal((4, 3, 5))
    assert group_kl(mu, lv).sum() == pytest.approx(kl_divergence(mu, lv)[0])


def test_best_permutation_recovers_a_shuffle(rng):
    src = rng.uniform(size=(50, 2, 28, 28))
    extra = rng.uniform(size=(50, 1, 28, 28))
    est = np.concatenate([src, extra], axis=1) + 0.01 * rng.standard_normal((50, 3, 28, 28))
    perm = np.array([rng.permutation(3) for _ in range(50)])
    shuffled = np.take_along_axis(est, perm[:, :, None, None], axis=1)
    idx = best_permutation(shuffled, src)
    np.testing.assert_allclose(matched(shuffled, idx), est[:, :2])
    rep = permutation_report(shuffled, src, ("a", "b"))
    assert rep["mean_psnr"] > 39 and rep["a_psnr"] == pytest.approx(rep["b_psnr"], abs=0.5)
    assert rep["group_agreement"] < 0.6         # the shuffle gives no group a preference
    rep = permutation_report(est, src, ("a", "b"))
    assert rep["group_agreement"] == 1.0
    with pytest.raises(ValueError, match="at least 2 groups"):
        best_permutation(est[:, :1], src)


def test_swapped_estimates_score_as_well_as_ordered_ones(rng):
    src = rng.uniform(size=(20, 2, 28, 28))
    est = np.clip(src + 0.1 * rng.standard_normal(src.shape), 0, 1)
    a = permutation_report(est, src, ("a", "b"))
    b = permutation_report(est[:, ::-1], src, ("a", "b"))
    assert a == b


def test_mixture_only_data_holds_only_mixtures(rng):
    a = rng.integers(0, 256, (40, 28, 28), dtype=np.uint8)
    b = rng.integers(0, 256, (30, 28, 28), dtype=np.uint8)
    data = mix_training_pairs(a, b, "average", seed=0)
    arrays = [v for v in vars(data).values() if isinstance(v, np.ndarray)]
    assert len(arrays) == 1 and arrays[0] is data.mixtures and data.mixtures.shape == (30, 28, 28)
    assert not data.mixtures.flags.writeable
    batches = list(data.batches(np.random.default_rng(0), 8))
    assert [len(x) for x in batches] == [8, 8, 8, 6]
    assert sorted(map(bytes, np.concatenate(batches))) == sorted(map(bytes, data.mixtures))
    same = mix_training_pairs(a, a, "sum", seed=0)
    singles = np.clip(a.astype(np.float32) / 255 * 2, 0, 1)
    for mixture in same.mixtures:           # no digit is mixed with itself
        assert not any(np.array_equal(mixture, s) for s in singles)
    with pytest.raises(ValueError, match=r"\[0, 1"):
        MixtureOnlyData(np.full((2, 28, 28), 2.0))


def test_spectrogram_variant_gradients(rng):
    """Magnitude patches: log input, softplus output, unbounded sums (the Part II model)."""
    model = BlindSeparationVAE(2, 3, hidden=(6,), shape=(8, 3), output="softplus", log_input=True,
                               rng=np.random.default_rng(4), dtype=np.float64)
    m = rng.gamma(0.5, 2.0, size=(4, 8, 3))
    objective = BlindObjective(model, BlindLossConfig(rule="sum", loss="l1"))
    objective.terms(m, beta=0.3, rng=np.random.default_rng(5))

    def loss():
        return objective.terms(m, beta=0.3, rng=np.random.default_rng(5), backward=False)["total"]

    directional_check(model, loss)
    r = rng.standard_normal((4, 2, 8, 3))

    def probe():
        return float(np.sum(model.forward(m, rng=np.random.default_rng(2)) * r))

    probe()
    dx = model.backward(r)
    v = rng.standard_normal(m.shape)
    h = 1e-6
    up = (m.__iadd__(h * v), probe())[1]
    down = (m.__isub__(2 * h * v), probe())[1]
    m += h * v
    assert abs((up - down) / (2 * h) - np.sum(dx * v)) <= 1e-6 * abs(np.sum(dx * v)) + 1e-9
    with pytest.raises(ValueError, match=r"\(N, 8, 3\)"):
        model.forward(m[:, :7], sample=False)


def test_patches_cover_every_frame():
    from npvae.tasks.blind_music.task import patches
    mag = np.arange(3 * 11, dtype=np.float32).reshape(3, 11)
    p = patches(mag, 4, 4)
    assert p.shape == (3, 3, 4)
    joined = p.transpose(1, 0, 2).reshape(3, -1)
    np.testing.assert_array_equal(joined[:, :11], mag)
    assert not joined[:, 11:].any()
    assert patches(mag, 4, 2).shape == (5, 3, 4)
    assert patches(mag[:, :2], 4, 2).shape == (1, 3, 4)


def test_config_flags_reach_every_field():
    import argparse
    import dataclasses
    from npvae.engine.config import add_config_flags, given_settings
    from npvae.tasks.blind_music.task import BlindMusicConfig
    p = argparse.ArgumentParser()
    add_config_flags(p, BlindMusicConfig)
    flags = {a.dest for a in p._actions}
    assert {f.name for f in dataclasses.fields(BlindMusicConfig)} <= flags
    settings = given_settings(p.parse_args(["--frames", "16", "--hidden", "8,4", "--train-limit", "3",
                                            "--no-progress", "--beta", "2"]), BlindMusicConfig)
    cfg = BlindMusicConfig(**settings)
    assert (cfg.frames, cfg.hidden, cfg.train_limit, cfg.progress, cfg.beta) == (16, (8, 4), 3, False, 2.0)
    assert BlindMusicConfig(**given_settings(p.parse_args(["--hidden", "8", "4"]), BlindMusicConfig)).hidden == (8, 4)
    with pytest.raises(ValueError, match="--groups must be at least 2"):
        BlindMusicConfig(**given_settings(p.parse_args(["--groups", "1"]), BlindMusicConfig))

"""Part I models and their objective: gradients of the whole separation loss, output
constraints, separate()."""
import numpy as np
import pytest

from npvae.models.mnist import build_model
from npvae.tasks.mnist.objective import SeparationObjective

TINY = {"dense": dict(hidden=(6, 5), latent_dim=3), "conv": dict(channels=(2, 3), hidden=5, latent_dim=2),
        "unet": dict(channels=(2, 2, 3), latent_dim=2), "unet-blocks2": dict(channels=(2, 3, 3), latent_dim=2, blocks=2),
        "vae": dict(channels=(2, 2, 3), latent_dim=2, blocks=1), "vae-14": dict(channels=(2, 3), latent_dim=1)}


def pairs(rng, n=3):
    d, f = rng.uniform(size=(n, 28, 28)), rng.uniform(size=(n, 28, 28))
    d[d < 0.5] = 0
    f[f < 0.6] = 0
    return d, f


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("output,recon,rule", [("sources", "bce", "average"), ("sources", "mse", "sum"),
                                               ("split", "bce", "average"), ("split", "l1", "sum"),
                                               ("split", "mse", "average")])
def test_loss_gradient_for_every_parameter(rng, name, output, recon, rule):
    """Directional centred differences (float64) of the full loss along a random
    direction per parameter tensor, against the analytic gradient."""
    model = build_model(name.split("-")[0], rng=np.random.default_rng(1), dtype=np.float64, output=output, rule=rule,
                        **TINY[name])
    d, f = pairs(rng)
    m = (d + f) / 2 if rule == "average" else np.clip(d + f, 0, 1)

    objective = SeparationObjective(model, recon, mix_weight=0.8)

    def loss(backward=False):
        model.rng = np.random.default_rng(5)
        return objective.terms(m, d, f, beta=0.7, backward=backward)["total"]

    def agrees(p, g, v, h):
        p += h * v
        up = loss()
        p -= 2 * h * v
        down = loss()
        p += h * v
        numeric, analytic = (up - down) / (2 * h), float(np.sum(g * v))
        return abs(numeric - analytic) <= 1e-4 * max(abs(numeric) + abs(analytic), 1e-3)

    loss(backward=True)
    for path, p, g in model.named_parameters():
        v = np.random.default_rng(3).standard_normal(p.shape)
        # No one step suits every tensor: a leaky-ReLU, clip or L1 kink within +-h spoils a
        # large step, round-off on a large loss (BCE sums 784 pixels) a small one. A right
        # gradient agrees at one of three steps; a wrong one agrees at none.
        assert any(agrees(p, g, v, h) for h in (1e-5, 1e-6, 1e-7)), path


@pytest.mark.parametrize("name", sorted(TINY))
def test_split_output_mixes_back_exactly_and_stays_in_range(rng, name):
    model = build_model(name.split("-")[0], rng=rng, output="split", **TINY[name])
    d, f = pairs(rng, 4)
    m = ((d + f) / 2).astype(np.float32)
    digit, fashion, m_hat = model.separate(m)
    assert digit.shape == fashion.shape == m_hat.shape == (4, 28, 28)
    assert digit.min() >= 0 and digit.max() <= 1 and fashion.min() >= -1e-6 and fashion.max() <= 1 + 1e-6
    np.testing.assert_allclose(m_hat, m, atol=1e-6)


def test_separate_is_deterministic_and_batched(rng):
    model = build_model("dense", rng=rng, **TINY["dense"])
    m = rng.uniform(size=(7, 28, 28)).astype(np.float32)
    a = model.separate(m, batch_size=3)
    b = model.separate(m, batch_size=7)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(a[2], (a[0] + a[1]) / 2, atol=1e-6)
    assert model.training  # separate() restores the mode it found


@pytest.mark.parametrize("bad", [np.zeros((2, 784)), np.zeros((2, 1, 28, 28)), np.zeros((2, 28, 27))])
def test_wrong_input_shape_is_explained(rng, bad):
    model = build_model("dense", rng=rng, **TINY["dense"])
    with pytest.raises(ValueError, match=r"\(N, 28, 28\)"):
        model.separate(bad.astype(np.float32))


def test_bad_settings(rng):
    with pytest.raises(ValueError, match="unknown model"):
        build_model("transformer")
    with pytest.raises(ValueError, match="output"):
        build_model("dense", output="masks")
    model = build_model("dense", rng=rng, **TINY["dense"])
    with pytest.raises(ValueError, match="reconstruction loss"):
        SeparationObjective(model, "hinge")


def test_beta_zero_ignores_an_overflowing_kl(rng):
    """Beta 0 (the plain autoencoder): an overflowing KL is reported, not added (0 * inf = NaN)."""
    model = build_model("dense", rng=np.random.default_rng(1), **TINY["dense"])
    model.head.logvar.params["b"][:] = 100.0                 # exp(100) overflows float32
    d, f = pairs(rng)
    terms = SeparationObjective(model).terms((d + f) / 2, d, f, beta=0.0, sample=False)
    assert not np.isfinite(terms["kl"])
    assert np.isfinite(terms["total"])
    for path, p, g in model.named_parameters():
        assert np.all(np.isfinite(g)), path


# -- the U-Net's options: normalisation, pooling, dropout, residual levels, depth ------------
from npvae.files.model_file import load_model, save_model  # noqa: E402
from npvae.layers import LeakyReLU  # noqa: E402
from npvae.models.mnist import UNetSeparationVAE  # noqa: E402
from npvae.optim import Adam  # noqa: E402

OPTIONS = {"batch": dict(norm="batch"), "group-max": dict(norm="group", down="max"),
           "avg-dropout": dict(down="avg", dropout=0.3),
           "residual": dict(blocks=2, residual=True, norm="batch"),
           "four-levels": dict(channels=(2, 3, 3, 4), blocks=2, norm="batch", down="max"),
           "five-levels": dict(channels=(2, 2, 3, 3, 4))}


def unet(dtype=np.float32, **options):
    return UNetSeparationVAE(**{"channels": (2, 3, 4), "latent_dim": 2, **options},
                             rng=np.random.default_rng(1), dtype=dtype)


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_unet_option_gradients(rng, name):
    """The whole loss's gradient of every parameter of a U-Net with the option, in training
    mode (batch statistics, dropout masks redrawn alike for each evaluation)."""
    model = unet(np.float64, **OPTIONS[name])
    d, f = pairs(rng, 4)
    m = (d + f) / 2
    objective = SeparationObjective(model, "mse", mix_weight=0.8)

    def loss(backward=False):
        model.rng = np.random.default_rng(5)            # the latent's noise and the dropout masks
        return objective.terms(m, d, f, beta=0.7, backward=backward)["total"]

    loss(backward=True)
    for path, p, g in model.named_parameters():
        v = np.random.default_rng(3).standard_normal(p.shape)
        results = []
        for h in (1e-5, 1e-6, 1e-7):                     # one of three steps clears the kinks (see above)
            p += h * v
            up = loss()
            p -= 2 * h * v
            down = loss()
            p += h * v
            numeric, analytic = (up - down) / (2 * h), float(np.sum(g * v))
            results.append(abs(numeric - analytic) <= 1e-4 * max(abs(numeric) + abs(analytic), 1e-3))
        assert any(results), path


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_unet_option_trains_and_round_trips_through_a_model_file(rng, tmp_path, name):
    """One Adam step lowers the loss on its batch; the model file rebuilds the same model
    (running statistics included): the same separations in eval mode."""
    model = unet(**OPTIONS[name])
    d, f = pairs(rng, 8)
    d, f = d.astype(np.float32), f.astype(np.float32)
    m = (d + f) / 2
    objective = SeparationObjective(model, "bce")
    opt = Adam(model, lr=1e-3)

    def loss(backward=False):
        model.rng = np.random.default_rng(5)
        return objective.terms(m, d, f, beta=0.1, sample=False, backward=backward)["total"]

    before = loss(backward=True)
    opt.step()
    assert loss() < before
    for path, p, _ in model.named_parameters():
        assert np.all(np.isfinite(p)), path
    save_model(tmp_path / "model.h5", model, {"model": "unet"})
    loaded = load_model(tmp_path / "model.h5")
    assert loaded.spec() == model.spec()
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[key], value, err_msg=key)
    for a, b in zip(model.separate(m), loaded.separate(m)):
        np.testing.assert_array_equal(a, b)


def test_unet_dropout_is_off_in_eval_mode_and_drawn_from_the_models_generator(rng):
    model = unet(dropout=0.5)
    m = rng.uniform(size=(3, 28, 28)).astype(np.float32)
    model.eval()
    np.testing.assert_array_equal(model.forward(m), model.forward(m))
    model.train()
    draws = []
    for seed in (7, 7, 8):
        model.rng = np.random.default_rng(seed)
        draws.append(model.forward(m, sample=False))
    np.testing.assert_array_equal(draws[0], draws[1])
    assert not np.array_equal(draws[0], draws[2])


def test_old_unet_specs_build_the_old_model(rng):
    """A spec without the options (every shipped file's) builds the network drawn in the
    class docstring, with the parameter names and spec it always had."""
    spec = {"type": "UNetSeparationVAE", "latent_dim": 3, "output": "split", "rule": "average",
            "channels": [2, 3, 4], "blocks": 2}
    from npvae.layers import build_layer
    model = build_layer(spec, rng=np.random.default_rng(2))
    assert model.spec() == spec
    names = {"enc1", "enc2", "enc3", "head.mu", "head.logvar", "expand", "up2", "up1", "out",
             "enc1_2", "enc2_2", "up2_2", "up1_2"}
    assert set(model.state_dict()) == {f"{n}.{p}" for n in names for p in "Wb"}
    model.eval()
    x = rng.uniform(size=(2, 28, 28)).astype(np.float32)
    lrelu = LeakyReLU(0.2)
    layers = model.children()

    def level(name, h):
        return lrelu.forward(layers[f"{name}_2"].forward(lrelu.forward(layers[name].forward(h))))

    e1 = level("enc1", x[:, None])
    e2 = level("enc2", e1)
    e3 = lrelu.forward(layers["enc3"].forward(e2))
    mu = layers["head"].forward(e3.reshape(2, -1))[0]
    d3 = layers["expand"].forward(mu).reshape(2, 4, 7, 7)
    u2 = level("up2", np.concatenate([d3, e3], axis=1))
    u1 = level("up1", np.concatenate([u2, e2], axis=1))
    logits = layers["out"].forward(np.concatenate([u1, e1, x[:, None]], axis=1))
    model.forward(x)
    np.testing.assert_allclose(model.logits, logits, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs,match", [(dict(norm="layer"), "norm must be one of"),
                                          (dict(down="conv"), "down must be one of"),
                                          (dict(dropout=1.0), "dropout"),
                                          (dict(residual=True), "blocks >= 2"),
                                          (dict(channels=(2, 2, 2, 2, 2, 2)), "2 to 5")])
def test_unet_bad_options_are_explained(kwargs, match):
    with pytest.raises(ValueError, match=match):
        unet(**kwargs)


def test_unet_batchnorm_folds_into_its_convolutions_for_separation(rng):
    """fold_batchnorm takes every BatchNorm out of a copy (its convolutions absorb them):
    the copy separates as the model does in eval mode, to rounding; the model keeps its own."""
    from npvae.layers import fold_batchnorm
    model = unet(**OPTIONS["four-levels"], residual=True)
    d, f = pairs(rng, 8)
    m = ((d + f) / 2).astype(np.float32)
    objective = SeparationObjective(model, "bce")
    opt = Adam(model, lr=1e-2)
    for _ in range(3):                                   # running statistics away from 0 and 1
        objective.terms(m, d.astype(np.float32), f.astype(np.float32), beta=0.1)
        opt.step()
    model.eval()
    folded = fold_batchnorm(model)
    assert not folded.norms and len(model.norms) == 14
    np.testing.assert_allclose(folded.forward(m, sample=False), model.forward(m, sample=False), rtol=1e-5, atol=1e-6)

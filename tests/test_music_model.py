"""The spectrogram VAE and the spectral losses: gradients against finite differences."""
import numpy as np
import pytest

from npvae import build_layer, spectral_losses
from _gradcheck import numerical_gradient, rel_error
from npvae.models.music import SpectrogramUNetVAE


def tiny_model(dtype=np.float64, seed=0):
    return SpectrogramUNetVAE(channels=(2, 3, 4), latent_channels=2, kernel_size=3,
                              rng=np.random.default_rng(seed), dtype=dtype)


@pytest.mark.parametrize("training", [True, False])
def test_model_gradients_match_finite_differences(rng, training):
    model = tiny_model()
    model.train(training)
    x = rng.standard_normal((2, 1, 16, 8))
    r = rng.standard_normal((2, 2, 16, 8))
    a = rng.standard_normal((2, 2, 2, 1))       # extra gradients on mu and logvar (the KL's)
    b = rng.standard_normal((2, 2, 2, 1))
    c = rng.standard_normal((2, 2, 16, 8)) if training else None    # on the logits (training keeps them)

    def loss():
        model.rng = np.random.default_rng(7)    # the same eps in every evaluation
        y = model.forward(x)
        extra = float(np.sum(model.logits * c)) if training else 0.0
        return float(np.sum(y * r) + np.sum(model.mu * a) + np.sum(model.logvar * b)) + extra

    loss()
    dx = model.backward(r, a, b, dlogits=c)
    analytic = {path: g.copy() for path, _, g in model.named_parameters()}
    assert rel_error(dx, numerical_gradient(loss, x)) < 1e-6
    for path, p, _ in model.named_parameters():
        err = rel_error(analytic[path], numerical_gradient(loss, p))
        assert err < 1e-6, f"{path}: relative error {err:.2e}"


def test_logits_are_kept_in_training_only(rng):
    model = tiny_model()
    x = rng.standard_normal((1, 1, 16, 8))
    masks = model.forward(x)
    np.testing.assert_allclose(masks, 1 / (1 + np.exp(-model.logits)), rtol=1e-12)
    model.eval()
    model.forward(x)
    assert model.logits is None
    with pytest.raises(ValueError, match="training mode"):
        model.backward(np.ones_like(masks), dlogits=np.ones_like(masks))


def test_model_masks_shape_range_and_spec_round_trip(rng):
    model = SpectrogramUNetVAE(channels=(4, 4, 8), latent_channels=4, rng=rng)
    x = rng.standard_normal((3, 1, 32, 24)).astype(np.float32)
    model.eval()
    y = model.forward(x)
    assert y.shape == (3, 2, 32, 24) and y.dtype == np.float32
    assert np.all((y > 0) & (y < 1))
    assert model.mu.shape == (3, 4, 4, 3)
    twin = build_layer(model.spec())
    twin.load_state_dict(model.state_dict())
    twin.eval()
    np.testing.assert_array_equal(twin.forward(x), y)
    assert twin.spec() == model.spec()


def test_model_sampling_differs_from_posterior_mean(rng):
    model = tiny_model(np.float32)
    x = rng.standard_normal((1, 1, 16, 16)).astype(np.float32)
    mean = model.forward(x, sample=False)
    model.head.params["b"][2:] = 2.0             # large posterior variance
    sampled = model.forward(x, sample=True)
    assert not np.allclose(mean, sampled)


def test_model_rejects_sizes_not_divisible_by_8(rng):
    model = tiny_model(np.float32)
    with pytest.raises(ValueError, match="divisible by 8"):
        model.forward(np.zeros((1, 1, 16, 10), np.float32))
    with pytest.raises(ValueError, match="float64"):
        tiny_model(np.float32).forward(np.zeros((1, 1, 16, 16)))


CASES = [("l1", {}), ("l1", {"compression": "log"}), ("l1", {"compression": "power", "power": 0.5}),
         ("mse", {}), ("mse", {"compression": "log"}), ("mse", {"compression": "power", "power": 0.3}),
         ("generalized_kl", {}), ("generalized_kl", {"exponent": 2.0}),
         ("itakura_saito", {}), ("itakura_saito", {"exponent": 2.0})]


@pytest.mark.parametrize("name,kwargs", CASES)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_spectral_loss_gradients(rng, name, kwargs, reduction):
    fn = getattr(spectral_losses, name)
    target = rng.uniform(0.1, 2.0, (2, 3, 5))
    est = target * rng.uniform(0.5, 1.5, target.shape)   # away from |e - t| = 0 (l1's kink)
    value, grad = fn(est, target, reduction=reduction, **kwargs)
    assert grad.shape == est.shape and np.isfinite(value)
    num = numerical_gradient(lambda: fn(est, target, reduction=reduction, **kwargs)[0], est)
    assert rel_error(grad, num) < 1e-6


@pytest.mark.parametrize("name", ["l1", "mse", "kl", "is"])
def test_spectral_losses_are_zero_only_at_the_target(rng, name):
    fn = spectral_losses.get_loss(name)
    target = rng.uniform(0.0, 2.0, (4, 6)).astype(np.float32)
    value, grad = fn(target.copy(), target)
    assert abs(value) < 1e-6 and np.allclose(grad, 0, atol=1e-5)
    assert fn(target * 1.5, target)[0] > 1e-3
    assert fn(target * 1.5, target)[1].dtype == np.float32


def test_itakura_saito_is_scale_invariant_and_kl_is_not(rng):
    t = rng.uniform(0.5, 2.0, (10,))
    e = t * rng.uniform(0.5, 1.5, t.shape)
    is_, kl = spectral_losses.itakura_saito, spectral_losses.generalized_kl
    assert np.isclose(is_(e, t, eps=0)[0], is_(100 * e, 100 * t, eps=0)[0])
    assert not np.isclose(kl(e, t, eps=0)[0], kl(100 * e, 100 * t, eps=0)[0])


def test_get_loss_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown loss"):
        spectral_losses.get_loss("cross-entropy")
    with pytest.raises(ValueError, match="compression"):
        spectral_losses.l1(np.ones(3), np.ones(3), compression="sqrt")


# -- the U-Net's options: normalisation, pooling, dropout, residual blocks, recurrent bottleneck --
from npvae.files.model_file import read_model_file, save_model  # noqa: E402
from npvae.optim import Adam  # noqa: E402

OPTIONS = {"batch": dict(norm="batch"), "group-max": dict(norm="group", down="max"),
           "residual-avg-dropout": dict(residual=True, down="avg", dropout=0.3),
           "recurrent": dict(rnn_layers=2, rnn_hidden=4, freq_bins=16),
           "recurrent-batch": dict(rnn_layers=1, rnn_hidden=2, freq_bins=16, norm="batch", down="max")}


def option_model(name, dtype=np.float64):
    return SpectrogramUNetVAE(channels=(2, 3, 2), latent_channels=2, kernel_size=3, rng=np.random.default_rng(0),
                              dtype=dtype, **OPTIONS[name])


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_option_gradients_match_finite_differences(rng, name):
    """Training mode: batch statistics, dropout masks drawn alike for each evaluation."""
    model = option_model(name)
    x = rng.standard_normal((2, 1, 16, 8))
    r = rng.standard_normal((2, 2, 16, 8))
    a = rng.standard_normal((2, 2, 2, 1))

    def loss():
        model.rng = np.random.default_rng(7)    # the same eps and dropout masks in every evaluation
        return float(np.sum(model.forward(x) * r) + np.sum(model.mu * a))

    loss()
    dx = model.backward(r, a)
    analytic = {path: g.copy() for path, _, g in model.named_parameters()}
    assert rel_error(dx, numerical_gradient(loss, x)) < 1e-5
    for path, p, _ in model.named_parameters():
        numeric = numerical_gradient(loss, p)
        err = rel_error(analytic[path], numeric)
        # a bias followed by a BatchNorm has no effect: its gradient is 0 up to round-off
        assert err < 1e-5 or np.max(np.abs(analytic[path] - numeric)) < 1e-8, f"{path}: relative error {err:.2e}"


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_option_trains_and_round_trips_through_a_model_file(rng, tmp_path, name):
    """One Adam step lowers a loss on its batch; the model file rebuilds the same network
    (running statistics included): the same masks in eval mode."""
    model = option_model(name, np.float32)
    x = rng.standard_normal((4, 1, 16, 16)).astype(np.float32)
    target = rng.uniform(size=(4, 2, 16, 16)).astype(np.float32)
    opt = Adam(model, lr=1e-2)

    def loss(backward=False):
        model.rng = np.random.default_rng(7)
        y = model.forward(x)
        if backward:
            model.zero_grad()
            model.backward(2 * (y - target) / y.size)
        return float(np.mean((y - target) ** 2))

    before = loss(backward=True)
    opt.step()
    assert loss() < before
    save_model(tmp_path / "model.h5", model)
    loaded, _ = read_model_file(tmp_path / "model.h5")
    assert loaded.spec() == model.spec()
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[key], value, err_msg=key)
    model.eval()
    loaded.eval()
    np.testing.assert_array_equal(loaded.forward(x), model.forward(x))


def test_old_specs_build_the_old_network():
    """A spec without the options (every shipped file's) builds the layers it always did."""
    spec = {"type": "SpectrogramUNetVAE", "channels": [2, 3, 4], "latent_channels": 2, "n_sources": 2,
            "kernel_size": 3, "alpha": 0.2}
    model = build_layer(spec)
    assert model.spec() == spec
    assert set(model.state_dict()) == {f"{n}.{p}" for n in ("enc1", "enc2", "enc3", "head", "dec3", "dec2", "dec1")
                                       for p in "Wb"}
    assert [c.stride for c in model.encoders] == [(2, 2)] * 3
    assert model.context_frames == 48


def test_recurrent_bottleneck_sees_the_whole_excerpt(rng):
    """A change in the last frames moves the masks of the first ones through the LSTM; the
    convolutions alone (no recurrent bottleneck) do not reach that far."""
    x = rng.standard_normal((1, 1, 16, 64)).astype(np.float32)
    far = x.copy()
    far[..., -8:] += 1
    for layers, reaches in ((0, False), (1, True)):
        model = SpectrogramUNetVAE(channels=(2, 2, 2), latent_channels=2, kernel_size=3, rnn_layers=layers,
                                   rnn_hidden=4, freq_bins=16, rng=np.random.default_rng(0)).eval()
        moved = not np.array_equal(model.forward(x)[..., :8], model.forward(far)[..., :8])
        assert moved == reaches


@pytest.mark.parametrize("kwargs,match", [(dict(rnn_layers=1), "freq_bins"),
                                          (dict(rnn_layers=1, rnn_hidden=3, freq_bins=16), "even"),
                                          (dict(norm="instance"), "norm must be one of"),
                                          (dict(dropout=-0.1), "dropout")])
def test_bad_options_are_explained(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SpectrogramUNetVAE(channels=(2, 3, 2), **kwargs)


def test_recurrent_model_refuses_another_number_of_bins():
    model = option_model("recurrent", np.float32)
    with pytest.raises(ValueError, match="built for 16 frequency bins"):
        model.forward(np.zeros((1, 1, 32, 8), np.float32))


def test_batchnorm_folds_into_its_convolutions_for_separation(rng):
    """fold_batchnorm takes every BatchNorm out of a copy: the same masks in eval mode, to rounding."""
    from npvae.layers import fold_batchnorm
    model = SpectrogramUNetVAE(channels=(2, 3, 2), latent_channels=2, kernel_size=3, norm="batch", residual=True,
                               rng=np.random.default_rng(0))
    x = rng.standard_normal((4, 1, 16, 16)).astype(np.float32)
    for _ in range(3):                                   # running statistics away from 0 and 1
        y = model.forward(x)
        model.backward(np.ones_like(y))
    model.eval()
    folded = fold_batchnorm(model)
    assert not [k for k in folded.extra if k.endswith("_norm")] and len([k for k in model.extra if k.endswith("_norm")]) == 10
    np.testing.assert_allclose(folded.forward(x), model.forward(x), rtol=1e-5, atol=1e-6)

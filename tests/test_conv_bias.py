"""Conv2d and ConvTranspose2d without a bias (``bias=False``, as before a normalisation):
gradients, PyTorch parity in every algorithm and in inference, spec and model files,
BatchNorm folding, and the U-Net builders' convolutions before a norm."""
import json

import numpy as np
import pytest

import npvae
from npvae.files import h5mat
from _gradcheck import check_layer
from npvae.files.model_file import save_model
from npvae.layers import BatchNorm, Conv2d, ConvTranspose2d, LeakyReLU, Sequential, build_layer, conv_algos, inference
from npvae.layers.fold import fold_batchnorm
from npvae.files.modelcheck import param_shapes
from npvae.models.mnist import UNetSeparationVAE
from npvae.models.music import SpectrogramUNetVAE

ALGOS = [a for a in conv_algos.ALGORITHMS if a != "cin1"]   # cin1: one input channel, in test_conv_algos.py


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NPVAE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("NPVAE_CONV_ALGO", raising=False)
    monkeypatch.setattr(conv_algos, "_chosen", {})


def _layers(rng, dtype):
    return {"conv": Conv2d(3, 4, 3, padding=1, bias=False, rng=rng, dtype=dtype),
            "conv_strided": Conv2d(3, 4, 4, stride=2, padding=1, bias=False, rng=rng, dtype=dtype),
            "convT": ConvTranspose2d(3, 4, 4, stride=2, padding=1, output_padding=1, bias=False, rng=rng,
                                     dtype=dtype)}


def test_no_bias_parameter_and_the_same_weights(rng):
    for name, layer in _layers(np.random.default_rng(3), np.float32).items():
        assert list(layer.params) == ["W"] and list(layer.grads) == ["W"], name
    # W is drawn as with a bias (the bias comes after it)
    with_bias = Conv2d(3, 4, 3, padding=1, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(_layers(np.random.default_rng(3), np.float32)["conv"].params["W"],
                                  with_bias.params["W"])
    with pytest.raises(ValueError, match="bias must be True or False"):
        Conv2d(3, 4, 3, bias="no")


@pytest.mark.parametrize("algo", ALGOS)
def test_conv_gradients_float64(rng, monkeypatch, algo):
    monkeypatch.setenv("NPVAE_CONV_ALGO", algo)
    layer = _layers(rng, np.float64)["conv"]
    errors = check_layer(layer, rng.standard_normal((2, 3, 6, 5)), rng)
    assert layer.algorithm == algo
    assert set(errors) == {"x", "W"} and max(errors.values()) < 1e-7, errors


@pytest.mark.parametrize("name", ["conv_strided", "convT"])
def test_strided_and_transposed_gradients_float64(rng, name):
    errors = check_layer(_layers(rng, np.float64)[name], rng.standard_normal((2, 3, 6, 5)), rng)
    assert set(errors) == {"x", "W"} and max(errors.values()) < 1e-7, errors


def _torch_twin(torch, name, layer):
    if name == "convT":
        twin = torch.nn.ConvTranspose2d(3, 4, 4, stride=2, padding=1, output_padding=1, bias=False)
    else:
        twin = torch.nn.Conv2d(3, 4, *layer.kernel_size[:1], stride=layer.stride, padding=layer.padding, bias=False)
    with torch.no_grad():
        twin.weight.copy_(torch.tensor(layer.params["W"]))
    assert twin.bias is None
    return twin


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("name", ["conv", "conv_strided", "convT"])
def test_equals_torch_without_bias_float32(rng, monkeypatch, algo, name):
    torch = pytest.importorskip("torch")
    monkeypatch.setenv("NPVAE_CONV_ALGO", algo)      # a layer that cannot run it uses im2col
    layer = _layers(rng, np.float32)[name]
    twin = _torch_twin(torch, name, layer)
    x = rng.standard_normal((3, 3, 8, 7)).astype(np.float32)
    y = layer.forward(x)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = layer.backward(dy)
    tx = torch.tensor(x, requires_grad=True)
    ty = twin(tx)
    ty.backward(torch.tensor(dy))
    for what, a, t in (("y", y, ty), ("dx", dx, tx.grad), ("dW", layer.grads["W"], twin.weight.grad)):
        t = t.detach().numpy()
        assert np.abs(a - t).max() <= 3e-5 * max(1.0, np.abs(t).max()), what
    # inference, with the activation fused where the algorithm adds the bias
    act = LeakyReLU(0.2)
    with inference():
        fused = layer.forward(x, act=act)
    want = torch.nn.functional.leaky_relu(ty, 0.2).detach().numpy()
    assert np.abs(fused - want).max() <= 3e-5 * max(1.0, np.abs(want).max())


def test_spec_names_bias_only_when_false(rng):
    for layer in _layers(rng, np.float32).values():
        spec = layer.spec()
        assert spec["bias"] is False
        rebuilt = build_layer(json.loads(json.dumps(spec)))
        assert list(rebuilt.params) == ["W"] and rebuilt.spec() == spec
        assert set(param_shapes(spec)) == {"W"}
    assert "bias" not in Conv2d(3, 4, 3).spec() and "bias" not in ConvTranspose2d(3, 4, 3).spec()
    assert set(param_shapes(Conv2d(3, 4, 3).spec())) == {"W", "b"}


def test_model_file_round_trip_and_a_bias_the_spec_does_not_have(tmp_path, rng):
    model = Sequential(Conv2d(2, 3, 3, padding=1, bias=False, rng=rng), BatchNorm(3), LeakyReLU(0.2),
                       ConvTranspose2d(3, 2, 4, stride=2, padding=1, bias=False, rng=rng))
    save_model(tmp_path / "m.h5", model)
    loaded = npvae.load_model(tmp_path / "m.h5")
    assert sorted(loaded.state_dict()) == sorted(model.state_dict()) and "0.b" not in model.state_dict()
    x = rng.standard_normal((2, 2, 5, 6)).astype(np.float32)
    np.testing.assert_array_equal(loaded.forward(x), model.eval().forward(x))
    # a spec that says "bias": true where the file has no b is refused before anything is built
    tree = h5mat.read_tree(tmp_path / "m.h5")
    spec = json.loads(tree["model"]["spec"])
    spec["layers"][0]["bias"] = True
    tree["model"]["spec"] = json.dumps(spec)
    h5mat.write_tree(tmp_path / "edited.h5", tree, kind="model")
    with pytest.raises(ValueError, match=r"0\.b"):
        npvae.load_model(tmp_path / "edited.h5")


@pytest.mark.parametrize("conv", ["conv", "convT"])
def test_folding_into_a_conv_without_bias_creates_its_bias(rng, conv):
    layer = _layers(rng, np.float32)[conv]
    bn = BatchNorm(4)
    bn.params["beta"][:] = rng.standard_normal(4)
    bn.buffers["running_mean"][:] = rng.standard_normal(4)
    model = Sequential(layer, bn, LeakyReLU(0.2))
    folded = fold_batchnorm(model)
    assert "b" in folded.layers[0].params and "b" not in layer.params        # the original is left as it was
    x = rng.standard_normal((2, 3, 6, 5)).astype(np.float32)
    np.testing.assert_allclose(folded.forward(x), model.eval().forward(x), rtol=1e-5, atol=1e-5)


def _biases(model):
    return {k[:-2] for k in model.state_dict() if k.endswith(".b")}


@pytest.mark.parametrize("norm", ["batch", "group"])
def test_unet_convolutions_before_a_norm_have_no_bias(norm):
    model = UNetSeparationVAE(channels=(2, 3, 4), blocks=2, norm=norm, down="max", groups=2)
    assert _biases(model) == {"head.mu", "head.logvar", "expand", "out"}
    assert model.spec()["norm_bias"] is False
    music = SpectrogramUNetVAE((2, 4), latent_channels=2, kernel_size=3, norm=norm, residual=True, groups=2)
    assert _biases(music) == {"head", "dec1"}


def test_unet_defaults_and_specs_written_before_the_option_keep_their_biases():
    plain = UNetSeparationVAE(channels=(2, 3, 4))
    assert "norm_bias" not in plain.spec() and "enc1" in _biases(plain) and "up1" in _biases(plain)
    assert "norm_bias" not in SpectrogramUNetVAE((2, 4)).spec()
    for model in (UNetSeparationVAE(channels=(2, 3, 4), norm="batch"), SpectrogramUNetVAE((2, 4), norm="group")):
        old = {k: v for k, v in model.spec().items() if k != "norm_bias"}
        rebuilt = build_layer(old)
        assert rebuilt.norm_bias and "enc1" in _biases(rebuilt)
        assert set(param_shapes(old)) == set(rebuilt.state_dict())
        assert set(param_shapes(model.spec())) == set(model.state_dict())
        assert build_layer(model.spec()).spec() == model.spec()


def test_unet_model_file_round_trip_without_biases(tmp_path, rng):
    model = UNetSeparationVAE(latent_dim=3, channels=(2, 3), norm="batch", rng=rng)
    mixtures = rng.random((3, 28, 28), dtype=np.float32)
    model.backward(np.ones_like(model.forward(mixtures)))     # running statistics away from 0 and 1
    save_model(tmp_path / "u.h5", model)
    loaded = npvae.load_model(tmp_path / "u.h5")
    assert "enc1.b" not in loaded.state_dict()
    for got, want in zip(loaded.separate(mixtures), model.eval().separate(mixtures)):
        np.testing.assert_array_equal(got, want)


def test_a_bad_norm_bias_is_explained():
    for build in (lambda: UNetSeparationVAE(norm="batch", norm_bias="yes"),
                  lambda: SpectrogramUNetVAE((2, 4), norm_bias=1)):
        with pytest.raises(ValueError, match="norm_bias .* must be True or False"):
            build()
    for spec in ({**UNetSeparationVAE(channels=(2, 3)).spec(), "norm_bias": "yes"},
                 {**SpectrogramUNetVAE((2, 4), norm="batch").spec(), "norm_bias": None}):
        with pytest.raises(ValueError, match="norm_bias must be true or false"):
            param_shapes(spec)

"""Finite-difference gradient checks (float64, centred differences) for every layer."""
import numpy as np
import pytest

import npvae
from _gradcheck import check_layer

TOL = 1e-6
F64 = np.float64


def assert_gradients(layer, x, rng):
    errors = check_layer(layer, x, rng)
    assert set(errors) == {"x", *layer.params}
    for name, err in errors.items():
        assert err < TOL, f"{layer!r}: gradient of {name} has relative error {err:.2e}"


@pytest.mark.parametrize("activation", [None, "relu", "leaky_relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("n,fin,fout", [(1, 3, 2), (4, 7, 5)])
def test_dense(rng, activation, n, fin, fout):
    layer = npvae.Dense(fin, fout, activation=activation, alpha=0.1, rng=rng, dtype=F64)
    assert_gradients(layer, rng.standard_normal((n, fin)), rng)


CONV_CASES = [  # in, out, kernel, stride, padding, input (H, W)
    (1, 1, 3, 1, 0, (5, 5)),
    (2, 3, 3, 1, 1, (6, 5)),
    (3, 2, 3, 2, 1, (7, 8)),
    (2, 2, (2, 3), (2, 1), (0, 2), (6, 5)),
    (1, 4, 5, 2, 2, (9, 9)),
    (2, 3, 4, 3, 0, (10, 7)),
    (3, 2, 3, 1, 1, (6, 5)),            # stride 1, <= 2 outputs: the direct kernels
    (4, 1, (2, 3), 1, (1, 0), (5, 6)),
]


@pytest.mark.parametrize("cin,cout,k,s,p,hw", CONV_CASES)
def test_conv2d(rng, cin, cout, k, s, p, hw):
    layer = npvae.Conv2d(cin, cout, k, stride=s, padding=p, rng=rng, dtype=F64)
    assert_gradients(layer, rng.standard_normal((2, cin, *hw)), rng)


CONVT_CASES = [  # in, out, kernel, stride, padding, output_padding, input (H, W)
    (1, 1, 3, 1, 0, 0, (3, 3)),
    (2, 3, 3, 2, 1, 1, (4, 3)),
    (3, 2, 4, 2, 1, 0, (3, 4)),
    (2, 2, (3, 2), (2, 3), (1, 0), (0, 2), (3, 3)),
    (1, 2, 5, 2, 2, 1, (4, 4)),
]


@pytest.mark.parametrize("cin,cout,k,s,p,op,hw", CONVT_CASES)
def test_conv_transpose2d(rng, cin, cout, k, s, p, op, hw):
    layer = npvae.ConvTranspose2d(cin, cout, k, stride=s, padding=p, output_padding=op, rng=rng, dtype=F64)
    assert_gradients(layer, rng.standard_normal((2, cin, *hw)), rng)


@pytest.mark.parametrize("layer", [npvae.ReLU(), npvae.LeakyReLU(0.2), npvae.LeakyReLU(-0.3), npvae.Sigmoid(), npvae.Tanh(),
                                   npvae.Softplus(), npvae.Identity(), npvae.Flatten()],
                         ids=lambda l: type(l).__name__)
def test_elementwise_and_flatten(rng, layer):
    x = rng.standard_normal((3, 2, 4))
    x[np.abs(x) < 1e-3] = 0.5  # keep away from the ReLU kink, where the derivative is undefined
    assert_gradients(layer, x, rng)


def test_reshape(rng):
    assert_gradients(npvae.Reshape((2, 3)), rng.standard_normal((4, 6)), rng)


def test_sequential_conv_stack(rng):
    model = npvae.Sequential(
        npvae.Conv2d(1, 3, 3, stride=2, padding=1, rng=rng, dtype=F64), npvae.LeakyReLU(0.1),
        npvae.ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1, rng=rng, dtype=F64),
        npvae.Tanh(), npvae.Flatten(), npvae.Dense(2 * 6 * 6, 3, activation="sigmoid", rng=rng, dtype=F64))
    errors = check_layer(model, rng.standard_normal((2, 1, 6, 6)), rng)
    assert errors["x"] < TOL
    # Sequential has no own params; check every child's through the whole chain
    params = list(model.named_parameters())
    assert [p for p, _, _ in params] == ["0.W", "0.b", "2.W", "2.b", "5.W", "5.b"]
    from _gradcheck import numerical_gradient, rel_error
    x = rng.standard_normal((2, 1, 6, 6))
    r = rng.standard_normal((2, 3))
    model.forward(x)
    model.backward(r)
    for path, p, g in params:
        num = numerical_gradient(lambda: float(np.sum(model.forward(x) * r)), p)
        assert rel_error(g, num) < TOL, path


def test_float32_layers_keep_float32(rng):
    x = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
    model = npvae.Sequential(npvae.Conv2d(1, 4, 3, stride=2, padding=1, rng=rng), npvae.ReLU(),
                             npvae.ConvTranspose2d(4, 1, 4, stride=2, padding=1, rng=rng), npvae.Sigmoid(),
                             npvae.Flatten(), npvae.Dense(64, 8, activation="tanh", rng=rng))
    y = model.forward(x)
    assert y.dtype == np.float32
    dx = model.backward(np.ones_like(y))
    assert dx.dtype == np.float32
    assert all(g.dtype == np.float32 for _, _, g in model.named_parameters())

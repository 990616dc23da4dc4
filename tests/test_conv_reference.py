"""Conv2d against a direct nested-loop convolution; ConvTranspose2d as its adjoint."""
import numpy as np
import pytest

import npvae


def direct_conv2d(x, w, b, stride, padding):
    """The textbook definition, one output element at a time."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    (sh, sw), (ph, pw) = stride, padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    oh, ow = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    y = np.zeros((n, o, oh, ow))
    for ni in range(n):
        for oi in range(o):
            for i in range(oh):
                for j in range(ow):
                    patch = xp[ni, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
                    y[ni, oi, i, j] = np.sum(patch * w[oi]) + b[oi]
    return y


@pytest.mark.parametrize("k,s,p,hw", [(3, (1, 1), (0, 0), (5, 6)), (3, (2, 2), (1, 1), (7, 7)),
                                      ((2, 4), (1, 2), (1, 0), (6, 9)), (5, (3, 2), (2, 1), (11, 8))])
def test_conv2d_matches_direct_loop(rng, k, s, p, hw):
    layer = npvae.Conv2d(3, 4, k, stride=s, padding=p, rng=rng, dtype=np.float64)
    x = rng.standard_normal((2, 3, *hw))
    expected = direct_conv2d(x, layer.params["W"], layer.params["b"], s, p)
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k,s,p,op,hw", [(3, 1, 0, 0, (5, 5)), (3, 2, 1, 1, (4, 6)), (4, 2, 1, 0, (3, 3)),
                                         ((5, 3), (2, 3), (2, 1), (1, 2), (4, 3))])
def test_conv_transpose_is_adjoint_of_conv(rng, k, s, p, op, hw):
    """<conv(x), y> == <x, convT(y)> with shared weights and zero biases."""
    cin, cout = 3, 2
    convt = npvae.ConvTranspose2d(cin, cout, k, stride=s, padding=p, output_padding=op, rng=rng, dtype=np.float64)
    conv = npvae.Conv2d(cout, cin, k, stride=s, padding=p, rng=rng, dtype=np.float64)
    conv.params["W"][...] = convt.params["W"]  # (in, out, kh, kw) of convT is (out, in, kh, kw) of conv
    conv.params["b"][...] = 0
    convt.params["b"][...] = 0
    y = rng.standard_normal((2, cin, *hw))
    out = convt.forward(y)
    x = rng.standard_normal(out.shape)
    assert conv.forward(x).shape == y.shape
    lhs = np.sum(conv.forward(x) * y)
    rhs = np.sum(x * out)
    assert abs(lhs - rhs) < 1e-10 * max(1.0, abs(lhs))


def test_conv_transpose_output_size_matches_pytorch_formula(rng):
    layer = npvae.ConvTranspose2d(1, 1, 5, stride=2, padding=2, output_padding=1, rng=rng)
    y = layer.forward(np.zeros((1, 1, 7, 4), np.float32))
    assert y.shape == (1, 1, (7 - 1) * 2 - 4 + 5 + 1, (4 - 1) * 2 - 4 + 5 + 1)


def test_against_pytorch_when_installed(rng):
    torch = pytest.importorskip("torch")
    conv = npvae.Conv2d(3, 5, 3, stride=2, padding=1, rng=rng, dtype=np.float64)
    convt = npvae.ConvTranspose2d(5, 2, 4, stride=2, padding=1, output_padding=1, rng=rng, dtype=np.float64)
    x = rng.standard_normal((2, 3, 9, 8))
    tx = torch.tensor(x)
    ty = torch.nn.functional.conv2d(tx, torch.tensor(conv.params["W"]), torch.tensor(conv.params["b"]),
                                    stride=2, padding=1)
    np.testing.assert_allclose(conv.forward(x), ty.numpy(), rtol=1e-10, atol=1e-10)
    tz = torch.nn.functional.conv_transpose2d(ty, torch.tensor(convt.params["W"]), torch.tensor(convt.params["b"]),
                                              stride=2, padding=1, output_padding=1)
    np.testing.assert_allclose(convt.forward(conv.forward(x)), tz.numpy(), rtol=1e-10, atol=1e-10)

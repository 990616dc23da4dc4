"""Conv2d against a direct nested-loop convolution; ConvTranspose2d as its adjoint."""
import numpy as np
import pytest

from npvae import kernels
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
@pytest.mark.parametrize("out_channels", [4, 1, 2])     # 1 and 2 at stride 1: the direct kernels
def test_conv2d_matches_direct_loop(rng, k, s, p, hw, out_channels):
    layer = npvae.Conv2d(3, out_channels, k, stride=s, padding=p, rng=rng, dtype=np.float64)
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


@pytest.mark.parametrize("backend", kernels.available_backends())
def test_direct_conv_against_pytorch_float32(rng, backend):
    """The U-Net's last layer (33 -> 1 channels, 3x3, stride 1): the direct kernels in
    float32, forward and every gradient, against PyTorch."""
    torch = pytest.importorskip("torch")
    original = kernels.backend()
    kernels.set_backend(backend)
    try:
        layer = npvae.Conv2d(33, 1, 3, padding=1, rng=rng)
        x = rng.standard_normal((6, 33, 28, 28)).astype(np.float32)
        y = layer.forward(x)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        dx = layer.backward(dy)
    finally:
        kernels.set_backend(original)
    tx = torch.tensor(x, requires_grad=True)
    tw, tb = (torch.tensor(layer.params[k], requires_grad=True) for k in ("W", "b"))
    ty = torch.nn.functional.conv2d(tx, tw, tb, padding=1)
    ty.backward(torch.tensor(dy))
    for ours, theirs in [(y, ty), (dx, tx.grad), (layer.grads["W"], tw.grad), (layer.grads["b"], tb.grad)]:
        theirs = theirs.detach().numpy()
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max())


@pytest.mark.parametrize("layer_type", [npvae.Conv2d, npvae.ConvTranspose2d, "direct"])
@pytest.mark.parametrize("backend", kernels.available_backends())
def test_chunked_batch_equals_one_chunk(rng, monkeypatch, layer_type, backend):
    """Processing a batch a few samples at a time (uneven last chunk), on one thread or
    several, changes nothing."""
    from npvae.layers import conv
    original = kernels.backend()
    kernels.set_backend(backend)
    try:
        kwargs = {"output_padding": 1} if layer_type is npvae.ConvTranspose2d else {}
        if layer_type == "direct":    # stride 1, two outputs: chunks of samples per thread
            layer = npvae.Conv2d(3, 2, 3, padding=1, rng=rng, dtype=np.float64)
        else:
            layer = layer_type(3, 4, 5, stride=2, padding=2, rng=rng, dtype=np.float64, **kwargs)
        x = rng.standard_normal((5, 3, 9, 7))
        results = []
        # Columns per sample: (C*25 rows) x (conv output pixels) float64s.
        per_sample = (3 * 25 * 5 * 4 if layer_type is npvae.Conv2d else 4 * 25 * 9 * 7) * 8
        for threads, chunk_bytes in [("1", 1 << 30), ("1", 1), ("3", 1), ("2", 2 * per_sample)]:
            monkeypatch.setenv("NPVAE_NUM_THREADS", threads)     # chunks: 1 of 5; 5 of 1; 2, 2, 1
            monkeypatch.setattr(conv, "CHUNK_BYTES", chunk_bytes)
            y = layer.forward(x)
            dy = rng.standard_normal(y.shape) if not results else results[0][3]
            dx = layer.backward(dy)
            results.append((y, dx, {k: g.copy() for k, g in layer.grads.items()}, dy))
        y1, dx1, g1, _ = results[0]
        for y2, dx2, g2, _ in results[1:]:
            np.testing.assert_allclose(y2, y1, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(dx2, dx1, rtol=1e-12, atol=1e-12)
            for k in g1:
                np.testing.assert_allclose(g2[k], g1[k], rtol=1e-12, atol=1e-12, err_msg=k)
    finally:
        kernels.set_backend(original)

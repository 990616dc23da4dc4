"""Every Numba kernel against its NumPy twin, in float32 and float64."""
import numpy as np
import pytest

from npvae import kernels
from npvae.kernels import numpy_kernels as ref

numba_kernels = pytest.importorskip("npvae.kernels.numba_kernels")
DTYPES = [np.float32, np.float64]


@pytest.fixture(autouse=True, params=["small-array paths", "large-array paths", "long-row paths"])
def kernel_path(request, monkeypatch):
    """Every test runs three times: as the Numba backend treats small arrays (serial
    element-wise kernels, im2col by gather), as it treats large ones (parallel
    kernels, im2col by NumPy's strided copy), and as it treats long output rows
    (im2col and col2im through the column-phase split) and large planes (max-pool
    backward zeroing a row of windows at a time, or writing 2-wide windows' pixel pairs)."""
    if request.param == "large-array paths":
        monkeypatch.setattr(numba_kernels, "PARALLEL_MIN_SIZE", 0)
        monkeypatch.setattr(numba_kernels, "GATHER_MAX_TAPS", 0)
    if request.param == "long-row paths":
        monkeypatch.setattr(numba_kernels, "PHASE_MIN_ROW", 1)
        monkeypatch.setattr(numba_kernels, "L1_PLANE", 0)
        monkeypatch.setattr(numba_kernels, "PAIRS_MIN_ROW", 1)
    return request.param


def close(a, b, dtype):
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geom", [(3, 3, 1, 1, 0, 0), (3, 3, 2, 2, 1, 1), (2, 5, 1, 3, 0, 2), (5, 5, 2, 2, 2, 2),
                                  (4, 4, 2, 2, 1, 1), (3, 2, 3, 2, 3, 1), (1, 1, 1, 1, 0, 0), (2, 3, 1, 4, 0, 5)])
def test_im2col_col2im(rng, dtype, geom):
    x = rng.standard_normal((2, 3, 9, 10)).astype(dtype)
    cols = ref.im2col(x, *geom)
    # im2col only copies, and col2im adds the taps in the twin's order: equal bit for bit
    np.testing.assert_array_equal(numba_kernels.im2col(x, *geom), cols)
    np.testing.assert_array_equal(numba_kernels.col2im(cols, x.shape, *geom), ref.col2im(cols, x.shape, *geom))
    out = np.full(x.shape, np.nan, dtype)
    assert numba_kernels.col2im(cols, x.shape, *geom, out=out) is out
    np.testing.assert_array_equal(out, ref.col2im(cols, x.shape, *geom))
    x.flags.writeable = False            # a layer's input may be read-only (a loaded or shared array)
    np.testing.assert_array_equal(numba_kernels.im2col(x, *geom), cols)


def test_col2im_is_adjoint_of_im2col(rng):
    x = rng.standard_normal((2, 2, 7, 6))
    geom = (3, 2, 2, 1, 1, 1)
    cols = rng.standard_normal(ref.im2col(x, *geom).shape)
    for k in (ref, numba_kernels):
        assert np.sum(k.im2col(x, *geom) * cols) == pytest.approx(np.sum(x * k.col2im(cols, x.shape, *geom)))


DIRECT_GEOMS = [  # n, c, o, (h, w), (kh, kw), (ph, pw)
    (3, 4, 1, (9, 10), (3, 3), (1, 1)),
    (2, 3, 2, (8, 7), (5, 5), (2, 2)),
    (2, 5, 2, (6, 9), (2, 4), (0, 1)),
    (1, 1, 1, (4, 3), (3, 3), (2, 2)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,c,o,hw,k,pad", DIRECT_GEOMS)
def test_direct_conv(rng, dtype, n, c, o, hw, k, pad):
    x = rng.standard_normal((n, c, *hw)).astype(dtype)
    w = rng.standard_normal((o, c, *k)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    oh, ow = (ref.conv_output_size(hw[d], k[d], 1, pad[d]) for d in (0, 1))
    y_ref = ref.conv_direct_forward(x, w, b, 1, 1, *pad, out=np.empty((n, o, oh, ow), dtype))
    y_nb = numba_kernels.conv_direct_forward(x, w, b, 1, 1, *pad, out=np.full((n, o, oh, ow), np.nan, dtype))
    close(y_nb, y_ref, dtype)
    dy = rng.standard_normal(y_ref.shape).astype(dtype)
    grads = []
    for k_ in (ref, numba_kernels):
        dw, dx = np.full(w.shape, np.nan, dtype), np.full(x.shape, np.nan, dtype)
        k_.conv_direct_backward(x, w, dy, 1, 1, *pad, dw, dx)
        dw_only = np.full(w.shape, np.nan, dtype)
        k_.conv_direct_backward(x, w, dy, 1, 1, *pad, dw_only)
        np.testing.assert_array_equal(dw_only, dw)
        grads.append((dw, dx))
    for a, b_ in zip(*grads):
        close(b_, a, dtype)
    # the forward through im2col, the definition the twins share
    cols = ref.im2col(x, *k, 1, 1, *pad)
    expected = (w.reshape(o, -1) @ cols).reshape(o, n, oh, ow).transpose(1, 0, 2, 3) + b[:, None, None]
    close(y_nb, expected, dtype)


TILED_GEOMS = [  # n, c, o, (h, w), (kh, kw), (sh, sw), (ph, pw)
    (3, 5, 16, (11, 13), (4, 4), (2, 2), (1, 1)),
    (2, 3, 9, (9, 8), (5, 5), (2, 2), (2, 2)),
    (2, 4, 7, (10, 11), (3, 3), (3, 3), (0, 0)),
    (1, 8, 24, (12, 7), (3, 3), (2, 2), (2, 2)),
    (5, 2, 33, (6, 9), (5, 5), (3, 3), (1, 1)),
    (2, 6, 5, (9, 9), (4, 3), (2, 3), (0, 2)),    # unequal kernel, stride and padding
    (2, 3, 10, (10, 9), (3, 4), (3, 2), (1, 0)),
    (3, 3, 17, (7, 8), (3, 3), (1, 1), (1, 1)),   # stride 1 runs too
    (1, 1, 1, (5, 5), (5, 5), (2, 2), (0, 0)),    # a single output pixel
    (2, 3, 4, (8, 9), (2, 2), (3, 3), (1, 1)),    # a kernel smaller than the stride
    (3, 2, 9, (7, 8), (1, 1), (2, 2), (0, 0)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chunk", ["default", "one sample", "two samples"])
@pytest.mark.parametrize("n,c,o,hw,k,s,pad", TILED_GEOMS)
def test_tiled_conv(rng, monkeypatch, dtype, chunk, n, c, o, hw, k, s, pad):
    """The register-tiled forward and weight gradient against their twins, with the
    samples in one chunk, one per chunk, or two per chunk (a last, smaller chunk when n
    is odd)."""
    if chunk != "default":
        hq, wq = (-(-(hw[d] + 2 * pad[d]) // s[d]) for d in (0, 1))
        per_sample = c * s[0] * s[1] * hq * wq * np.dtype(dtype).itemsize
        monkeypatch.setattr(numba_kernels, "TILED_CHUNK_BYTES", per_sample * (1 if chunk == "one sample" else 2))
    x = rng.standard_normal((n, c, *hw)).astype(dtype)
    w = rng.standard_normal((o, c, *k)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    shape = (n, o, *(ref.conv_output_size(hw[d], k[d], s[d], pad[d]) for d in (0, 1)))
    y_ref = ref.conv_tiled_forward(x, w, b, *s, *pad, out=np.empty(shape, dtype))
    out = np.full(shape, np.nan, dtype)
    assert numba_kernels.conv_tiled_forward(x, w, b, *s, *pad, out=out) is out
    assert out.dtype == dtype
    close(out, y_ref, dtype)
    x.flags.writeable = False
    close(numba_kernels.conv_tiled_forward(x, w, b, *s, *pad, out=np.empty(shape, dtype)), y_ref, dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    dw_ref = ref.conv_tiled_weight_grad(x, dy, *s, *pad, np.empty(w.shape, dtype))
    dw = np.full(w.shape, np.nan, dtype)
    assert numba_kernels.conv_tiled_weight_grad(x, dy, *s, *pad, dw) is dw
    close(dw, dw_ref, dtype)


CIN1_GEOMS = [  # n, o, (h, w), (kh, kw), (sh, sw), (ph, pw)
    (3, 16, (28, 28), (3, 3), (1, 1), (1, 1)),
    (2, 24, (37, 35), (5, 5), (2, 2), (2, 2)),
    (5, 9, (20, 19), (3, 3), (2, 2), (1, 1)),     # channels that are no whole tile
    (4, 17, (33, 40), (4, 4), (2, 2), (1, 1)),
    (2, 5, (30, 50), (7, 7), (1, 1), (3, 3)),
    (3, 6, (19, 45), (2, 5), (1, 2), (0, 2)),     # unequal kernel, stride and padding
    (2, 4, (23, 61), (3, 3), (3, 3), (1, 1)),     # stride 3
    (2, 3, (31, 50), (1, 1), (2, 2), (0, 0)),     # input columns no tap reaches
    (3, 8, (9, 11), (3, 3), (1, 1), (1, 1)),      # output rows narrower than a vector
    (1, 1, (6, 40), (5, 5), (1, 1), (0, 0)),      # one output channel, two rows
]


def close_to_max(a, b, dtype):
    """``close`` with the absolute tolerance scaled by the largest value: sums over many
    pixels cancel to small values with the rounding of the large ones."""
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * np.abs(b).max())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chunk", ["default", "one sample", "two samples"])
@pytest.mark.parametrize("n,o,hw,k,s,pad", CIN1_GEOMS)
def test_cin1_conv(rng, monkeypatch, dtype, chunk, n, o, hw, k, s, pad):
    """The one-input-channel forward, weight and bias gradients and input gradient against
    their twins, with the samples in one chunk, one per chunk, or two per chunk."""
    if chunk != "default":
        hq, wq = (-(-(hw[d] + 2 * pad[d]) // s[d]) for d in (0, 1))
        per_sample = s[0] * s[1] * hq * wq * np.dtype(dtype).itemsize
        monkeypatch.setattr(numba_kernels, "CIN1_CHUNK_BYTES", per_sample * (1 if chunk == "one sample" else 2))
    x = rng.standard_normal((n, 1, *hw)).astype(dtype)
    w = rng.standard_normal((o, 1, *k)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    shape = (n, o, *(ref.conv_output_size(hw[d], k[d], s[d], pad[d]) for d in (0, 1)))
    y_ref = ref.conv_cin1_forward(x, w, b, *s, *pad, out=np.empty(shape, dtype))
    close_to_max(y_ref, ref.conv_direct_forward(x, w, b, *s, *pad, out=np.empty(shape, dtype)), dtype)
    out = np.full(shape, np.nan, dtype)
    x.flags.writeable = False            # a layer's input may be read-only
    assert numba_kernels.conv_cin1_forward(x, w, b, *s, *pad, out=out) is out
    close_to_max(out, y_ref, dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    dw_ref, db_ref = np.empty(w.shape, dtype), np.empty(o, dtype)
    ref.conv_cin1_weight_grad(x, dy, *s, *pad, dw_ref, db_ref)
    close_to_max(db_ref, dy.sum(axis=(0, 2, 3)), dtype)
    dw, db = np.full(w.shape, np.nan, dtype), np.full(o, np.nan, dtype)
    assert numba_kernels.conv_cin1_weight_grad(x, dy, *s, *pad, dw, db) is dw
    close_to_max(dw, dw_ref, dtype)
    close_to_max(db, db_ref, dtype)
    dw_only = np.full(w.shape, np.nan, dtype)
    numba_kernels.conv_cin1_weight_grad(x, dy, *s, *pad, dw_only)
    np.testing.assert_array_equal(dw_only, dw)
    dx_ref = ref.conv_cin1_input_grad(dy, w, *s, *pad, np.empty(x.shape, dtype))
    dx = np.full(x.shape, np.nan, dtype)
    assert numba_kernels.conv_cin1_input_grad(dy, w, *s, *pad, dx) is dx
    close_to_max(dx, dx_ref, dtype)


def test_cin1_twins_are_adjoint(rng):
    """<conv(x), dy> == <x, input_grad(dy)> == <w, weight_grad(x, dy)> (bias 0), in every backend."""
    x = rng.standard_normal((2, 1, 13, 37))
    w = rng.standard_normal((5, 1, 5, 5))
    dy = rng.standard_normal((2, 5, 7, 19))
    for k in [ref] + ([numba_kernels] if numba_kernels is not None else []):
        y = k.conv_cin1_forward(x, w, np.zeros(5), 2, 2, 2, 2, np.empty(dy.shape))
        lhs = np.sum(y * dy)
        assert lhs == pytest.approx(np.sum(x * k.conv_cin1_input_grad(dy, w, 2, 2, 2, 2, np.empty(x.shape))), rel=1e-12)
        dw = k.conv_cin1_weight_grad(x, dy, 2, 2, 2, 2, np.empty(w.shape))
        assert lhs == pytest.approx(np.sum(w * dw), rel=1e-12)


ACTS = [kernels.ACT_IDENTITY, kernels.ACT_RELU, kernels.ACT_LEAKY_RELU, kernels.ACT_SIGMOID, kernels.ACT_TANH]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
def test_bias_act_forward_backward(rng, dtype, act):
    z = (rng.standard_normal((5, 7)) * 4).astype(dtype)
    b = rng.standard_normal(7).astype(dtype)
    y_ref = ref.bias_act_forward(z.copy(), b, act, 0.1)
    y_nb = numba_kernels.bias_act_forward(z.copy(), b, act, 0.1)
    close(y_nb, y_ref, dtype)
    dy = rng.standard_normal((5, 7)).astype(dtype)
    g_nb = numba_kernels.act_backward(dy, y_ref, act, 0.1)
    assert g_nb.dtype == dtype
    close(g_nb, ref.act_backward(dy, y_ref, act, 0.1), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("bias", [True, False])
def test_bias_act_channels(rng, dtype, act, bias):
    """A convolution's per-channel bias and activation in place: the bias added in the
    dtype, then the backend's act_forward, bit for bit."""
    z = (rng.standard_normal((3, 4, 5, 6)) * 4).astype(dtype)
    b = rng.standard_normal(4).astype(dtype) if bias else None
    pre = z + b[:, None, None] if bias else z.copy()
    for k in (ref, numba_kernels):
        got = z.copy()
        assert k.bias_act_channels(got, b, act, 0.1) is got
        np.testing.assert_array_equal(got, k.act_forward(pre, act, 0.1))
        with pytest.raises(ValueError, match="C-contiguous"):
            k.bias_act_channels(z.copy()[:, ::2], b, act, 0.1)
    close(numba_kernels.bias_act_channels(z.copy(), b, act, 0.1), ref.bias_act_channels(z.copy(), b, act, 0.1),
          dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("part", [slice(0, 3), slice(2, 5), slice(1, 2)])
def test_act_backward_on_a_channel_slice(rng, dtype, act, part):
    """dy as a U-Net passes it: a slice along axis 1 of a larger gradient, read in place."""
    big = rng.standard_normal((4, 5, 3, 6)).astype(dtype)
    dy = big[:, part]
    y = ref.act_forward(rng.standard_normal(dy.shape).astype(dtype) * 3, act, 0.2)
    expected = ref.act_backward(np.ascontiguousarray(dy), y, act, 0.2)
    got = numba_kernels.act_backward(dy, y, act, 0.2)
    assert got.flags.c_contiguous and got.dtype == dtype
    close(got, expected, dtype)
    np.testing.assert_array_equal(got, numba_kernels.act_backward(np.ascontiguousarray(dy), y, act, 0.2))


def test_leaky_relu_layer_is_bit_identical_to_the_slope_form(rng):
    """The fused kernels give exactly x * slope and dy * slope (slope = 1 where x > 0, else
    alpha), zeros, signed zeros, tiny values and NaN included."""
    x = rng.standard_normal((3, 4, 5, 6)).astype(np.float32)
    x.flat[:6] = [0.0, -0.0, np.nan, 1e-45, -1e-45, -3e38]
    dy = rng.standard_normal(x.shape).astype(np.float32)
    slope = np.where(x > 0, 1.0, 0.2).astype(np.float32)
    from npvae.layers import LeakyReLU
    layer = LeakyReLU(0.2)
    np.testing.assert_array_equal(layer.forward(x), x * slope)
    np.testing.assert_array_equal(layer.backward(dy), dy * slope)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_adam_update(rng, dtype, wd):
    arrays = [rng.standard_normal((4, 3)).astype(dtype) for _ in range(2)]
    m, v = rng.standard_normal((4, 3)).astype(dtype), rng.uniform(size=(4, 3)).astype(dtype)
    states = [[a.copy() for a in (arrays[0], m, v)] for _ in range(2)]
    args = (1e-2, 0.9, 0.999, 1e-8, 1 - 0.9 ** 3, 1 - 0.999 ** 3, wd)
    for k, (p, mm, vv) in zip((ref, numba_kernels), states):
        k.adam_update(p, arrays[1], mm, vv, *args)
    for a, b in zip(*states):
        close(a, b, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_reparameterize_kl_bce(rng, dtype):
    mu, logvar, eps = (rng.standard_normal((6, 4)).astype(dtype) for _ in range(3))
    for a, b in zip(numba_kernels.reparameterize(mu, logvar, eps), ref.reparameterize(mu, logvar, eps)):
        close(a, b, dtype)
    kl_nb, kl_ref = numba_kernels.kl_terms(mu, logvar), ref.kl_terms(mu, logvar)
    assert kl_nb[0] == pytest.approx(kl_ref[0], rel=1e-5)
    for a, b in zip(kl_nb[1:], kl_ref[1:]):
        close(a, b, dtype)
    logits = (rng.standard_normal((6, 4)) * 30).astype(dtype)
    target = rng.uniform(size=(6, 4)).astype(dtype)
    (v_nb, g_nb), (v_ref, g_ref) = numba_kernels.bce_logits(logits, target), ref.bce_logits(logits, target)
    assert v_nb == pytest.approx(v_ref, rel=1e-5)
    close(g_nb, g_ref, dtype)


def test_backend_switch():
    original = kernels.backend()
    try:
        assert kernels.set_backend("numpy") == "numpy" and kernels.backend() == "numpy"
        assert kernels.set_backend("numba") == "numba"
        with pytest.raises(ValueError, match="unknown backend"):
            kernels.set_backend("cuda")
    finally:
        kernels.set_backend(original)


def test_backends_give_the_same_training_trajectory(rng):
    """A few Adam steps of a conv, transposed-conv and dense model agree between backends to float32 tolerance."""
    import npvae

    def run(name):
        kernels.set_backend(name)
        r = np.random.default_rng(3)
        model = npvae.Sequential(npvae.Conv2d(1, 4, 3, stride=2, padding=1, rng=r), npvae.ReLU(),
                                 npvae.ConvTranspose2d(4, 2, 4, stride=2, padding=1, rng=r), npvae.ReLU(),
                                 npvae.Flatten(), npvae.Dense(2 * 8 * 8, 8, activation="leaky_relu", rng=r),
                                 npvae.Dense(8, 16, rng=r))
        opt = npvae.Adam(model, lr=1e-2)
        x = np.random.default_rng(4).uniform(size=(8, 1, 8, 8)).astype(np.float32)
        target = x.reshape(8, -1)[:, :16]
        losses = []
        for _ in range(5):
            loss, grad = npvae.losses.bce_with_logits(model.forward(x), target)
            model.backward(grad)
            opt.step()
            losses.append(loss)
        return losses, model.state_dict()

    original = kernels.backend()
    try:
        (l_nb, p_nb), (l_np, p_np) = run("numba"), run("numpy")
    finally:
        kernels.set_backend(original)
    np.testing.assert_allclose(l_nb, l_np, rtol=1e-5)
    assert l_nb[-1] < l_nb[0]
    for k in p_nb:
        np.testing.assert_allclose(p_nb[k], p_np[k], rtol=1e-4, atol=1e-5, err_msg=k)


@pytest.mark.parametrize("dtype", DTYPES)
def test_im2col_col2im_into_buffers(rng, dtype):
    x = rng.standard_normal((3, 2, 9, 8)).astype(dtype)
    geom = (5, 5, 2, 2, 2, 2)
    cols = ref.im2col(x, *geom)
    for k in (ref, numba_kernels):
        buf = np.full_like(cols, np.nan)
        assert k.im2col(x, *geom, out=buf) is buf
        close(buf, cols, dtype)
        out = np.full(x.shape, np.nan, dtype=dtype)   # overwritten, not accumulated into
        assert k.col2im(cols, x.shape, *geom, out=out) is out
        close(out, ref.col2im(cols, x.shape, *geom), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
def test_act_forward_and_backward_into_buffer(rng, dtype, act):
    x = (rng.standard_normal((3, 4, 5)) * 4).astype(dtype)
    y_ref = ref.act_forward(x, act, 0.1)
    close(y_ref, ref.bias_act_forward(x.reshape(3, 20).copy(), np.zeros(20, dtype), act, 0.1).reshape(x.shape),
          dtype)
    y_nb = numba_kernels.act_forward(x, act, 0.1)
    assert y_nb.dtype == dtype and y_nb.shape == x.shape
    close(y_nb, y_ref, dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    expected = ref.act_backward(dy, y_ref, act, 0.1)
    for k in (ref, numba_kernels):
        out = np.empty_like(dy)
        assert k.act_backward(dy, y_ref, act, 0.1, out=out) is out
        close(out, expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_logits_scale(rng, dtype):
    logits = (rng.standard_normal((6, 4)) * 5).astype(dtype)
    target = rng.uniform(size=(6, 4)).astype(dtype)
    for k in (ref, numba_kernels):
        v1, g1 = k.bce_logits(logits, target)
        v, g = k.bce_logits(logits, target, 0.25)
        assert v == pytest.approx(v1, rel=1e-6) and g.dtype == dtype
        close(g, 0.25 * g1, dtype)


def test_float32_kernels_stay_float32(rng):
    """No float64 promotion inside the kernels: float32 in, float32 out."""
    a = rng.standard_normal((4, 5)).astype(np.float32)
    for k in (ref, numba_kernels):
        assert k.act_forward(a, kernels.ACT_SIGMOID).dtype == np.float32
        assert all(r.dtype == np.float32 for r in k.reparameterize(a, a, a))
        assert all(r.dtype == np.float32 for r in k.kl_terms(a, a)[1:])
        assert k.bce_logits(a, np.abs(a) / 10, 0.5)[1].dtype == np.float32


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geom", [(2, 2, 2, 2, 0, 0), (3, 3, 2, 2, 1, 1), (3, 3, 1, 1, 1, 1), (2, 3, 1, 2, 1, 0),
                                  (4, 4, 3, 3, 2, 2), (1, 1, 1, 1, 0, 0)])
def test_max_pool(rng, dtype, geom):
    x = rng.standard_normal((2, 3, 9, 10)).astype(dtype)
    x[0, 0] = np.maximum(x[0, 0], 0)          # ties (a map after ReLU): the first maximum wins
    x[1, 2, 4, 5] = np.nan                    # a NaN is its window's maximum
    y, arg = ref.max_pool2d_forward(x, *geom)
    y2, arg2 = numba_kernels.max_pool2d_forward(x, *geom)
    np.testing.assert_array_equal(y2, y)
    np.testing.assert_array_equal(arg2, arg)
    assert arg2.dtype == arg.dtype and np.isnan(y).any()
    dy = rng.standard_normal(y.shape).astype(dtype)
    # overlapping windows add into one input pixel in another order
    close(numba_kernels.max_pool2d_backward(dy, arg, x.shape, *geom), ref.max_pool2d_backward(dy, arg, x.shape, *geom),
          dtype)


# -- per-channel normalisation (BatchNorm) -------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 4, 50), (1, 1, 7), (8, 3, 1), (2, 5, 300), (3, 3, 2501)])
def test_batchnorm_kernels(rng, dtype, shape):
    x = (3 * rng.standard_normal(shape) + 2).astype(dtype)
    dy, xhat = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
    c = shape[1]
    mean, inv_std, a, b = (rng.standard_normal(c) for _ in range(4))
    gamma, beta = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    exact = x.astype(np.float64)
    close(numba_kernels.channel_sums(x), ref.channel_sums(x), dtype)
    close(ref.channel_sums(x), exact.sum(axis=(0, 2)), dtype)
    close(numba_kernels.channel_sq_dev(x, mean), ref.channel_sq_dev(x, mean), dtype)
    close(ref.channel_sq_dev(x, mean), ((exact - mean[:, None]) ** 2).sum(axis=(0, 2)), dtype)
    for got, want in zip(numba_kernels.channel_dot_sums(dy, xhat), ref.channel_dot_sums(dy, xhat)):
        close(got, want, dtype)
    close(ref.channel_dot_sums(dy, xhat)[1], (dy.astype(np.float64) * xhat).sum(axis=(0, 2)), dtype)
    for keep in (True, False):
        outs = []
        for k in (numba_kernels, ref):
            h, y = (np.full(shape, np.nan, dtype) if keep else None), np.full(shape, np.nan, dtype)
            assert k.batchnorm_normalise(x, mean, inv_std, gamma, beta, h, y) is y
            outs.append((h, y))
        close(outs[0][1], outs[1][1], dtype)
        close(outs[1][1], ((exact - mean[:, None]) * inv_std[:, None]) * gamma[:, None] + beta[:, None], dtype)
        if keep:
            close(outs[0][0], outs[1][0], dtype)
    got = numba_kernels.channel_affine(x, gamma, beta, np.empty_like(x))
    close(got, ref.channel_affine(x, gamma, beta, np.empty_like(x)), dtype)
    close(got, x * gamma[:, None] + beta[:, None], dtype)
    got = numba_kernels.batchnorm_input_grad(dy, xhat, a, b, mean, np.empty_like(dy))
    close(got, ref.batchnorm_input_grad(dy, xhat, a, b, mean, np.empty_like(dy)), dtype)
    close(got, (dy - a[:, None] - xhat * b[:, None]) * mean[:, None], dtype)
    # the fused backward of one process: the sums, and dx with their means over N * L values
    outs = []
    for k in (numba_kernels, ref):
        dx = np.full(shape, np.nan, dtype)
        outs.append((*k.batchnorm_backward(dy, xhat, mean, dx), dx))
    for got, want in zip(outs[0], outs[1]):
        close(got, want, dtype)
    count = shape[0] * shape[2]
    s, t = dy.astype(np.float64).sum(axis=(0, 2)), (dy.astype(np.float64) * xhat).sum(axis=(0, 2))
    close(outs[1][2], (dy - s[:, None] / count - xhat * (t[:, None] / count)) * mean[:, None], dtype)


# -- per-sample group normalisation (GroupNorm) ---------------------------------------------------
def _groupnorm_exact(x, gamma, beta, groups, eps, dy):
    """GroupNorm's y, mean, inv_std, dx, dgamma, dbeta in float64 from the definitions."""
    n, c, l = x.shape
    xg = x.astype(np.float64).reshape(n, groups, -1)
    mean, var = xg.mean(axis=2), xg.var(axis=2)
    inv_std = 1 / np.sqrt(var + eps)
    xhat = ((xg - mean[:, :, None]) * inv_std[:, :, None]).reshape(x.shape)
    y = xhat * gamma[:, None] + beta[:, None]
    dxhat = (dy * gamma[:, None].astype(np.float64)).reshape(n, groups, -1)
    xhg = xhat.reshape(n, groups, -1)
    dx = inv_std[:, :, None] * (dxhat - dxhat.mean(axis=2, keepdims=True)
                                - xhg * (dxhat * xhg).mean(axis=2, keepdims=True))
    return y, mean, inv_std, dx.reshape(x.shape), (dy * xhat).sum(axis=(0, 2)), dy.sum(axis=(0, 2), dtype=np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, groups", [((3, 6, 50), 3), ((2, 5, 7), 5), ((4, 8, 1), 4), ((1, 3, 11), 1),
                                           ((5, 12, 9), 4), ((3, 4, 1), 4), ((2, 4, 301), 2), ((2, 2, 2501), 1),
                                           ((131, 4, 3), 2)])
def test_groupnorm_kernels(rng, dtype, shape, groups):
    """Odd sizes, groups of one channel, one position per channel, groups of a single value,
    rows longer than the Numba kernels' chunks of a sum, and more than 128 samples of short rows."""
    x = (3 * rng.standard_normal(shape) + 2).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    c = shape[1]
    gamma, beta = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    eps = 1e-5
    got = {}
    for name, k in (("numba", numba_kernels), ("numpy", ref)):
        y = np.full(shape, np.nan, dtype)
        mean, inv_std = k.groupnorm_forward(x, gamma, beta, groups, eps, y)
        assert mean.shape == inv_std.shape == (shape[0], groups) and mean.dtype == inv_std.dtype == np.float64
        dgamma, dbeta, dx = np.full(c, np.nan, dtype), np.full(c, np.nan, dtype), np.full(shape, np.nan, dtype)
        assert k.groupnorm_backward(dy, x, mean, inv_std, gamma, dgamma, dbeta, dx) is dx
        assert y.dtype == dx.dtype == dtype
        got[name] = (y, mean, inv_std, dx, dgamma, dbeta)
    exact = _groupnorm_exact(x, gamma, beta, groups, eps, dy)
    for a, b, e in zip(got["numba"], got["numpy"], exact):
        close(a, b, dtype)
        close(b, e, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, groups", [((3, 6, 50), 3), ((5, 12, 9), 4), ((2, 2, 2501), 1), ((131, 4, 3), 2)])
def test_groupnorm_kernels_on_the_threads(rng, dtype, shape, groups, monkeypatch):
    """The parallel variants (the U-Nets' largest maps run them) equal the NumPy twin too."""
    monkeypatch.setattr(numba_kernels, "GROUPNORM_PARALLEL_MIN", 0)
    test_groupnorm_kernels(rng, dtype, shape, groups)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes", [((3, 4), (6, 8), (2.0, 2.0)), ((5, 6), (13, 9), (None, None)),
                                   ((4, 3), (6, 9), (1.5, 3.0)), ((1, 2), (3, 3), (None, None))])
def test_bilinear(rng, dtype, sizes):
    from npvae.layers.resample import linear_taps
    (h, w), (oh, ow), (fh, fw) = sizes
    taps_h, taps_w = linear_taps(h, oh, fh, dtype), linear_taps(w, ow, fw, dtype)
    x = rng.standard_normal((2, 3, h, w)).astype(dtype)
    close(numba_kernels.bilinear_forward(x, taps_h, taps_w), ref.bilinear_forward(x, taps_h, taps_w), dtype)
    dy = rng.standard_normal((2, 3, oh, ow)).astype(dtype)
    close(numba_kernels.bilinear_backward(dy, taps_h, taps_w, h, w), ref.bilinear_backward(dy, taps_h, taps_w, h, w),
          dtype)


# -- nearest upsampling and dropout ----------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes", [((3, 5), (6, 10), (2.0, 2.0)), ((3, 4), (9, 12), (3.0, 3.0)),
                                   ((5, 7), (10, 7), (2.0, 1.0)), ((3, 3), (7, 7), (None, None)),
                                   ((3, 4), (5, 2), (None, None)), ((4, 3), (6, 9), (1.5, 3.0)),
                                   ((1, 1), (3, 2), (None, None))])
def test_nearest_upsampling(rng, dtype, sizes):
    from npvae.layers.resample import nearest_index
    (h, w), (oh, ow), (fh, fw) = sizes
    ih, iw = nearest_index(h, oh, fh), nearest_index(w, ow, fw)
    x = rng.standard_normal((3, 5, h, w)).astype(dtype)
    y = numba_kernels.nearest_forward(x, ih, iw)
    np.testing.assert_array_equal(y, ref.nearest_forward(x, ih, iw))      # copies: equal bit for bit
    np.testing.assert_array_equal(y, x[:, :, ih[:, None], iw])
    dy = rng.standard_normal((3, 5, oh, ow)).astype(dtype)
    dx = numba_kernels.nearest_backward(dy, ih, iw, h, w)
    close(dx, ref.nearest_backward(dy, ih, iw, h, w), dtype)
    exact = np.zeros((3, 5, h, w))
    np.add.at(exact, (slice(None), slice(None), ih[:, None], iw), dy.astype(np.float64))
    close(dx, exact, dtype)
    if ref.nearest_repeats(ih, iw, h, w):    # integer factors: both add in the outputs' row-major order
        np.testing.assert_array_equal(dx, ref.nearest_backward(dy, ih, iw, h, w))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,channels", [((3, 5, 7, 9), False), ((3, 5, 7, 9), True), ((4, 13), False),
                                            ((2, 3, 1, 1), True), ((2, 3, 5), True), ((2, 4, 512, 256), True),
                                            ((0, 3, 4, 4), True)])
def test_dropout_apply(rng, dtype, shape, channels):
    """Both kernels equal a float mask's product bit for bit (also on the threads, from
    2**20 elements, and for an empty batch)."""
    x = rng.standard_normal(shape).astype(dtype)
    x.flat[:3] = [np.inf, -np.inf, np.nan]
    keep = rng.random(shape[:2] + (1,) * (len(shape) - 2) if channels else shape) >= 0.4
    for scale in (1 / 0.6, 0.0):
        with np.errstate(invalid="ignore"):      # inf * 0
            got, twin = numba_kernels.dropout_apply(x, keep, scale), ref.dropout_apply(x, keep, scale)
            want = x * np.multiply(keep, dtype(scale), dtype=dtype)         # a float mask's products, bit for bit
        assert got.dtype == dtype
        for a in (got, twin):
            np.testing.assert_array_equal(a, want)
            np.testing.assert_array_equal(np.signbit(a), np.signbit(want))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geom", [(2, 2, 2, 2, 0, 0), (3, 3, 2, 2, 1, 1), (3, 3, 1, 1, 1, 1), (2, 3, 1, 2, 1, 0),
                                  (4, 4, 3, 3, 2, 2), (1, 1, 1, 1, 0, 0), (2, 2, 2, 2, 1, 1)])
@pytest.mark.parametrize("shape", [(2, 3, 9, 10), (1, 2, 8, 64), (3, 2, 28, 28), (2, 2, 7, 9)])
def test_avg_pool_equals_its_twin_bit_for_bit(rng, dtype, geom, shape):
    """The same sums in the same order (kernel offset by offset, zero padding counted),
    overlapping windows too; 2x2 tiles over odd sides leave the last row and column's
    gradient zero."""
    x = rng.standard_normal(shape).astype(dtype)
    y = ref.avg_pool2d_forward(x, *geom)
    got = numba_kernels.avg_pool2d_forward(x, *geom)
    assert got.dtype == y.dtype and got.shape == y.shape
    np.testing.assert_array_equal(got, y)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = numba_kernels.avg_pool2d_backward(dy, x.shape, *geom)
    assert dx.dtype == x.dtype and dx.shape == x.shape
    np.testing.assert_array_equal(dx, ref.avg_pool2d_backward(dy, x.shape, *geom))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,k", [((2, 3, 9, 11), 2), ((3, 2, 8, 6), 2), ((2, 3, 7, 10), 2), ((2, 2, 7, 8), 3),
                                     ((1, 2, 5, 9), (2, 3)), ((1, 2, 7, 10), (3, 2))])
def test_max_pool_backward_of_tiling_windows(rng, dtype, shape, k):
    """Windows that tile the input (stride = kernel, no padding): dx written once, rows and
    columns past the last window zero; equal to the twin bit for bit."""
    kh, kw = (k, k) if isinstance(k, int) else k
    geom = (kh, kw, kh, kw, 0, 0)
    x = rng.standard_normal(shape).astype(dtype)
    x[0, 0] = np.maximum(x[0, 0], 0)
    y, arg = ref.max_pool2d_forward(x, *geom)
    dy = rng.standard_normal(y.shape).astype(dtype)
    got = numba_kernels.max_pool2d_backward(dy, arg, x.shape, *geom)
    np.testing.assert_array_equal(got, ref.max_pool2d_backward(dy, arg, x.shape, *geom))
    assert (got != 0).sum() == dy.size

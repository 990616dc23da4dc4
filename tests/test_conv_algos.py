"""Conv2d's algorithms (im2col, direct, Winograd F(2x2, 3x3) and F(4x4, 3x3), cin1 for
one input channel) against a NumPy im2col reference, finite differences and PyTorch; the
Winograd kernels' Numba/NumPy twins; NPVAE_CONV_ALGO and the cache of auto mode's choices."""
import json
import threading
import warnings

import numpy as np
import pytest

import npvae
from npvae import kernels
from _gradcheck import check_layer
from npvae.kernels import numpy_kernels as ref
from npvae.layers import conv_algos

ALGOS = [a for a in conv_algos.ALGORITHMS if a != "cin1"]   # cin1 runs one input channel only: tested below
# float32 against the float64 reference: the largest error over the largest value of
# the reference. F(4x4, 3x3)'s transforms have larger entries (up to 8 and 1/24), so
# its rounding errors are about ten times F(2x2, 3x3)'s (measured: up to 3e-6).
TOL32 = {"im2col": 1e-5, "direct": 1e-5, "winograd": 1e-5, "winograd4": 3e-5, "cin1": 1e-5}


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Each test: a cache file of its own, no choices remembered, warnings not yet given."""
    monkeypatch.setenv("NPVAE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("NPVAE_CONV_ALGO", raising=False)
    monkeypatch.setattr(conv_algos, "_chosen", {})
    monkeypatch.setattr(conv_algos, "_warned", set())


@pytest.fixture(params=kernels.available_backends())
def backend(request):
    original = kernels.backend()
    kernels.set_backend(request.param)
    yield request.param
    kernels.set_backend(original)


def reference(x, w, b, dy, padding):
    """Forward and gradients in float64 through the NumPy im2col twin."""
    x, w, b, dy = (a.astype(np.float64) for a in (x, w, b, dy))
    n, o, oh, ow = dy.shape
    geom = (3, 3, 1, 1, padding, padding)
    cols = ref.im2col(x, *geom)                                        # (C*9, N*OH*OW)
    y = (w.reshape(o, -1) @ cols).reshape(o, n, oh, ow).transpose(1, 0, 2, 3) + b[:, None, None]
    d2 = dy.transpose(1, 0, 2, 3).reshape(o, -1)
    dw = (d2 @ cols.T).reshape(w.shape)
    dx = ref.col2im(w.reshape(o, -1).T @ d2, x.shape, *geom)
    return y, dx, dw, dy.sum(axis=(0, 2, 3))


def run(layer, x, dy):
    y = layer.forward(x)
    dx = layer.backward(dy)
    return y, dx, layer.grads["W"].copy(), layer.grads["b"].copy()


def forced_matches_im2col(monkeypatch, layer, algo, x, dy, dtype, tol):
    """``layer`` forced to ``algo`` gives im2col's output and gradients (relative to the
    largest value), and without the input gradient returns None with the same weight
    gradient; returns im2col's (y, dx, dW, db)."""
    monkeypatch.setenv("NPVAE_CONV_ALGO", "im2col")
    expected = run(layer, x, dy)
    monkeypatch.setenv("NPVAE_CONV_ALGO", algo)
    got = run(layer, x, dy)
    assert layer.algorithm == algo
    for name, a, b in zip(("y", "dx", "dW", "db"), got, expected):
        assert a.dtype == dtype and a.shape == b.shape, name
        assert np.abs(a - b).max() <= tol * np.abs(b).max(), name
    layer.needs_input_grad = False
    layer.forward(x)
    assert layer.backward(dy) is None
    assert np.abs(layer.grads["W"] - expected[2]).max() <= tol * np.abs(expected[2]).max()
    return expected


SHAPES = [  # n, c, o, (h, w), padding
    (2, 3, 8, (7, 9), 1),
    (3, 8, 3, (5, 6), 0),
    (1, 1, 1, (3, 4), 0),       # a single output row
    (2, 8, 1, (9, 11), 1),
    (4, 1, 8, (6, 6), 1),
    (2, 3, 3, (13, 10), 0),
    (1, 3, 8, (2, 3), 2),       # padding larger than the kernel's reach
]


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("n,c,o,hw,pad", SHAPES)
def test_algorithm_against_numpy_im2col_float32(rng, monkeypatch, backend, algo, n, c, o, hw, pad):
    monkeypatch.setenv("NPVAE_CONV_ALGO", algo)
    layer = npvae.Conv2d(c, o, 3, padding=pad, rng=rng)
    x = rng.standard_normal((n, c, *hw)).astype(np.float32)
    oh, ow = layer.output_shape(*hw)
    dy = rng.standard_normal((n, o, oh, ow)).astype(np.float32)
    ours = run(layer, x, dy)
    assert layer.algorithm == algo
    for name, a, b in zip(("y", "dx", "dW", "db"), ours, reference(x, layer.params["W"], layer.params["b"], dy, pad)):
        assert a.dtype == np.float32 and a.shape == b.shape, name
        assert np.abs(a - b).max() <= TOL32[algo] * np.abs(b).max(), f"{algo} {name}"


@pytest.mark.parametrize("algo", ["winograd", "winograd4"])
@pytest.mark.parametrize("cin,cout,p,hw", [(2, 3, 1, (5, 4)), (1, 2, 0, (6, 7)), (3, 1, 1, (3, 3))])
def test_winograd_finite_differences_float64(rng, monkeypatch, algo, cin, cout, p, hw):
    monkeypatch.setenv("NPVAE_CONV_ALGO", algo)
    layer = npvae.Conv2d(cin, cout, 3, padding=p, rng=rng, dtype=np.float64)
    errors = check_layer(layer, rng.standard_normal((2, cin, *hw)), rng)
    assert layer.algorithm == algo
    assert set(errors) == {"x", "W", "b"}
    for name, err in errors.items():
        assert err < 1e-7, f"{algo}: gradient of {name} has relative error {err:.2e}"


@pytest.mark.parametrize("algo", ALGOS)
def test_float64_agrees_with_im2col(rng, monkeypatch, algo):
    """In float64 every algorithm is im2col to rounding, and needs_input_grad = False
    leaves the weight gradients as they were."""
    layer = npvae.Conv2d(3, 4, 3, padding=1, rng=rng, dtype=np.float64)
    x = rng.standard_normal((5, 3, 7, 6))
    dy = rng.standard_normal((5, 4, 7, 6))
    monkeypatch.setenv("NPVAE_CONV_ALGO", "im2col")
    expected = run(layer, x, dy)
    monkeypatch.setenv("NPVAE_CONV_ALGO", algo)
    for a, b in zip(run(layer, x, dy), expected):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    layer.needs_input_grad = False
    layer.forward(x)
    assert layer.backward(dy) is None
    np.testing.assert_allclose(layer.grads["W"], expected[2], rtol=1e-12, atol=1e-12)


# -- the Winograd kernels: Numba against the NumPy twins -------------------------------------

numba_kernels = pytest.importorskip("npvae.kernels.numba_kernels") if "numba" in kernels.available_backends() else None
needs_numba = pytest.mark.skipif(numba_kernels is None, reason="Numba is not installed")


def close(a, b, dtype):
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * np.abs(b).max())


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("n,c,hw,pad", [(2, 3, (7, 9), 1), (1, 2, (6, 6), 0), (3, 1, (3, 4), 1), (1, 2, (4, 5), 2),
                                        (2, 4, (11, 8), 0)])
def test_winograd_kernels_numba_vs_numpy(rng, dtype, m, n, c, hw, pad):
    x = rng.standard_normal((n, c, *hw)).astype(dtype)
    th, tw = (ref.winograd_tiles(s, pad, m) for s in hw)
    oh, ow = (s + 2 * pad - 2 for s in hw)
    r2, tiles = (m + 2) ** 2, n * th * tw
    close(numba_kernels.winograd_input_transform(x, m, pad, pad), ref.winograd_input_transform(x, m, pad, pad), dtype)
    out = np.full((r2, c, tiles), np.nan, dtype)
    assert numba_kernels.winograd_input_transform(x, m, pad, pad, out=out) is out
    close(out, ref.winograd_input_transform(x, m, pad, pad), dtype)

    t = rng.standard_normal((r2, 3, tiles)).astype(dtype)
    b = rng.standard_normal(3).astype(dtype)
    y_nb, y_ref = (k.winograd_output_transform(t, m, b, np.full((n, 3, oh, ow), np.nan, dtype))
                   for k in (numba_kernels, ref))
    close(y_nb, y_ref, dtype)

    dy = rng.standard_normal((n, 3, oh, ow)).astype(dtype)
    close(numba_kernels.winograd_output_adjoint(dy, m), ref.winograd_output_adjoint(dy, m), dtype)
    out = np.full((r2, 3, tiles), np.nan, dtype)
    assert numba_kernels.winograd_output_adjoint(dy, m, out=out) is out
    close(out, ref.winograd_output_adjoint(dy, m), dtype)

    v = rng.standard_normal((r2, c, tiles)).astype(dtype)
    dx_nb, dx_ref = (k.winograd_input_adjoint(v, m, pad, pad, np.full(x.shape, np.nan, dtype))
                     for k in (numba_kernels, ref))
    close(dx_nb, dx_ref, dtype)


@pytest.mark.parametrize("m", [2, 4])
def test_winograd_kernels_are_adjoints(rng, m):
    """<T x, v> == <x, T* v> for the input transform and the output transform (bias 0),
    in every backend."""
    x = rng.standard_normal((2, 3, 7, 8))
    th, tw = ref.winograd_tiles(7, 1, m), ref.winograd_tiles(8, 1, m)
    v = rng.standard_normal(((m + 2) ** 2, 3, 2 * th * tw))
    dy = rng.standard_normal((2, 3, 7, 8))
    impls = [ref] + ([numba_kernels] if numba_kernels is not None else [])
    for k in impls:
        lhs = np.sum(k.winograd_input_transform(x, m, 1, 1) * v)
        assert lhs == pytest.approx(np.sum(x * k.winograd_input_adjoint(v, m, 1, 1, np.empty_like(x))), rel=1e-12)
        y = k.winograd_output_transform(v, m, np.zeros(3), np.empty_like(dy))
        assert np.sum(y * dy) == pytest.approx(np.sum(v * k.winograd_output_adjoint(dy, m)), rel=1e-12)


def test_weight_transform_and_its_adjoint(rng):
    w = rng.standard_normal((4, 3, 3, 3))
    for m in (2, 4):
        u = conv_algos.winograd_weights(w, m)
        assert u.shape == ((m + 2) ** 2, 4, 3)
        du = rng.standard_normal(u.shape)
        assert np.sum(u * du) == pytest.approx(np.sum(w * conv_algos.winograd_weights_adjoint(du, m)), rel=1e-12)


# -- direct at strides above 1: the register-tiled kernels ------------------------------------------

STRIDED = [  # n, c, o, (h, w), kernel, stride, padding
    (3, 5, 16, (11, 13), 4, 2, 1),
    (2, 3, 9, (9, 8), 5, 2, 2),       # an output width that is not a whole tile of channels
    (4, 1, 2, (7, 10), 3, 3, 0),
    (1, 8, 24, (12, 7), 3, 2, 2),
    (5, 4, 8, (6, 6), 5, 3, 1),
    (2, 3, 4, (8, 9), 2, 3, 1),       # a kernel smaller than the stride
]


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 1e-5)])
@pytest.mark.parametrize("threads", ["1", "2"])
@pytest.mark.parametrize("n,c,o,hw,k,s,pad", STRIDED)
def test_strided_direct_agrees_with_im2col(rng, monkeypatch, backend, dtype, tol, threads, n, c, o, hw, k, s, pad):
    """Outputs and gradients of a strided layer forced to ``direct`` are im2col's (relative
    to the largest value), with and without the input gradient, and in inference with a
    fused activation."""
    monkeypatch.setenv("NPVAE_NUM_THREADS", threads)
    layer = npvae.Conv2d(c, o, k, stride=s, padding=pad, rng=rng, dtype=dtype)
    x = rng.standard_normal((n, c, *hw)).astype(dtype)
    dy = rng.standard_normal((n, o, *layer.output_shape(*hw))).astype(dtype)
    expected = forced_matches_im2col(monkeypatch, layer, "direct", x, dy, dtype, tol)
    act = npvae.layers.LeakyReLU(0.2)
    with npvae.layers.inference():
        fused = layer.forward(x, act=act)
    assert layer.algorithm == "direct"
    y = expected[0]
    np.testing.assert_allclose(fused, np.where(y > 0, y, 0.2 * y), rtol=tol, atol=tol * np.abs(y).max())


def test_auto_mode_may_choose_direct_for_a_strided_layer(rng, monkeypatch):
    """Auto mode times direct beside im2col for a strided layer of any width, and takes it
    when it measures faster: the layer then gives what the forced algorithm gives."""
    monkeypatch.setenv("NPVAE_NUM_THREADS", "1")
    layer = npvae.Conv2d(6, 32, 5, stride=2, padding=2, rng=rng)
    x = rng.standard_normal((2, 6, 16, 12)).astype(np.float32)
    timed = []

    def measure(layer_, x_, options):
        timed.extend(a.name for a in options)
        return {a.name: (1.0 if a.name == "direct" else 2.0) for a in options}

    monkeypatch.setattr(conv_algos, "measure", measure)
    y = layer.forward(x)
    assert timed == ["im2col", "direct"] and layer.algorithm == "direct"
    monkeypatch.setenv("NPVAE_CONV_ALGO", "direct")
    np.testing.assert_array_equal(layer.forward(x), y)


# -- cin1: layers of one input channel --------------------------------------------------------------

CIN1 = [  # n, o, (h, w), kernel, stride, padding
    (3, 16, (28, 28), 3, 1, 1),       # the image U-Nets' first layer, smaller
    (2, 24, (40, 19), 5, 2, 2),       # the music networks' first layer, smaller
    (3, 7, (21, 37), 4, 2, 1),        # channels that are no whole tile, an odd width
    (2, 9, (17, 33), 3, 1, 0),
    (4, 3, (19, 23), 7, 1, 3),
    (2, 5, (31, 50), 1, 2, 0),        # input columns no tap reaches
    (3, 4, (9, 11), 3, 1, 1),         # output rows narrower than a vector
    (2, 6, (13, 41), 5, 3, 2),        # stride 3
]


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 1e-5)])
@pytest.mark.parametrize("threads", ["1", "2"])
@pytest.mark.parametrize("n,o,hw,k,s,pad", CIN1)
def test_cin1_agrees_with_im2col(rng, monkeypatch, backend, dtype, tol, threads, n, o, hw, k, s, pad):
    """Outputs and gradients of a one-input-channel layer forced to ``cin1`` are im2col's
    (relative to the largest value), with and without the input gradient and the bias, and
    in inference with a fused activation."""
    monkeypatch.setenv("NPVAE_NUM_THREADS", threads)
    layer = npvae.Conv2d(1, o, k, stride=s, padding=pad, rng=rng, dtype=dtype)
    x = rng.standard_normal((n, 1, *hw)).astype(dtype)
    dy = rng.standard_normal((n, o, *layer.output_shape(*hw))).astype(dtype)
    expected = forced_matches_im2col(monkeypatch, layer, "cin1", x, dy, dtype, tol)
    act = npvae.layers.LeakyReLU(0.2)
    with npvae.layers.inference():
        fused = layer.forward(x, act=act)
    assert layer.algorithm == "cin1"
    y = expected[0]
    np.testing.assert_allclose(fused, np.where(y > 0, y, 0.2 * y), rtol=tol, atol=tol * np.abs(y).max())
    plain = npvae.Conv2d(1, o, k, stride=s, padding=pad, bias=False, rng=rng, dtype=dtype)
    plain.params["W"][...] = layer.params["W"]
    y0 = plain.forward(x)
    plain.backward(dy)
    assert plain.algorithm == "cin1" and "b" not in plain.grads
    assert np.abs(y0 + layer.params["b"][:, None, None] - y).max() <= tol * np.abs(y).max()
    assert np.abs(plain.grads["W"] - expected[2]).max() <= tol * np.abs(expected[2]).max()


@pytest.mark.parametrize("k,s,pad,hw", [(3, 1, 1, (5, 12)), (5, 2, 2, (7, 18)), (4, 2, 1, (6, 20))])
def test_cin1_finite_differences_float64(rng, monkeypatch, k, s, pad, hw):
    """Output rows of 9 to 12 pixels: at least one float64 vector, so the vector kernels run."""
    monkeypatch.setenv("NPVAE_CONV_ALGO", "cin1")
    layer = npvae.Conv2d(1, 3, k, stride=s, padding=pad, rng=rng, dtype=np.float64)
    errors = check_layer(layer, rng.standard_normal((2, 1, *hw)), rng)
    assert layer.algorithm == "cin1"
    assert set(errors) == {"x", "W", "b"}
    for name, err in errors.items():
        assert err < 1e-7, f"cin1: gradient of {name} has relative error {err:.2e}"


def test_auto_mode_may_choose_cin1(rng, monkeypatch):
    """Auto mode times cin1 beside the others for a layer of one input channel, and takes
    it when it measures faster."""
    monkeypatch.setenv("NPVAE_NUM_THREADS", "1")
    layer = npvae.Conv2d(1, 16, 5, stride=2, padding=2, rng=rng)
    x = rng.standard_normal((2, 1, 32, 24)).astype(np.float32)
    timed = []

    def measure(layer_, x_, options):
        timed.extend(a.name for a in options)
        return {a.name: (1.0 if a.name == "cin1" else 2.0) for a in options}

    monkeypatch.setattr(conv_algos, "measure", measure)
    y = layer.forward(x)
    assert timed == ["im2col", "direct", "cin1"] and layer.algorithm == "cin1"
    monkeypatch.setenv("NPVAE_CONV_ALGO", "cin1")
    np.testing.assert_array_equal(layer.forward(x), y)


# -- NPVAE_CONV_ALGO -------------------------------------------------------------------------------

@pytest.mark.parametrize("forced,kernel,stride,out_channels,expected", [
    ("winograd", 3, 1, 4, "winograd"),
    ("winograd4", 3, 1, 4, "winograd4"),
    ("winograd", 3, 2, 4, "im2col"),       # stride 2: falls back
    ("winograd4", 5, 1, 4, "im2col"),      # 5x5 kernel: falls back
    ("direct", 3, 1, 16, "direct"),        # forced, direct runs at any width
    ("direct", 4, 2, 2, "direct"),         # stride 2: the register-tiled forward
    ("im2col", 3, 1, 1, "im2col"),
    ("cin1", 3, 1, 4, "im2col"),           # two input channels: falls back
])
def test_forced_algorithm_and_fallback(rng, monkeypatch, forced, kernel, stride, out_channels, expected):
    monkeypatch.setenv("NPVAE_CONV_ALGO", f" {forced.upper()} ")      # case and spaces do not matter
    layer = npvae.Conv2d(2, out_channels, kernel, stride=stride, padding=1, rng=rng)
    x = rng.standard_normal((2, 2, 8, 7)).astype(np.float32)
    y = layer.forward(x)
    layer.backward(np.ones_like(y))
    assert layer.algorithm == expected
    assert not (conv_algos.cache_path()).exists()          # forcing times nothing


def test_unknown_algorithm_names_the_choices(rng, monkeypatch):
    monkeypatch.setenv("NPVAE_CONV_ALGO", "fft")
    layer = npvae.Conv2d(2, 3, 3, rng=rng)
    with pytest.raises(ValueError, match=r"NPVAE_CONV_ALGO='fft' is not one of auto, im2col, direct, winograd"):
        layer.forward(np.zeros((1, 2, 5, 5), np.float32))


def test_only_im2col_is_not_timed(rng, monkeypatch):
    """A 5x5 stride-1 layer too wide for the direct kernels, on one thread, has one
    candidate: auto mode runs it without timing or a cache entry."""
    monkeypatch.setenv("NPVAE_NUM_THREADS", "1")
    layer = npvae.Conv2d(2, 16, 5, padding=2, rng=rng)
    layer.forward(np.zeros((2, 2, 8, 8), np.float32))
    assert layer.algorithm == "im2col"
    assert not conv_algos.cache_path().exists()


def test_auto_candidates():
    names = lambda layer: [a.name for a in conv_algos.candidates(layer)]  # noqa: E731
    assert names(npvae.Conv2d(3, 2, 3, padding=1)) == ["im2col", "direct", "winograd", "winograd4"]
    assert names(npvae.Conv2d(3, 32, 3, padding=1)) == ["im2col", "winograd", "winograd4"]   # too wide for direct
    assert names(npvae.Conv2d(3, 2, 5, padding=2)) == ["im2col", "direct"]
    assert names(npvae.Conv2d(3, 2, 3, stride=2)) == ["im2col", "direct"]
    assert names(npvae.Conv2d(24, 48, 5, stride=2, padding=2)) == ["im2col", "direct"]   # any width when strided
    assert names(npvae.Conv2d(1, 24, 3, padding=1)) == ["im2col", "winograd", "winograd4", "cin1"]  # one input channel
    assert names(npvae.Conv2d(1, 16, 5, stride=2, padding=2)) == ["im2col", "direct", "cin1"]


@pytest.mark.parametrize("threads,hw,expected", [
    ("2", (28, 28), ["im2col", "direct", "im2col@1", "direct@1"]),   # 2*8*4*2*9*196 FLOPs: small, also on one thread
    ("1", (28, 28), ["im2col", "direct"]),                          # one thread already
    ("2", (1024, 1024), ["im2col", "direct"]),                      # 2*8*4*2*9*512*512 = 302 MFLOP: large enough to share
])
def test_small_layers_are_also_timed_on_one_thread(monkeypatch, threads, hw, expected):
    monkeypatch.setenv("NPVAE_NUM_THREADS", threads)
    layer = npvae.Conv2d(2, 4, 3, stride=2, padding=1)
    x = np.zeros((8, 2, *hw), np.float32)
    assert [a.name for a in conv_algos.candidates(layer, x)] == expected


@pytest.mark.parametrize("algo", ["im2col", "winograd", "direct", "cin1"])
def test_one_thread_variant_equals_the_algorithm_on_one_thread(rng, monkeypatch, algo):
    """``<algo>@1`` on two threads gives, bit for bit, what ``<algo>`` gives with
    NPVAE_NUM_THREADS=1, and runs every chunk on the calling thread."""
    c, w = (1, 37) if algo == "cin1" else (3, 8)          # cin1: one input channel, rows of whole vectors
    x = rng.standard_normal((6, c, 9, w)).astype(np.float32)
    dy = rng.standard_normal((6, 4, 9, w)).astype(np.float32)
    layer = npvae.Conv2d(c, 4, 3, padding=1, rng=rng)
    monkeypatch.setenv("NPVAE_NUM_THREADS", "1")
    monkeypatch.setenv("NPVAE_CONV_ALGO", algo)
    expected = run(layer, x, dy)
    monkeypatch.setenv("NPVAE_NUM_THREADS", "2")
    monkeypatch.setenv("NPVAE_CONV_ALGO", f"{algo}@1")
    seen = set()
    original = npvae.threads.for_each_chunk
    monkeypatch.setattr(npvae.threads, "for_each_chunk", lambda n, step, work: original(
        n, step, lambda part, worker: (seen.add(threading.get_ident()), work(part, worker))))
    got = run(layer, x, dy)
    assert layer.algorithm == f"{algo}@1"
    assert seen == {threading.get_ident()}
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def test_threads_limit_nests_and_restores(monkeypatch):
    monkeypatch.setenv("NPVAE_NUM_THREADS", "2")
    with npvae.threads.at_most(1):
        assert npvae.threads.worker_count() == 1
        with npvae.threads.at_most(2):              # a limit never raises the count
            assert npvae.threads.worker_count() == 1
    assert npvae.threads.worker_count() == 2
    with pytest.raises(ValueError, match="at least 1"):
        with npvae.threads.at_most(0):
            pass


# -- auto mode and its cache -------------------------------------------------------------------------

def test_auto_times_on_a_copy_and_caches_the_winner(rng, monkeypatch):
    layer = npvae.Conv2d(3, 2, 3, padding=1, rng=rng)
    x = rng.standard_normal((4, 3, 9, 7)).astype(np.float32)
    w_before = layer.params["W"].copy()
    for g in layer.grads.values():
        g[...] = 7.0
    y = layer.forward(x)
    # the timing (forward and backward runs) left the parameters and the gradients alone
    np.testing.assert_array_equal(layer.params["W"], w_before)
    assert all((g == 7.0).all() for g in layer.grads.values())
    chosen = layer.algorithm
    timed = {a.name for a in conv_algos.candidates(layer, x)}     # on 2 threads also each "@1"
    assert {"im2col", "direct", "winograd", "winograd4"} <= timed and chosen in timed

    data = json.loads(conv_algos.cache_path().read_text())
    key = conv_algos.shape_key(layer, x)
    assert data["layers"][key]["algorithm"] == chosen
    assert set(data["layers"][key]["ms"]) == timed
    assert "N4 9x7 float32" in key and "k3x3 s1x1 p1x1 C3 O2" in key

    # the same result as the chosen algorithm forced, bit for bit
    monkeypatch.setenv("NPVAE_CONV_ALGO", chosen)
    np.testing.assert_array_equal(layer.forward(x), y)
    monkeypatch.delenv("NPVAE_CONV_ALGO")

    # another batch size is another key; the same one is not timed again
    monkeypatch.setattr(conv_algos, "measure", lambda *a: pytest.fail("timed twice"))
    layer.forward(x)
    assert layer.algorithm == chosen


def test_cache_file_is_reused_by_a_new_process(rng, monkeypatch):
    layer = npvae.Conv2d(3, 4, 3, padding=1, rng=rng)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    layer.forward(x)
    # a new process: nothing in memory; the file says winograd4 (edited by hand here)
    path = conv_algos.cache_path()
    data = json.loads(path.read_text())
    data["layers"][conv_algos.shape_key(layer, x)]["algorithm"] = "winograd4"
    path.write_text(json.dumps(data))
    conv_algos.forget()
    monkeypatch.setattr(conv_algos, "measure", lambda *a: pytest.fail("the cached choice was not used"))
    layer.forward(x)
    assert layer.algorithm == "winograd4"


@pytest.mark.parametrize("stale", ["direct", "fft"])
def test_cache_entry_naming_an_unusable_algorithm_is_timed_again(rng, monkeypatch, stale):
    """An entry that names no candidate of the layer (direct for 16 outputs, an unknown
    name) is timed again and replaced."""
    layer = npvae.Conv2d(3, 16, 3, padding=1, rng=rng)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    path = conv_algos.cache_path()
    path.parent.mkdir(parents=True)
    key = conv_algos.shape_key(layer, x)
    path.write_text(json.dumps({"format": conv_algos.CACHE_FORMAT, "version": 1,
                                "layers": {key: {"algorithm": stale}}}))
    calls, real = [], conv_algos.measure
    monkeypatch.setattr(conv_algos, "measure", lambda *a: calls.append(1) or real(*a))
    layer.forward(x)
    assert calls and layer.algorithm.removesuffix("@1") in ("im2col", "winograd", "winograd4")
    assert json.loads(path.read_text())["layers"][key]["algorithm"] == layer.algorithm


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"format": "something else", "layers": {}}', ""])
def test_corrupt_cache_file_warns_once_and_is_rewritten(rng, content):
    path = conv_algos.cache_path()
    path.parent.mkdir(parents=True)
    path.write_text(content)
    layer = npvae.Conv2d(3, 2, 3, padding=1, rng=rng)
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    with pytest.warns(RuntimeWarning, match=r"conv_algos\.json is damaged .* ignored and will be rewritten"):
        y = layer.forward(x)
    assert y.shape == (2, 2, 5, 5)
    data = json.loads(path.read_text())
    assert data["layers"][conv_algos.shape_key(layer, x)]["algorithm"] == layer.algorithm
    path.write_text(content)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                   # once per process
        layer.forward(rng.standard_normal((3, 3, 5, 5)).astype(np.float32))


def test_unwritable_cache_keeps_the_choice_in_memory(rng, monkeypatch, tmp_path):
    blocker = tmp_path / "a file"
    blocker.write_text("")
    monkeypatch.setenv("NPVAE_CACHE_DIR", str(blocker / "cache"))     # a folder inside a file
    layer = npvae.Conv2d(3, 2, 3, padding=1, rng=rng)
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    with pytest.warns(RuntimeWarning, match=r"cannot write the convolution algorithm cache .*NPVAE_CACHE_DIR"):
        layer.forward(x)
    chosen = layer.algorithm
    monkeypatch.setattr(conv_algos, "measure", lambda *a: pytest.fail("timed again"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer.forward(x)
    assert layer.algorithm == chosen


def test_another_process_choice_wins(rng, monkeypatch):
    """Two processes timing the same layer at once agree on the first stored choice."""
    layer = npvae.Conv2d(3, 4, 3, padding=1, rng=rng)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    key = conv_algos.shape_key(layer, x)
    real = conv_algos.measure

    def measure_while_another_process_stores(*args):
        times = real(*args)
        path = conv_algos.cache_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"format": conv_algos.CACHE_FORMAT, "version": 1,
                                    "layers": {key: {"algorithm": "winograd4"}}}))
        return {name: (0.0 if name == "im2col" else 1.0) for name in times}

    monkeypatch.setattr(conv_algos, "measure", measure_while_another_process_stores)
    layer.forward(x)
    assert layer.algorithm == "winograd4"


# -- PyTorch ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("algo", ALGOS)
def test_against_pytorch_float32(rng, monkeypatch, algo):
    torch = pytest.importorskip("torch")
    monkeypatch.setenv("NPVAE_CONV_ALGO", algo)
    layer = npvae.Conv2d(8, 5, 3, padding=1, rng=rng)
    x = rng.standard_normal((3, 8, 13, 11)).astype(np.float32)
    dy = rng.standard_normal((3, 5, 13, 11)).astype(np.float32)
    ours = run(layer, x, dy)
    assert layer.algorithm == algo
    tx = torch.tensor(x, requires_grad=True)
    tw, tb = (torch.tensor(layer.params[k], requires_grad=True) for k in ("W", "b"))
    ty = torch.nn.functional.conv2d(tx, tw, tb, padding=1)
    ty.backward(torch.tensor(dy))
    for name, a, t in zip(("y", "dx", "dW", "db"), ours, (ty, tx.grad, tw.grad, tb.grad)):
        t = t.detach().numpy()
        assert np.abs(a - t).max() <= TOL32[algo] * np.abs(t).max(), f"{algo} {name}"


@pytest.mark.parametrize("k,s,pad", [(3, 1, 1), (5, 2, 2), (4, 2, 1), (3, 3, 0)])
def test_cin1_against_pytorch_float32(rng, monkeypatch, k, s, pad):
    torch = pytest.importorskip("torch")
    monkeypatch.setenv("NPVAE_CONV_ALGO", "cin1")
    layer = npvae.Conv2d(1, 24, k, stride=s, padding=pad, rng=rng)
    x = rng.standard_normal((3, 1, 37, 45)).astype(np.float32)
    dy = rng.standard_normal((3, 24, *layer.output_shape(37, 45))).astype(np.float32)
    ours = run(layer, x, dy)
    assert layer.algorithm == "cin1"
    tx = torch.tensor(x, requires_grad=True)
    tw, tb = (torch.tensor(layer.params[k_], requires_grad=True) for k_ in ("W", "b"))
    ty = torch.nn.functional.conv2d(tx, tw, tb, stride=s, padding=pad)
    ty.backward(torch.tensor(dy))
    for name, a, t in zip(("y", "dx", "dW", "db"), ours, (ty, tx.grad, tw.grad, tb.grad)):
        t = t.detach().numpy()
        assert np.abs(a - t).max() <= TOL32["cin1"] * np.abs(t).max(), name


@pytest.mark.parametrize("k,s,pad", [(5, 2, 2), (4, 2, 1), (3, 3, 0)])
def test_strided_direct_against_pytorch_float32(rng, monkeypatch, k, s, pad):
    torch = pytest.importorskip("torch")
    monkeypatch.setenv("NPVAE_CONV_ALGO", "direct")
    layer = npvae.Conv2d(6, 16, k, stride=s, padding=pad, rng=rng)
    x = rng.standard_normal((3, 6, 19, 14)).astype(np.float32)
    dy = rng.standard_normal((3, 16, *layer.output_shape(19, 14))).astype(np.float32)
    ours = run(layer, x, dy)
    assert layer.algorithm == "direct"
    tx = torch.tensor(x, requires_grad=True)
    tw, tb = (torch.tensor(layer.params[k_], requires_grad=True) for k_ in ("W", "b"))
    ty = torch.nn.functional.conv2d(tx, tw, tb, stride=s, padding=pad)
    ty.backward(torch.tensor(dy))
    for name, a, t in zip(("y", "dx", "dW", "db"), ours, (ty, tx.grad, tw.grad, tb.grad)):
        t = t.detach().numpy()
        assert np.abs(a - t).max() <= TOL32["direct"] * np.abs(t).max(), name


# -- ConvTranspose2d: the backward by im2col or by the strided direct kernels ----------------------

TRANSPOSED = [  # n, c, o, (h, w), kernel, stride, padding, output_padding
    (3, 4, 3, (8, 6), 5, 2, 2, 1),      # the music decoders' geometry, smaller
    (2, 3, 5, (7, 7), 4, 2, 1, 0),      # the image U-Nets' up-convolutions
    (2, 6, 2, (5, 9), 3, 2, 1, 1),
    (2, 2, 3, (4, 5), 4, 3, 1, 2),      # stride 3
    (3, 3, 2, (1, 1), 5, 2, 2, 1),      # a 1x1 input
    (2, 4, 4, (6, 6), 2, 2, 0, 0),      # windows that tile the output
]


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 1e-5)])
@pytest.mark.parametrize("threads", ["1", "2"])
@pytest.mark.parametrize("n,c,o,hw,k,s,pad,opad", TRANSPOSED)
def test_transposed_direct_backward_agrees_with_im2col(rng, monkeypatch, backend, dtype, tol, threads, n, c, o, hw,
                                                       k, s, pad, opad):
    """A transposed layer forced to ``direct`` gives im2col's output and gradients
    (relative to the largest value), and with needs_input_grad False the same weight
    gradient and no input gradient; in inference nothing is chosen (one forward)."""
    monkeypatch.setenv("NPVAE_NUM_THREADS", threads)
    layer = npvae.ConvTranspose2d(c, o, k, stride=s, padding=pad, output_padding=opad, rng=rng, dtype=dtype)
    x = rng.standard_normal((n, c, *hw)).astype(dtype)
    dy = rng.standard_normal((n, o, *layer.output_shape(*hw))).astype(dtype)
    expected = forced_matches_im2col(monkeypatch, layer, "direct", x, dy, dtype, tol)
    with npvae.layers.inference():
        np.testing.assert_array_equal(layer.forward(x), expected[0])


@pytest.mark.parametrize("k,s,pad,opad,hw", [(5, 2, 2, 1, (4, 3)), (4, 2, 1, 0, (3, 4)), (3, 3, 1, 2, (2, 3))])
def test_transposed_direct_finite_differences_float64(rng, monkeypatch, k, s, pad, opad, hw):
    monkeypatch.setenv("NPVAE_CONV_ALGO", "direct")
    layer = npvae.ConvTranspose2d(2, 3, k, stride=s, padding=pad, output_padding=opad, rng=rng, dtype=np.float64)
    errors = check_layer(layer, rng.standard_normal((2, 2, *hw)), rng)
    assert layer.algorithm == "direct"
    assert set(errors) == {"x", "W", "b"}
    for name, err in errors.items():
        assert err < 1e-7, f"direct transposed: gradient of {name} has relative error {err:.2e}"


def test_transposed_auto_mode_times_both_and_may_choose_direct(rng, monkeypatch):
    """Auto mode times im2col and direct for a strided transposed layer (and only im2col,
    untimed, at stride 1); a Conv2d algorithm forced by name that a transposed layer does
    not have falls back to im2col."""
    monkeypatch.setenv("NPVAE_NUM_THREADS", "1")
    layer = npvae.ConvTranspose2d(6, 3, 5, stride=2, padding=2, output_padding=1, rng=rng)
    x = rng.standard_normal((2, 6, 8, 6)).astype(np.float32)
    timed = []

    def measure(layer_, x_, options):
        timed.extend(a.name for a in options)
        return {a.name: (1.0 if a.name == "direct" else 2.0) for a in options}

    monkeypatch.setattr(conv_algos, "measure", measure)
    layer.forward(x)
    assert timed == ["im2col", "direct"] and layer.algorithm == "direct"
    flat = npvae.ConvTranspose2d(6, 3, 3, padding=1, rng=rng)
    flat.forward(x)
    assert timed == ["im2col", "direct"] and flat.algorithm == "im2col"
    monkeypatch.setenv("NPVAE_CONV_ALGO", "winograd")
    layer.forward(x)
    assert layer.algorithm == "im2col"

"""LSTM and GRU: finite-difference gradients (float64), equality with PyTorch's layers
(float32, same weights), the Numba step loops against their NumPy twins; ToSequence,
FromSequence and Dense over sequences; a model file round trip."""
import numpy as np
import pytest

import npvae
from npvae import kernels
from _gradcheck import check_layer, numerical_gradient, rel_error
from npvae.kernels import numpy_kernels as ref
from npvae.layers import GRU, LSTM, Dense, FromSequence, Sequential, ToSequence, build_layer, inference

RECURRENT = [LSTM, GRU]
SHAPES = [  # input, hidden, layers, bidirectional, (N, T)
    (3, 2, 2, True, (2, 4)),
    (2, 3, 1, False, (3, 5)),
    (4, 2, 1, True, (1, 1)),
]


@pytest.fixture(params=["numba", "numpy"])
def backend(request):
    if request.param not in kernels.available_backends():
        pytest.skip("Numba is not importable")
    before = kernels.backend()
    kernels.set_backend(request.param)
    yield request.param
    kernels.set_backend(before)


def param_errors(layer, x, rng, h=1e-6):
    """Relative errors of every parameter's gradient, by path (``check_layer`` sees a
    layer's own parameters only; these live in its children)."""
    y = layer.forward(x)
    r = rng.standard_normal(y.shape)
    layer.backward(r)
    analytic = {path: g.copy() for path, _, g in layer.named_parameters()}

    def loss():
        return float(np.sum(layer.forward(x) * r))
    return {path: rel_error(analytic[path], numerical_gradient(loss, p, h)) for path, p, _ in layer.named_parameters()}


@pytest.mark.parametrize("cls", RECURRENT)
@pytest.mark.parametrize("n_in,hid,layers,bidi,nt", SHAPES)
def test_gradients(backend, rng, cls, n_in, hid, layers, bidi, nt):
    layer = cls(n_in, hid, num_layers=layers, bidirectional=bidi, rng=rng, dtype=np.float64)
    x = rng.standard_normal((*nt, n_in))
    errors = check_layer(layer, x, rng)             # the input (the layer has no own params)
    assert errors["x"] < 1e-6, errors
    errors = param_errors(layer, x, rng)
    assert len(errors) == 4 * layers * (2 if bidi else 1)
    for path, err in errors.items():
        assert err < 1e-6, f"{layer!r}: gradient of {path} has relative error {err:.2e}"


def test_parameter_names_and_shapes(rng):
    layer = LSTM(5, 3, num_layers=2, bidirectional=True, rng=rng)
    shapes = {path: p.shape for path, p, _ in layer.named_parameters()}
    assert shapes == {**{f"{c}.{k}": s for c in ("l0", "l0_reverse") for k, s in
                         (("W_ih", (12, 5)), ("W_hh", (12, 3)), ("b_ih", (12,)), ("b_hh", (12,)))},
                      **{f"{c}.{k}": s for c in ("l1", "l1_reverse") for k, s in
                         (("W_ih", (12, 6)), ("W_hh", (12, 3)), ("b_ih", (12,)), ("b_hh", (12,)))}}
    bound = 1 / np.sqrt(3)
    assert all(np.abs(p).max() <= bound for _, p, _ in layer.named_parameters())
    assert GRU(5, 3, rng=rng).children()["l0"].params["W_ih"].shape == (9, 5)


@pytest.mark.parametrize("cls", RECURRENT)
@pytest.mark.parametrize("layers,bidi", [(1, False), (2, True), (3, True)])
def test_equals_pytorch(backend, rng, cls, layers, bidi):
    torch = pytest.importorskip("torch")
    from npvae_lab.torch_twin import torch_module, torch_recurrent_name
    layer = cls(7, 5, num_layers=layers, bidirectional=bidi, rng=rng)
    t = torch_module(layer)
    x = rng.standard_normal((4, 9, 7)).astype(np.float32)
    y = layer.forward(x)
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = t(xt)
    np.testing.assert_allclose(y, yt.detach().numpy(), atol=1e-5, rtol=1e-5)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(layer.backward(dy), xt.grad.numpy(), atol=1e-5, rtol=1e-5)
    for path, _, g in layer.named_parameters():
        np.testing.assert_allclose(g, getattr(t.rnn, torch_recurrent_name(path)).grad.numpy(), atol=1e-5,
                                   rtol=1e-5, err_msg=path)


@pytest.mark.parametrize("cls", RECURRENT)
def test_directions_on_two_threads_equal_one_after_the_other(backend, rng, monkeypatch, cls):
    from npvae.layers import recurrent
    layer = cls(6, 5, num_layers=2, bidirectional=True, rng=rng)
    x = rng.standard_normal((3, 7, 6)).astype(np.float32)
    dy = rng.standard_normal((3, 7, 10)).astype(np.float32)
    runs = []
    for workers, min_macs in (("1", recurrent.PARALLEL_MIN_MACS), ("2", 0)):
        monkeypatch.setenv("NPVAE_NUM_THREADS", workers)
        monkeypatch.setattr(recurrent, "PARALLEL_MIN_MACS", min_macs)
        y = layer.forward(x)
        runs.append([y, layer.backward(dy)] + [g.copy() for _, _, g in layer.named_parameters()])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


# -- the Numba step loops against their NumPy twins ---------------------------------------------
try:
    from npvae.kernels import numba_kernels
except ImportError:
    numba_kernels = None
needs_numba = pytest.mark.skipif(numba_kernels is None, reason="Numba is not importable")


def close(a, b, dtype):
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("t_len,hid", [(1, 4), (6, 3), (6, 5)])
def test_lstm_kernels(rng, dtype, reverse, t_len, hid):
    n = 3
    proj = rng.standard_normal((t_len, n, 4 * hid)).astype(dtype)
    w_hh = (0.5 * rng.standard_normal((4 * hid, hid))).astype(dtype)
    dh = rng.standard_normal((t_len, n, hid)).astype(dtype)
    lstm_kernels_agree(proj, w_hh, dh, reverse, dtype)


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lstm_kernels_saturated_and_nan(rng, dtype):
    """Pre-activations far out give the gates' limits 0, 1, -1 (the float32 ``exp`` of
    the Numba kernels is clamped to [-87, 88]), a NaN stays NaN, in both backends."""
    t_len, n, hid = 3, 2, 8
    far = np.array([-1e4, -200.0, -89.0, -87.5, -44.0, 0.0, 44.0, 87.5, 88.5, 200.0, 1e4])
    proj = rng.choice(far, (t_len, n, 4 * hid)).astype(dtype)
    proj[-1, 1, 3] = np.nan                                 # the last step's input gate
    w_hh = (0.5 * rng.standard_normal((4 * hid, hid))).astype(dtype)
    dh = rng.standard_normal((t_len, n, hid)).astype(dtype)
    gates, h, c, _ = lstm_kernels_agree(proj, w_hh, dh, False, dtype)
    nan = np.zeros(gates.shape, bool)
    nan[-1, 1, 3] = True
    np.testing.assert_array_equal(np.isnan(gates), nan)
    np.testing.assert_array_equal(np.isnan(c), nan[:, :, :hid])
    np.testing.assert_array_equal(np.isnan(h), nan[:, :, :hid])
    sat = np.abs(proj) > 80                 # |h W_hh^T| < 15 here: 87.5 stays beyond 72
    limit = np.where(proj > 0, 1.0, 0.0)
    limit[:, :, 2 * hid:3 * hid] = np.sign(proj[:, :, 2 * hid:3 * hid])
    np.testing.assert_allclose(gates[sat], limit[sat], rtol=0, atol=1e-30)


@needs_numba
def test_lstm_gates_float32_to_rounding(rng):
    """The Numba kernel's float32 sigmoid and tanh (its own ``exp``) over [-30, 30], at
    the first step (no recurrent term): within 3e-7 of the exact values."""
    hid = 4096
    z = np.linspace(-30, 30, 4 * hid).astype(np.float32)
    gates = rng.permutation(z).reshape(1, 1, 4 * hid)
    pre = gates.astype(np.float64)
    h, c = np.empty((1, 1, hid), np.float32), np.empty((1, 1, hid), np.float32)
    numba_kernels.lstm_forward(gates, np.zeros((4 * hid, hid), np.float32), False, h, c)
    exact = 1 / (1 + np.exp(-pre))
    exact[:, :, 2 * hid:3 * hid] = np.tanh(pre[:, :, 2 * hid:3 * hid])
    assert np.abs(gates - exact).max() < 3e-7
    i, g, o = exact[..., :hid], exact[..., 2 * hid:3 * hid], exact[..., 3 * hid:]
    assert np.abs(c - i * g).max() < 3e-7 and np.abs(h - o * np.tanh(c.astype(np.float64))).max() < 3e-7


def lstm_kernels_agree(proj, w_hh, dh, reverse, dtype):
    """Runs both LSTM kernels of both backends and checks that they agree; returns the
    Numba one's ``(gates, h, c, dz)``."""
    t_len, n, hid = dh.shape
    out = []
    for k in (ref, numba_kernels):
        gates, h, c = proj.copy(), np.full((t_len, n, hid), np.nan, dtype), np.full((t_len, n, hid), np.nan, dtype)
        k.lstm_forward(gates, w_hh, reverse, h, c)
        dz = k.lstm_backward(dh, gates, c, w_hh, reverse, np.full(proj.shape, np.nan, dtype))
        out.append((gates, h, c, dz))
    for a, b in zip(*out):
        close(b, a, dtype)
    return out[1]


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("t_len", [1, 6])
def test_gru_kernels(rng, dtype, reverse, t_len):
    n, hid = 3, 4
    proj = rng.standard_normal((t_len, n, 3 * hid)).astype(dtype)
    w_hh = (0.5 * rng.standard_normal((3 * hid, hid))).astype(dtype)
    b_hh = rng.standard_normal(3 * hid).astype(dtype)
    dh = rng.standard_normal((t_len, n, hid)).astype(dtype)
    out = []
    for k in (ref, numba_kernels):
        gates, h, hn = proj.copy(), np.full((t_len, n, hid), np.nan, dtype), np.full((t_len, n, hid), np.nan, dtype)
        k.gru_forward(gates, np.ascontiguousarray(w_hh.T), b_hh, reverse, h, hn)
        dzx, dzh = np.full(proj.shape, np.nan, dtype), np.full(proj.shape, np.nan, dtype)
        k.gru_backward(dh, gates, hn, h, w_hh, reverse, dzx, dzh)
        out.append((gates, h, hn, dzx, dzh))
    for a, b in zip(*out):
        close(b, a, dtype)


# -- behaviour ---------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", RECURRENT)
def test_reverse_direction_reads_the_future(rng, cls):
    """The forward half of a step's output depends on earlier steps only, the reverse half
    on later ones only."""
    layer = cls(2, 3, bidirectional=True, rng=rng, dtype=np.float64)
    x = rng.standard_normal((1, 5, 2))
    y = layer.forward(x)
    x2 = x.copy()
    x2[0, 2] += 1.0
    y2 = layer.forward(x2)
    np.testing.assert_array_equal(y2[0, :2, :3], y[0, :2, :3])
    np.testing.assert_array_equal(y2[0, 3:, 3:], y[0, 3:, 3:])
    assert not np.allclose(y2[0, 2:, :3], y[0, 2:, :3]) and not np.allclose(y2[0, :3, 3:], y[0, :3, 3:])


@pytest.mark.parametrize("cls", RECURRENT)
def test_train_eval_inference_agree(rng, cls):
    layer = cls(3, 4, num_layers=2, bidirectional=True, rng=rng)
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    y = layer.forward(x)
    np.testing.assert_array_equal(layer.eval().forward(x), y)
    with inference():
        np.testing.assert_array_equal(layer.forward(x), y)
    with pytest.raises(RuntimeError, match="backward called before forward"):
        layer.backward(y)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((2, 5, 4), np.float32), r"3 features/channels on axis 2 \(\(N, T, input_size\)\)"),
    (np.zeros((2, 3), np.float32), r"expected input of shape \(N, T, input_size\)"),
    (np.zeros((2, 5, 3), np.float64), "expected float32 input, got float64"),
    (np.zeros((2, 0, 3), np.float32), "at least one time step"),
])
def test_bad_input_is_refused(rng, bad, match):
    with pytest.raises(ValueError, match=match):
        LSTM(3, 2, rng=rng).forward(bad)


@pytest.mark.parametrize("kwargs, match", [({"hidden_size": 0}, "hidden_size as a whole number >= 1"),
                                           ({"num_layers": 1.5}, "num_layers as a whole number"),
                                           ({"bidirectional": "yes"}, "bidirectional as true or false")])
def test_bad_sizes_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GRU(**{"input_size": 3, "hidden_size": 2, **kwargs})


# -- sequences of a feature map ------------------------------------------------------------------
def test_to_and_from_sequence(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    seq = ToSequence(dtype=np.float64).forward(x)
    assert seq.shape == (2, 5, 12) and seq[1, 2, 1 * 4 + 3] == x[1, 1, 3, 2]
    back = FromSequence(3, 4, dtype=np.float64)
    np.testing.assert_array_equal(back.forward(seq), x)
    for layer, inp in ((ToSequence(dtype=np.float64), x), (FromSequence(3, 4, dtype=np.float64), seq)):
        assert check_layer(layer, inp, rng)["x"] < 1e-8
    with pytest.raises(ValueError, match=r"FromSequence expected input of shape \(N, T, 12\)"):
        back.forward(np.zeros((2, 5, 10)))
    with pytest.raises(ValueError, match=r"ToSequence expected input of shape \(N, C, F, T\)"):
        ToSequence().forward(np.zeros((2, 5, 10)))


@pytest.mark.parametrize("activation", [None, "tanh"])
def test_dense_over_a_sequence(rng, activation):
    layer = Dense(4, 3, activation=activation, rng=rng, dtype=np.float64)
    x = rng.standard_normal((2, 5, 4))
    y = layer.forward(x)
    assert y.shape == (2, 5, 3)
    np.testing.assert_allclose(y[1, 2], layer.forward(x[1, 2][None])[0])
    errors = check_layer(layer, x, rng)
    assert max(errors.values()) < 1e-6, errors


def bottleneck(rng, dtype=np.float64, cls=LSTM):
    """A music U-Net's recurrent bottleneck on a (N, 2, 3, T) feature map, as Open-Unmix."""
    return Sequential(ToSequence(), Dense(6, 4, activation="tanh", rng=rng, dtype=dtype),
                      cls(4, 2, num_layers=2, bidirectional=True, rng=rng, dtype=dtype),
                      Dense(4, 6, rng=rng, dtype=dtype), FromSequence(2, 3))


def test_recurrent_bottleneck_gradients(rng):
    model = bottleneck(rng)
    x = rng.standard_normal((2, 2, 3, 4))
    assert check_layer(model, x, rng)["x"] < 1e-6
    errors = param_errors(model, x, rng)
    assert max(errors.values()) < 1e-6, errors


@pytest.mark.parametrize("cls", RECURRENT)
def test_model_file_round_trip(tmp_path, rng, cls):
    model = bottleneck(rng, np.float32, cls)
    x = rng.standard_normal((2, 2, 3, 7)).astype(np.float32)
    path = npvae.save_model(tmp_path / "m.h5", model, {"model": "bottleneck"})
    loaded = npvae.load_model(path)
    assert loaded.spec() == model.spec() == build_layer(model.spec()).spec()
    np.testing.assert_array_equal(loaded.forward(x), model.forward(x))

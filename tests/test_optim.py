"""Adam and SGD against steps worked by hand; clipping; exact resume from state."""
import numpy as np
import pytest

import npvae


def one_param_model(value, grad):
    layer = npvae.Dense(1, 1, dtype=np.float64)
    layer.params["W"][...] = value
    layer.params["b"][...] = 0
    layer.grads["W"][...] = grad
    layer.grads["b"][...] = 0
    return layer


def test_adam_two_steps_by_hand():
    model = one_param_model(1.0, 0.5)
    opt = npvae.Adam(model, lr=0.1, betas=(0.9, 0.999), eps=1e-8)
    opt.step()
    # t=1: m = 0.05, v = 0.00025; m_hat = 0.5, v_hat = 0.25; p = 1 - 0.1 * 0.5 / (0.5 + 1e-8)
    p1 = 1 - 0.1 * 0.5 / (0.5 + 1e-8)
    assert model.params["W"][0, 0] == pytest.approx(p1, abs=1e-12)
    model.grads["W"][...] = -1.0
    opt.step()
    m = 0.9 * 0.05 + 0.1 * -1.0
    v = 0.999 * 0.00025 + 0.001 * 1.0
    expected = p1 - 0.1 * (m / (1 - 0.9 ** 2)) / (np.sqrt(v / (1 - 0.999 ** 2)) + 1e-8)
    assert model.params["W"][0, 0] == pytest.approx(expected, abs=1e-12)


def test_adamw_decoupled_weight_decay():
    model = one_param_model(2.0, 0.0)
    npvae.Adam(model, lr=0.1, weight_decay=0.5).step()
    # zero gradient: only the decay acts, p <- p * (1 - lr * wd)
    assert model.params["W"][0, 0] == pytest.approx(2.0 * (1 - 0.05))


def test_sgd_momentum_by_hand():
    model = one_param_model(1.0, 1.0)
    opt = npvae.SGD(model, lr=0.1, momentum=0.9)
    opt.step()
    opt.step()
    # v1 = 1, p1 = 0.9; v2 = 0.9 + 1 = 1.9, p2 = 0.9 - 0.19
    assert model.params["W"][0, 0] == pytest.approx(0.71)


def test_clip_grad_norm():
    model = npvae.Dense(2, 2, dtype=np.float64)
    model.grads["W"][...] = 3.0
    model.grads["b"][...] = 4.0
    norm = npvae.clip_grad_norm(list(model.named_parameters()), 1.0)
    assert norm == pytest.approx(np.sqrt(4 * 9 + 2 * 16))
    total = np.sqrt(sum(np.sum(g ** 2) for _, _, g in model.named_parameters()))
    assert total == pytest.approx(1.0)


@pytest.mark.parametrize("cls,kwargs", [(npvae.Adam, {"lr": 0.01, "weight_decay": 0.01}),
                                        (npvae.Adam, {"lr": 0.01, "ema_decay": 0.9}),
                                        (npvae.SGD, {"lr": 0.01, "momentum": 0.9})])
def test_state_restore_continues_exactly(rng, cls, kwargs):
    def make():
        return npvae.Sequential(npvae.Dense(3, 4, activation="relu", rng=np.random.default_rng(1)),
                                npvae.Dense(4, 2, rng=np.random.default_rng(2)))

    x = rng.standard_normal((8, 3)).astype(np.float32)

    def train(model, opt, steps):
        for _ in range(steps):
            y = model.forward(x)
            model.backward(2 * y / y.size)
            opt.step()

    a = make()
    opt_a = cls(a, **kwargs)
    train(a, opt_a, 6)
    b = make()
    opt_b = cls(b, **kwargs)
    train(b, opt_b, 3)
    state, params = opt_b.state_dict(), b.state_dict()
    c = make()
    c.load_state_dict(params)
    opt_c = cls(c, **kwargs)
    opt_c.load_state_dict(state)
    train(c, opt_c, 3)
    for (path, pa, _), (_, pc, _) in zip(a.named_parameters(), c.named_parameters()):
        np.testing.assert_array_equal(pa, pc, err_msg=path)
    for slot, arrays in opt_a.state_dict()["slots"].items():       # moments and weight average alike
        for path, arr in arrays.items():
            np.testing.assert_array_equal(arr, opt_c.state_dict()["slots"][slot][path], err_msg=f"{slot}/{path}")


def test_weight_average_follows_its_recursion_and_is_lent_exactly(rng):
    model = npvae.Dense(3, 2, rng=np.random.default_rng(1), dtype=np.float64)
    opt = npvae.Adam(model, lr=0.1, ema_decay=0.9)
    avg = {k: v.copy() for k, v in model.state_dict().items()}     # it starts at the initial weights
    for _ in range(4):
        for g in model.grads.values():
            g[...] = rng.standard_normal(g.shape)
        opt.step()
        for k, w in model.state_dict().items():
            avg[k] = 0.9 * avg[k] + 0.1 * w
    trained = {k: v.copy() for k, v in model.state_dict().items()}
    with opt.averaged_weights():
        for k, w in model.state_dict().items():
            np.testing.assert_allclose(w, avg[k], rtol=1e-12, err_msg=k)
            assert not np.allclose(w, trained[k])
    for k, w in model.state_dict().items():                        # the trained weights back, bit for bit
        np.testing.assert_array_equal(w, trained[k], err_msg=k)
    assert "ema" in opt.state_dict()["slots"]
    opt.use_averaged_weights()
    for k, w in model.state_dict().items():
        np.testing.assert_allclose(w, avg[k], rtol=1e-12, err_msg=k)


def test_without_an_average_nothing_is_lent_or_kept():
    model = one_param_model(1.0, 0.5)
    opt = npvae.Adam(model, lr=0.1)
    opt.step()
    w = model.params["W"].copy()
    with opt.averaged_weights():
        np.testing.assert_array_equal(model.params["W"], w)
    opt.use_averaged_weights()
    np.testing.assert_array_equal(model.params["W"], w)
    assert "ema" not in opt.state_dict()["slots"]


def test_optimizer_rejects_bad_settings():
    with pytest.raises(ValueError, match="learning rate"):
        npvae.Adam(npvae.Dense(2, 2), lr=0)
    with pytest.raises(ValueError, match="no parameters"):
        npvae.Adam(npvae.ReLU())
    for decay in (-0.1, 1.0):
        with pytest.raises(ValueError, match="ema_decay"):
            npvae.Adam(npvae.Dense(2, 2), ema_decay=decay)

"""Every loss: value against its definition, gradient against finite differences."""
import numpy as np
import pytest

from npvae import losses
from _gradcheck import numerical_gradient, rel_error

TOL = 1e-7


def check_grad(fn, pred, *args, **kwargs):
    _, grad = fn(pred, *args, **kwargs)[:2]
    num = numerical_gradient(lambda: fn(pred, *args, **kwargs)[0], pred)
    assert rel_error(grad, num) < TOL


@pytest.mark.parametrize("reduction", ["batch", "mean", "sum"])
def test_bce_with_logits(rng, reduction):
    logits, target = rng.standard_normal((4, 6)) * 3, rng.uniform(size=(4, 6))
    check_grad(losses.bce_with_logits, logits, target, reduction=reduction)
    p = 1 / (1 + np.exp(-logits))
    direct = -np.sum(target * np.log(p) + (1 - target) * np.log(1 - p))
    scale = {"batch": 1 / 4, "mean": 1 / 24, "sum": 1.0}[reduction]
    assert losses.bce_with_logits(logits, target, reduction=reduction)[0] == pytest.approx(direct * scale, rel=1e-10)


def test_bce_with_logits_is_stable_for_huge_logits():
    logits = np.array([[1000.0, -1000.0, 0.0]])
    target = np.array([[1.0, 0.0, 0.5]])
    value, grad = losses.bce_with_logits(logits, target)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    assert value == pytest.approx(np.log(2))
    value, _ = losses.bce_with_logits(np.array([[-1000.0]]), np.array([[1.0]]))
    assert value == pytest.approx(1000.0)


def test_bce_on_probabilities(rng):
    prob, target = rng.uniform(0.05, 0.95, (3, 5)), rng.uniform(size=(3, 5))
    check_grad(losses.bce, prob, target)
    logits = np.log(prob / (1 - prob))
    assert losses.bce(prob, target)[0] == pytest.approx(losses.bce_with_logits(logits, target)[0], rel=1e-10)


@pytest.mark.parametrize("fn", [losses.mse, losses.l1])
@pytest.mark.parametrize("reduction", ["batch", "mean", "sum"])
def test_mse_l1(rng, fn, reduction):
    pred, target = rng.standard_normal((3, 2, 4)), rng.standard_normal((3, 2, 4))
    check_grad(fn, pred, target, reduction=reduction)


def test_mse_l1_values():
    pred, target = np.array([[1.0, 2.0], [0.0, -1.0]]), np.array([[0.0, 0.0], [0.0, 1.0]])
    assert losses.mse(pred, target)[0] == pytest.approx((1 + 4 + 0 + 4) / 2)
    assert losses.l1(pred, target, reduction="mean")[0] == pytest.approx((1 + 2 + 0 + 2) / 4)


def test_gaussian_nll(rng):
    mean, target, logvar = rng.standard_normal((3, 4)), rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    value, dmean, dlogvar = losses.gaussian_nll(mean, target, logvar)
    direct = np.sum(0.5 * (np.log(2 * np.pi) + logvar + (target - mean) ** 2 / np.exp(logvar))) / 3
    assert value == pytest.approx(direct, rel=1e-12)
    assert rel_error(dmean, numerical_gradient(lambda: losses.gaussian_nll(mean, target, logvar)[0], mean)) < TOL
    assert rel_error(dlogvar, numerical_gradient(lambda: losses.gaussian_nll(mean, target, logvar)[0], logvar)) < TOL
    # a fixed scalar variance: MSE up to scale and offset
    v0, dm0, dlv0 = losses.gaussian_nll(mean, target, 0.0)
    assert dlv0 is None
    assert rel_error(dm0, losses.mse(mean, target)[1] / 2) < 1e-12


def test_losses_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes differ"):
        losses.mse(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="reduction"):
        losses.mse(np.zeros((2, 3)), np.zeros((2, 3)), reduction="avg")

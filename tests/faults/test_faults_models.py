"""Fault cases of the separation models in memory: weights damaged after loading, and
backward before forward."""
import numpy as np
import pytest
from _faults import lib_error

from npvae.models.blind import BlindSeparationVAE
from npvae.models.mnist import build_model

MODELS = {
    "dense": lambda: build_model("dense", rng=np.random.default_rng(0), hidden=(16,), latent_dim=2),
    "unet": lambda: build_model("unet", rng=np.random.default_rng(0), channels=(2, 2, 4), latent_dim=2),
    "blind": lambda: BlindSeparationVAE(2, 2, (16,), rng=np.random.default_rng(0)),
}


@pytest.mark.fault("models", "separate with a {name} model whose weights became NaN in memory", "clear error")
@pytest.mark.parametrize("name", sorted(MODELS))
def test_damaged_weights_never_give_nan_images(name):
    model = MODELS[name]()
    for _, param, _ in model.named_parameters():
        param[...] = np.nan
    with lib_error(r"produced .* NaN or infinite values .* weights are damaged"):
        model.separate(np.full((3, 28, 28), 0.5, np.float32))


@pytest.mark.fault("models", "backward of a {name} model before any forward", "clear error")
@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_backward_before_forward(name):
    model = MODELS[name]()
    dy = np.zeros((3, 2, 28, 28), np.float32)
    with pytest.raises(RuntimeError, match="backward called before forward"):
        model.backward(dy)

"""The engine's memory estimate (npvae.engine.memory): the parameters it counts from a
task's settings are those of the model the task builds, and a model above the limit is
refused with the numbers."""
import numpy as np
import pytest

from npvae.engine.memory import check_fits, estimate
from npvae.errors import TrainingError
from npvae.layers.base import build_layer
from npvae.models.blind import BlindSeparationVAE
from npvae.models.mnist import build_model
from npvae.models.stacked import mask_network
from npvae.tasks import TASKS


def _built(name, cfg):
    """The model each task's setup builds from ``cfg`` (the same constructor calls)."""
    if name == "mnist":
        return build_model(cfg.model, **cfg.model_kwargs())
    if name == "music":
        return mask_network(cfg.stacks, channels=cfg.channels, latent_channels=cfg.latent_channels)
    spec, shape, _ = TASKS[name].planned_model(cfg)
    kw = {"out_bias": -4.0, "shape": shape, "output": "softplus", "log_input": True} if name == "blind-music" else {}
    return BlindSeparationVAE(cfg.groups, cfg.latent_dim, cfg.hidden, **kw)


CASES = [(name, preset) for name, task in TASKS.items() for preset in task.presets]


@pytest.mark.parametrize("name, preset", CASES, ids=[f"{n}-{p}" for n, p in CASES])
def test_the_planned_model_is_the_built_one(name, preset):
    task = TASKS[name]
    cfg = task.finalize(task.Config(**task.presets[preset]))
    spec, example, _ = task.planned_model(cfg)
    model = _built(name, cfg)
    assert build_layer(spec).spec() == model.spec()
    est = estimate(spec, example, cfg.batch_size)
    n, buffers = model.num_parameters(), sum(b.size for _, b in model.named_buffers())
    assert est.parameters == 4 * (n + buffers) and est.gradients == 4 * n and est.optimiser == 8 * n
    assert est.activations >= 4 * cfg.batch_size * int(np.prod(example))


def test_dense_activations_count_every_layer_output():
    spec = {"type": "DenseSeparationVAE", "hidden": [10], "latent_dim": 3}
    est = estimate(spec, (28, 28), batch_size=2, itemsize=8, slots=3)
    # outputs: encoder 10, head 3 + 3, decoder 10 + 1568; plus the input's 784
    assert est.activations == 3 * 2 * (10 + 6 + 10 + 1568 + 784) * 8
    assert est.optimiser == 3 * est.parameters


def test_a_model_over_the_limit_is_refused_with_the_numbers():
    est = estimate({"type": "DenseSeparationVAE", "hidden": [1000], "latent_dim": 8}, (28, 28), 64)
    check_fits(est, "--hidden", limit=est.total)
    with pytest.raises(TrainingError, match=r"about 0\.\d GiB.*more than this machine's 0\.0 GiB.*--hidden"):
        check_fits(est, "--hidden", limit=est.total - 1)
    assert estimate({"type": "NoSuchLayer"}, (28, 28), 64) is None

"""Atomic checkpoints, layer specs, and the resumable training loop."""
import numpy as np
import pytest

import npvae
from npvae.engine.checkpoint import load_checkpoint, save_checkpoint
from npvae.errors import FileFormatError, TrainingError
from npvae.engine.loop import Trainer


def test_spec_round_trip_rebuilds_the_same_architecture(rng):
    model = npvae.Sequential(npvae.Conv2d(1, 2, (3, 5), stride=(1, 2), padding=1, rng=rng), npvae.LeakyReLU(0.2),
                             npvae.ConvTranspose2d(2, 1, 4, stride=2, padding=1, output_padding=1, rng=rng),
                             npvae.Flatten(), npvae.Dense(10, 3, activation="sigmoid", rng=rng), npvae.Reshape((3,)))
    clone = npvae.build_layer(model.spec())
    assert clone.spec() == model.spec()
    clone.load_state_dict(model.state_dict())
    x = rng.standard_normal((2, 1, 4, 6)).astype(np.float32)
    model.layers[4].in_features  # noqa: B018 - structure is as built
    with pytest.raises(ValueError):
        model.forward(x)  # 10 is the wrong flat size on purpose: the spec still round-trips
    assert "Conv2d(in_channels=1" in repr(model)


def test_checkpoint_round_trip_and_corruption(tmp_path):
    path = tmp_path / "ck.npz"
    save_checkpoint(path, {"a": np.arange(3.0)}, {"epoch": 2, "name": "x"})
    arrays, meta = load_checkpoint(path)
    np.testing.assert_array_equal(arrays["a"], [0, 1, 2])
    assert meta == {"epoch": 2, "name": "x"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.npz"]  # no temporary left behind
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(FileFormatError, match="corrupt"):
        load_checkpoint(path)


def test_failed_write_leaves_old_checkpoint(tmp_path):
    path = tmp_path / "ck.npz"
    save_checkpoint(path, {"a": np.zeros(2)}, {"epoch": 1})
    with pytest.raises(TypeError):
        save_checkpoint(path, {"a": np.zeros(2)}, {"epoch": object()})  # not JSON-able
    assert load_checkpoint(path)[1] == {"epoch": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.npz"]


def _regression_setup(run_dir, seed=0):
    rng = np.random.default_rng(seed)
    model = npvae.Sequential(npvae.Dense(4, 8, activation="tanh", rng=np.random.default_rng(1)),
                             npvae.Dense(8, 1, rng=np.random.default_rng(2)))
    opt = npvae.Adam(model, lr=0.02)
    data = np.random.default_rng(9).standard_normal((64, 4)).astype(np.float32)
    target = np.sin(data.sum(1, keepdims=True))

    def batches(r):
        order = r.permutation(64)
        for i in range(0, 64, 16):
            yield data[order[i:i + 16]], target[order[i:i + 16]]

    def step(batch, epoch):
        x, t = batch
        loss, grad = npvae.losses.mse(model.forward(x), t)
        noise = float(rng.standard_normal())  # consumes the training RNG like sampling would
        model.backward(grad)
        return {"total": loss, "noise": noise}

    def validate():
        return {"total": npvae.losses.mse(model.forward(data), target)[0]}

    trainer = Trainer(model, opt, rng, run_dir, progress=False, log=lambda s: None)
    return trainer, dict(batches=batches, n_batches=4, step=step, validate=validate)


def test_resume_gives_identical_results(tmp_path):
    straight, kw = _regression_setup(tmp_path / "a")
    straight.fit(6, **kw)
    first, kw1 = _regression_setup(tmp_path / "b")
    first.fit(3, **kw1)
    resumed, kw2 = _regression_setup(tmp_path / "b", seed=123)  # fresh objects, wrong seed: resume must fix it
    assert resumed.resume()
    assert resumed.epoch == 3
    resumed.fit(6, **kw2)
    timing = {"seconds"}
    assert {k: v for k, v in resumed.history.items() if k not in timing} == \
        {k: v for k, v in straight.history.items() if k not in timing}
    for (k, a, _), (_, b, _) in zip(straight.model.named_parameters(), resumed.model.named_parameters()):
        np.testing.assert_array_equal(a, b, err_msg=k)
    assert straight.history["val_total"][-1] < straight.history["val_total"][0]
    # the state of a checkpoint read before (as the engine reads it once) restores the same
    again, kw3 = _regression_setup(tmp_path / "c", seed=7)
    assert again.resume(load_checkpoint(tmp_path / "b" / "checkpoint.npz")) and again.epoch == 6
    for (k, a, _), (_, b, _) in zip(resumed.model.named_parameters(), again.model.named_parameters()):
        np.testing.assert_array_equal(a, b, err_msg=k)
    assert again.rng.bit_generator.state == resumed.rng.bit_generator.state and again.history == resumed.history


def test_nan_loss_stops_with_advice(tmp_path):
    trainer, kw = _regression_setup(tmp_path)
    kw["step"] = lambda batch, epoch: {"total": float("nan")}
    with pytest.raises(TrainingError, match="lower the learning rate"):
        trainer.fit(1, **kw)

"""BatchNorm and GroupNorm: gradients, PyTorch parity, eval mode, buffers in state_dict,
checkpoints (resume after SIGKILL) and model files."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import npvae
from npvae.engine.checkpoint import load_checkpoint
from _gradcheck import check_layer
from npvae.files.model_file import save_model
from npvae.layers import BatchNorm, Conv2d, ConvTranspose2d, Dense, GroupNorm, LeakyReLU, ReLU, Sequential, inference

TOL = 1e-6
REPO = Path(__file__).resolve().parents[1]


def _randomise(layer, rng):
    """gamma, beta (and running statistics) away from their initial ones and zeros."""
    c = layer.params["gamma"].size
    layer.params["gamma"][:] = rng.uniform(0.5, 2.0, c)
    layer.params["beta"][:] = rng.standard_normal(c)
    if layer.buffers:
        layer.buffers["running_mean"][:] = rng.standard_normal(c)
        layer.buffers["running_var"][:] = rng.uniform(0.3, 3.0, c)
    return layer


# -- gradients ---------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(6, 3), (3, 4, 5, 3), (3, 2, 1, 2)])
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_gradients(rng, shape, training):
    layer = _randomise(BatchNorm(shape[1], dtype=np.float64), rng).train(training)
    errors = check_layer(layer, 2 * rng.standard_normal(shape) + 1, rng)
    assert set(errors) == {"x", "gamma", "beta"}
    assert max(errors.values()) < TOL, errors


@pytest.mark.parametrize("groups, shape", [(2, (3, 4, 5, 3)), (1, (2, 3, 4, 4)), (4, (2, 4, 3, 2)), (3, (4, 6)),
                                           (2, (2, 4, 7))])
def test_groupnorm_gradients(rng, groups, shape):
    layer = _randomise(GroupNorm(groups, shape[1], dtype=np.float64), rng)
    errors = check_layer(layer, 2 * rng.standard_normal(shape) + 1, rng)
    assert set(errors) == {"x", "gamma", "beta"}
    assert max(errors.values()) < TOL, errors


# -- PyTorch parity ----------------------------------------------------------------------------
def _torch_bn(torch, layer, shape):
    cls = torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d
    ref = cls(layer.num_features, eps=layer.eps, momentum=layer.momentum)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(layer.params["gamma"]))
        ref.bias.copy_(torch.from_numpy(layer.params["beta"]))
    return ref


def _close(a, b, tol=1e-5):
    np.testing.assert_allclose(a, b.detach().numpy() if hasattr(b, "detach") else b, rtol=tol, atol=tol)


@pytest.mark.parametrize("shape", [(16, 5), (4, 6, 7, 9)])
def test_batchnorm_equals_torch_in_training_and_eval(rng, shape):
    torch = pytest.importorskip("torch")
    layer = _randomise(BatchNorm(shape[1], momentum=0.3), rng)
    layer.buffers["running_mean"][:] = 0
    layer.buffers["running_var"][:] = 1
    ref = _torch_bn(torch, layer, shape)
    lr = np.float32(0.05)
    for _ in range(5):      # training steps (SGD on gamma and beta in both)
        x = (3 * rng.standard_normal(shape) + rng.uniform(-2, 2, (1, shape[1]) + (1,) * (len(shape) - 2))
             ).astype(np.float32)
        dy = rng.standard_normal(shape).astype(np.float32)
        xt = torch.from_numpy(x).requires_grad_()
        yt = ref(xt)
        yt.backward(torch.from_numpy(dy))
        y = layer.forward(x)
        dx = layer.backward(dy)
        _close(y, yt)
        _close(dx, xt.grad)
        _close(layer.grads["gamma"], ref.weight.grad)
        _close(layer.grads["beta"], ref.bias.grad)
        with torch.no_grad():
            for p in (ref.weight, ref.bias):
                p -= 0.05 * p.grad
                p.grad = None
        for name in ("gamma", "beta"):
            layer.params[name] -= lr * layer.grads[name]
    _close(layer.buffers["running_mean"], ref.running_mean, 1e-6)
    _close(layer.buffers["running_var"], ref.running_var, 1e-6)
    assert not np.allclose(layer.buffers["running_var"], 1.0)       # the estimates moved
    layer.eval()
    ref.eval()
    x = rng.standard_normal(shape).astype(np.float32)
    xt = torch.from_numpy(x).requires_grad_()
    dy = rng.standard_normal(shape).astype(np.float32)
    ref(xt).backward(torch.from_numpy(dy))
    _close(layer.forward(x), ref(xt))
    _close(layer.backward(dy), xt.grad)
    _close(layer.grads["gamma"], ref.weight.grad)


@pytest.mark.parametrize("groups, shape", [(2, (3, 4, 5, 6)), (1, (2, 6, 4, 4)), (6, (2, 6, 3, 3)), (2, (5, 12))])
def test_groupnorm_equals_torch(rng, groups, shape):
    torch = pytest.importorskip("torch")
    layer = _randomise(GroupNorm(groups, shape[1]), rng)
    ref = torch.nn.GroupNorm(groups, shape[1], eps=layer.eps)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(layer.params["gamma"]))
        ref.bias.copy_(torch.from_numpy(layer.params["beta"]))
    x = (2 * rng.standard_normal(shape) + 1).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    xt = torch.from_numpy(x).requires_grad_()
    yt = ref(xt)
    yt.backward(torch.from_numpy(dy))
    _close(layer.forward(x), yt)
    _close(layer.backward(dy), xt.grad)
    _close(layer.grads["gamma"], ref.weight.grad)
    _close(layer.grads["beta"], ref.bias.grad)
    layer.eval()
    _close(layer.forward(x), yt)        # no batch statistics: eval is training


# -- modes, errors ----------------------------------------------------------------------------
def test_eval_uses_the_running_statistics_and_inference_keeps_nothing(rng):
    layer = _randomise(BatchNorm(3, dtype=np.float64), rng).eval()
    x = rng.standard_normal((2, 3, 4, 4))
    rm, rv = layer.buffers["running_mean"].copy(), layer.buffers["running_var"].copy()
    want = (layer.params["gamma"][:, None, None] * (x - rm[:, None, None]) / np.sqrt(rv[:, None, None] + 1e-5)
            + layer.params["beta"][:, None, None])
    np.testing.assert_allclose(layer.forward(x), want, rtol=1e-12)
    assert np.array_equal(layer.buffers["running_mean"], rm) and np.array_equal(layer.buffers["running_var"], rv)
    with inference():
        y = layer.forward(x)
    np.testing.assert_array_equal(y, layer.forward(x))
    with inference():
        layer.forward(x)
    with pytest.raises(RuntimeError, match="backward called before forward"):
        layer.backward(y)


@pytest.mark.parametrize("make, x, match", [
    (lambda: BatchNorm(3), np.zeros((1, 3), np.float32), "more than one value per channel"),
    (lambda: BatchNorm(3), np.zeros((4, 2, 2, 2), np.float32), "3 channels on axis 1"),
    (lambda: BatchNorm(3), np.zeros((4, 3, 2), np.float32), r"\(N, C\) or \(N, C, H, W\)"),
    (lambda: BatchNorm(3), np.zeros((4, 3)), "cast with"),
    (lambda: GroupNorm(2, 4), np.zeros((2, 3, 2, 2), np.float32), "4 channels on axis 1"),
])
def test_bad_input_is_refused_clearly(make, x, match):
    with pytest.raises(ValueError, match=match):
        make().forward(x)


@pytest.mark.parametrize("make, match", [
    (lambda: BatchNorm(0), "num_features >= 1"), (lambda: BatchNorm(3, eps=0), "eps > 0"),
    (lambda: BatchNorm(3, momentum=2), "momentum"), (lambda: GroupNorm(3, 4), "divisible"),
    (lambda: GroupNorm(0, 4), "num_groups >= 1"),
])
def test_bad_settings_are_refused_clearly(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# -- buffers: state_dict, optimiser, model files -------------------------------------------
def _net(rng, dtype=np.float32):
    return Sequential(Conv2d(2, 4, 3, padding=1, rng=rng, dtype=dtype), BatchNorm(4, dtype=dtype), ReLU(),
                      Conv2d(4, 4, 3, stride=2, padding=1, rng=rng, dtype=dtype), GroupNorm(2, 4, dtype=dtype),
                      LeakyReLU(0.2), ConvTranspose2d(4, 3, 4, stride=2, padding=1, rng=rng, dtype=dtype),
                      BatchNorm(3, momentum=0.2, dtype=dtype))


def _train_steps(model, rng, steps=3):
    opt = npvae.Adam(model, lr=0.01)
    for _ in range(steps):
        x = rng.standard_normal((4, 2, 6, 6)).astype(model.dtype)
        y = model.forward(x)
        model.zero_grad()
        model.backward(y - 1)
        opt.step()
    return opt


def test_state_dict_carries_buffers_and_optimisers_see_parameters_only(rng):
    model = _net(rng)
    opt = _train_steps(model, rng)
    state = model.state_dict()
    buffers = dict(model.named_buffers())
    assert sorted(buffers) == ["1.running_mean", "1.running_var", "7.running_mean", "7.running_var"]
    assert set(state) == {p for p, _, _ in model.named_parameters()} | set(buffers)
    assert not {p for p, _, _ in opt.params} & set(buffers)
    clone = npvae.build_layer(model.spec())
    assert not np.array_equal(dict(clone.named_buffers())["1.running_var"],
                              buffers["1.running_var"])
    clone.load_state_dict(state)
    model.eval(), clone.eval()
    x = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(clone.forward(x), model.forward(x))
    with pytest.raises(ValueError, match=r"missing \['1.running_var'\]"):
        clone.load_state_dict({k: v for k, v in state.items() if k != "1.running_var"})
    with pytest.raises(ValueError, match="already a parameter"):
        BatchNorm(2).add_buffer("gamma", np.zeros(2))


def test_model_file_round_trip(tmp_path, rng):
    model = _net(rng)
    _train_steps(model, rng)
    save_model(tmp_path / "m.h5", model, {"model": "norm-test"})
    loaded = npvae.load_model(tmp_path / "m.h5")
    for path, a in model.state_dict().items():
        np.testing.assert_array_equal(dict(loaded.state_dict())[path], a, err_msg=path)
    assert not loaded.training
    model.eval()
    x = rng.standard_normal((3, 2, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(loaded.forward(x), model.forward(x))


def test_model_file_with_a_negative_variance_is_refused(tmp_path, rng):
    import h5py
    model = _net(rng)
    save_model(tmp_path / "m.h5", model)
    with h5py.File(tmp_path / "m.h5", "r+") as f:
        ds = f["model/params/x7_running_var"]
        a = ds[()]
        a.flat[1] = -a.flat[1]
        ds[...] = a
    with pytest.raises(npvae.errors.FileFormatError, match=r"m\.h5: tensor 7\.running_var is a variance"):
        npvae.load_model(tmp_path / "m.h5")


# -- checkpoints: a run killed with SIGKILL resumes bit for bit ------------------------------
CHILD = r"""
import sys, time
import numpy as np
import npvae
from npvae.layers import BatchNorm, Conv2d, Flatten, ReLU, Sequential
from npvae.engine.loop import Trainer

run_dir, epochs, resume, pause = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", float(sys.argv[4])
rng = np.random.default_rng(0)
model = Sequential(Conv2d(1, 3, 3, padding=1, rng=np.random.default_rng(1)), BatchNorm(3), ReLU(), Flatten(),
                   npvae.Dense(48, 4, rng=np.random.default_rng(2)), BatchNorm(4))
opt = npvae.Adam(model, lr=0.01)
data = np.random.default_rng(3).standard_normal((40, 1, 4, 4)).astype(np.float32)
target = np.random.default_rng(4).standard_normal((40, 4)).astype(np.float32)

def batches(r):
    order = r.permutation(40)
    for i in range(0, 40, 8):
        yield data[order[i:i + 8]], target[order[i:i + 8]]

def step(batch, epoch):
    time.sleep(pause)
    x, t = batch
    model.zero_grad()
    loss, grad = npvae.losses.mse(model.forward(x), t)
    model.backward(grad)
    return {"total": loss}

def validate():
    return {"total": npvae.losses.mse(model.forward(data), target)[0]}

trainer = Trainer(model, opt, rng, run_dir, progress=False, log=lambda s: None)
if resume:
    assert trainer.resume()
trainer.fit(epochs, batches, 5, step, validate)
"""


def _child(run_dir, epochs, resume=False, pause=0.0):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(run_dir), str(epochs), "1" if resume else "0",
                             str(pause)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_resume_after_sigkill_is_bit_identical(tmp_path):
    straight = _child(tmp_path / "straight", 5)
    assert straight.wait(timeout=300) == 0, straight.stderr.read()
    killed = _child(tmp_path / "killed", 5, pause=0.05)
    checkpoint = tmp_path / "killed" / "checkpoint.npz"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if checkpoint.exists() and load_checkpoint(checkpoint)[1]["epoch"] >= 2:
            break
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    epoch = load_checkpoint(checkpoint)[1]["epoch"]
    assert 2 <= epoch < 5, epoch                    # killed during a later epoch
    resumed = _child(tmp_path / "killed", 5, resume=True)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    want, want_meta = load_checkpoint(tmp_path / "straight" / "checkpoint.npz")
    got, got_meta = load_checkpoint(checkpoint)
    assert {"model/1.running_mean", "model/1.running_var", "model/5.running_var"} <= set(want)
    assert sorted(got) == sorted(want)
    for k, v in want.items():
        assert np.array_equal(got[k], v), k
    assert got_meta["history"]["val_total"] == want_meta["history"]["val_total"]


# -- data-parallel: BatchNorm's statistics over the global batch ----------------------------
MPI_HELPER = REPO / "tests" / "_mpi_norm_train.py"


def _mpi_run(out, ranks, kind="tiny", epochs=3):
    from test_distributed import MPI_ENV
    cmd = [sys.executable, str(MPI_HELPER), str(out), str(epochs), kind]
    if ranks > 1:
        cmd = ["mpirun", "-n", str(ranks)] + cmd
    env = {**os.environ, **MPI_ENV, "PYTHONPATH": str(REPO), "NPVAE_MPI_TIMEOUT": "300"}
    env.pop("NPVAE_MPI", None)
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr


def test_two_ranks_train_batchnorm_as_one_process(tmp_path):
    from test_distributed import ATOL, _have_mpi
    if not _have_mpi():
        pytest.skip("mpi4py or mpirun missing")
    _mpi_run(tmp_path / "single", 1)
    _mpi_run(tmp_path / "mpi", 2)
    want, want_meta = load_checkpoint(tmp_path / "single" / "checkpoint.npz")
    got, got_meta = load_checkpoint(tmp_path / "mpi" / "checkpoint.npz")
    assert sorted(got) == sorted(want) and "model/8.running_var" in want
    for k, v in want.items():       # the tolerance of the MPI tests (tests/test_distributed.py)
        np.testing.assert_allclose(got[k], v, rtol=1e-4, atol=ATOL, err_msg=k)
    np.testing.assert_allclose(got_meta["history"]["val_total"], want_meta["history"]["val_total"], rtol=1e-4)
    single = np.load(tmp_path / "single" / "stats0.npz")["steps"]
    ranks = [np.load(tmp_path / "mpi" / f"stats{r}.npz")["steps"] for r in (0, 1)]
    assert np.array_equal(ranks[0], ranks[1])       # after every step, not only at the epoch's end
    np.testing.assert_allclose(ranks[0], single, rtol=1e-4, atol=ATOL)
    assert not np.allclose(single[0], single[-1])


def test_two_ranks_train_a_batchnorm_unet_with_adam_as_one_process(tmp_path):
    """The U-Net's convolutions before a BatchNorm have no bias, so Adam has no gradient of
    pure rounding to scale up (with the biases, ``unet_biased`` in the helper, 1 and 2 ranks
    differed by 0.014 after these steps). In float64, so that what is compared is how the
    ranks combine their statistics and gradients, not float32 rounding: Adam divides by
    the root of each gradient's square, and an entry whose gradient is near zero turns the
    rounding of a different summation order into a step (3.5e-5 in float32 on one machine).
    1 and 2 ranks agree 1000 times closer than the MPI tests' float32 tolerance."""
    from test_distributed import ATOL, _have_mpi
    if not _have_mpi():
        pytest.skip("mpi4py or mpirun missing")
    _mpi_run(tmp_path / "single", 1, "unet64", 2)
    _mpi_run(tmp_path / "mpi", 2, "unet64", 2)
    want, want_meta = load_checkpoint(tmp_path / "single" / "checkpoint.npz")
    got, got_meta = load_checkpoint(tmp_path / "mpi" / "checkpoint.npz")
    assert sorted(got) == sorted(want) and "model/enc1_norm.running_var" in want and "model/enc1.b" not in want
    from _mpi_norm_train import unet
    start = unet(dtype=np.float64)[0].state_dict()
    assert max(np.abs(want[f"model/{k}"] - v).max() for k, v in start.items()) > 100 * ATOL   # Adam moved it
    for k, v in want.items():
        assert v.dtype == np.float64, k
        np.testing.assert_allclose(got[k], v, rtol=1e-7, atol=ATOL / 1000, err_msg=k)
    np.testing.assert_allclose(got_meta["history"]["val_total"], want_meta["history"]["val_total"], rtol=1e-7)


# -- inference: BatchNorm folded into the convolution before it -----------------------------
def test_folded_batchnorm_gives_the_eval_output(rng):
    from npvae.layers import Flatten, fold_batchnorm
    model = Sequential(Conv2d(2, 4, 3, padding=1, rng=rng), BatchNorm(4), ReLU(),
                       Sequential(ConvTranspose2d(4, 3, 4, stride=2, padding=1, rng=rng), BatchNorm(3)),
                       GroupNorm(3, 3), Flatten(), Dense(3 * 64, 5, rng=rng), BatchNorm(5))
    for _, layer in model.named_layers():
        if isinstance(layer, BatchNorm):
            _randomise(layer, rng)
    model.eval()
    x = rng.standard_normal((3, 2, 4, 4)).astype(np.float32)
    want = model.forward(x)
    before = model.state_dict()
    folded = fold_batchnorm(model)
    kinds = [type(layer).__name__ for _, layer in folded.named_layers()]
    assert kinds.count("BatchNorm") == 1 and kinds[-1] == "BatchNorm"     # the one after a Dense stays
    assert not folded.training
    with inference():
        got = folded.forward(x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.abs(want).max() > 1
    for k, v in model.state_dict().items():         # the model itself is unchanged
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    plain = Sequential(Conv2d(2, 3, 3, rng=rng), ReLU(), GroupNorm(1, 3))
    assert fold_batchnorm(plain) is plain


def test_a_rank_without_samples_is_refused_when_batchnorm_sums_over_ranks(tmp_path):
    """Every rank joins BatchNorm's sums: a rank left without a sample says so (no hang)."""
    from npvae.distributed import SingleProcess
    from npvae.errors import TrainingError
    from npvae.engine.loop import Trainer

    class EmptyRank(SingleProcess):
        rank, size, local_count = 1, 2, 0

        def allreduce_sum(self, a):
            raise AssertionError("not reached")

    model = Sequential(Dense(3, 2, rng=np.random.default_rng(0)), BatchNorm(2))
    trainer = Trainer(model, npvae.Adam(model), np.random.default_rng(0), tmp_path, progress=False, comm=EmptyRank())
    with pytest.raises(TrainingError, match="left rank 1 none, but BatchNorm sums its statistics over every rank"):
        trainer.fit(1, lambda r: iter([None]), 1, lambda batch, epoch: {"total": 0.0})


def test_figures_are_drawn_in_eval_mode_and_leave_the_running_statistics(tmp_path, rng):
    from npvae.engine.loop import Trainer
    model = Sequential(Dense(3, 2, rng=np.random.default_rng(0)), BatchNorm(2))
    x = rng.standard_normal((8, 3)).astype(np.float32)
    seen = []

    def step(batch, epoch):
        model.zero_grad()
        model.backward(model.forward(x))
        return {"total": 0.0}

    def display(epoch, history):
        before = model.state_dict()["1.running_var"]
        model.forward(x)
        seen.append((model.training, np.array_equal(model.state_dict()["1.running_var"], before)))

    trainer = Trainer(model, npvae.SGD(model, lr=0.01), rng, tmp_path, progress=False, log=lambda s: None)
    trainer.fit(2, lambda r: iter([None]), 1, step, on_display=display)
    assert seen == [(False, True), (False, True)] and model.training

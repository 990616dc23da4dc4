"""Dropout, MaxPool2d, AvgPool2d, Upsample, Residual and Concat: gradients by finite
differences (float64), equality with the PyTorch layers of the same names (float32),
train/eval behaviour, specs and model files, and an exact resume with dropout."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import npvae
from npvae import distributed
from npvae.files import h5mat, model_file as io, modelcheck
from npvae.errors import FileFormatError
from _gradcheck import numerical_gradient, rel_error
from npvae.optim import Adam
from npvae.engine.loop import Trainer
from npvae.layers import (AvgPool2d, Concat, Conv2d, Dense, Dropout, Flatten, Identity, LeakyReLU, MaxPool2d, ReLU,
                          Residual, Sequential, Upsample, build_layer, inference, set_noise)

F64 = np.float64
TOL = 1e-6


class FixedDraws(np.random.Generator):
    """A generator whose ``random`` returns the given uniform draws (a chosen dropout mask)."""

    def __init__(self, u):
        super().__init__(np.random.PCG64(0))
        self.u = u

    def random(self, size=None, dtype=np.float64, out=None):
        assert tuple(size) == self.u.shape, (size, self.u.shape)
        return self.u.astype(dtype)


def gradient_errors(layer, x, rng, h=1e-6):
    """Relative errors of the input gradient and of every parameter's (children's too)."""
    r = rng.standard_normal(layer.forward(x).shape)

    def loss():
        return float(np.sum(layer.forward(x) * r))

    layer.zero_grad()
    layer.forward(x)
    errors = {"x": rel_error(layer.backward(r), numerical_gradient(loss, x, h))}
    analytic = {path: g.copy() for path, _, g in layer.named_parameters()}
    for path, p, _ in layer.named_parameters():
        errors[path] = rel_error(analytic[path], numerical_gradient(loss, p, h))
    return errors


def assert_gradients(layer, x, rng):
    for name, err in gradient_errors(layer, x, rng).items():
        assert err < TOL, f"{layer!r}: gradient of {name} has relative error {err:.2e}"


POOLS = [  # kernel, stride, padding, input (H, W)
    (2, None, 0, (6, 8)),
    (2, None, 0, (7, 5)),          # odd sizes: the last row / column dropped (floor)
    (3, 2, 1, (7, 6)),             # overlapping, padded
    ((2, 3), (1, 2), (1, 0), (5, 7)),
    (3, 1, 0, (5, 5)),
]


@pytest.mark.parametrize("cls", [MaxPool2d, AvgPool2d])
@pytest.mark.parametrize("k,s,p,hw", POOLS)
def test_pool_gradients(rng, cls, k, s, p, hw):
    assert_gradients(cls(k, s, p, dtype=F64), rng.standard_normal((2, 3, *hw)), rng)


UPSAMPLES = [  # kwargs, input (H, W)
    (dict(scale_factor=2), (3, 4)),
    (dict(scale_factor=3), (2, 3)),
    (dict(scale_factor=(2, 1.5)), (3, 4)),
    (dict(size=(7, 7)), (3, 3)),
    (dict(size=(5, 2)), (3, 4)),         # smaller along one axis
]


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
@pytest.mark.parametrize("kw,hw", UPSAMPLES)
def test_upsample_gradients(rng, mode, kw, hw):
    assert_gradients(Upsample(mode=mode, dtype=F64, **kw), rng.standard_normal((2, 3, *hw)), rng)


@pytest.mark.parametrize("channels", [False, True])
def test_dropout_gradient_with_a_fixed_mask(rng, channels):
    x = rng.standard_normal((3, 4, 5, 2))
    layer = Dropout(0.3, channels=channels, dtype=F64)
    layer.rng = FixedDraws(rng.uniform(size=(3, 4, 1, 1) if channels else x.shape))
    assert_gradients(layer, x, rng)


def small_blocks(rng, dtype=F64):
    kw = dict(rng=rng, dtype=dtype)
    res = Residual(Sequential(Conv2d(2, 3, 3, padding=1, **kw), LeakyReLU(0.1), Conv2d(3, 3, 3, padding=1, **kw)),
                   Conv2d(2, 3, 1, **kw))
    skip = Concat(Identity(), Sequential(MaxPool2d(2), Conv2d(3, 2, 3, padding=1, **kw), Upsample(size=(5, 6))))
    return Sequential(res, skip, Residual(Sequential(Conv2d(5, 5, 3, padding=1, **kw), ReLU())),
                      AvgPool2d(2), Flatten(), Dense(5 * 2 * 3, 4, **kw))


def test_block_gradients_reach_every_child(rng):
    model = small_blocks(rng)
    errors = gradient_errors(model, rng.standard_normal((2, 2, 5, 6)), rng)
    assert {"x", "0.body.0.W", "0.shortcut.b", "1.1.1.W", "2.body.0.b", "5.W"} <= set(errors)
    assert len(errors) == 1 + len(list(model.named_parameters()))
    for name, err in errors.items():
        assert err < TOL, f"gradient of {name} has relative error {err:.2e}"


# -- PyTorch -------------------------------------------------------------------------------------
def _torch_check(layer, module, x, rng, atol=1e-5):
    """Outputs and input gradients of an npvae layer and a torch module, float32."""
    torch = pytest.importorskip("torch")
    y = layer.forward(x)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = layer.backward(dy)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    yt = module(xt)
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-5, atol=atol)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-5, atol=atol)
    return y, dx


@pytest.mark.parametrize("k,s,p,hw", POOLS + [(2, None, 0, (28, 28)), (4, 3, 2, (9, 10))])
def test_pools_equal_torch(rng, k, s, p, hw):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((3, 4, *hw)).astype(np.float32)
    _torch_check(MaxPool2d(k, s, p), torch.nn.MaxPool2d(k, s, p), x, rng)
    _torch_check(AvgPool2d(k, s, p), torch.nn.AvgPool2d(k, s, p), x, rng)


def test_max_pool_ties_route_the_gradient_like_torch(rng):
    torch = pytest.importorskip("torch")
    x = np.maximum(rng.standard_normal((2, 3, 8, 8)), 0).astype(np.float32)    # many zero windows (after ReLU)
    x[0, 0, :2, :2] = 1.5
    _torch_check(MaxPool2d(2), torch.nn.MaxPool2d(2), x, rng)
    _torch_check(MaxPool2d(3, 1, 1), torch.nn.MaxPool2d(3, 1, 1), x, rng)


def test_max_pool_propagates_nan():
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 1, 1] = np.nan
    y = MaxPool2d(2).forward(x)
    assert np.isnan(y[0, 0, 0, 0]) and not np.isnan(y[0, 0, 1:]).any() and not np.isnan(y[0, 0, 0, 1])


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
@pytest.mark.parametrize("kw,hw", UPSAMPLES + [(dict(scale_factor=2), (14, 14)), (dict(size=(28, 28)), (7, 7)),
                                               (dict(scale_factor=1.7), (5, 6)), (dict(size=(13, 9)), (5, 6))])
def test_upsample_equals_torch(rng, mode, kw, hw):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 3, *hw)).astype(np.float32)
    tkw = {"size": tuple(kw["size"])} if "size" in kw else {"scale_factor": kw["scale_factor"]}
    extra = {"align_corners": False} if mode == "bilinear" else {}
    y, _ = _torch_check(Upsample(mode=mode, **kw), torch.nn.Upsample(mode=mode, **tkw, **extra), x, rng)
    if "size" in kw:
        assert y.shape[2:] == tuple(kw["size"])


def test_blocks_equal_torch(rng):
    torch = pytest.importorskip("torch")
    from torch import nn
    block = Sequential(Residual(Sequential(Conv2d(2, 3, 3, padding=1, rng=rng), ReLU(),
                                           Conv2d(3, 3, 3, padding=1, rng=rng)), Conv2d(2, 3, 1, rng=rng)),
                       Concat(Identity(), Sequential(MaxPool2d(2), Conv2d(3, 4, 3, padding=1, rng=rng),
                                                     Upsample(mode="bilinear"))))

    def tconv(layer):
        m = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding)
        with torch.no_grad():
            m.weight.copy_(torch.from_numpy(layer.params["W"]))
            m.bias.copy_(torch.from_numpy(layer.params["b"]))
        return m

    res, cat = block[0], block[1]
    body = nn.Sequential(tconv(res.body[0]), nn.ReLU(), tconv(res.body[2]))
    short, inner = tconv(res.shortcut), tconv(cat.branches[1][1])
    pool, up = nn.MaxPool2d(2), nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)

    def forward(x):
        h = body(x) + short(x)
        return torch.cat([h, up(inner(pool(h)))], dim=1)

    x = rng.standard_normal((3, 2, 8, 6)).astype(np.float32)
    _torch_check(block, forward, x, rng)
    for (path, _, g), tp in zip(block.named_parameters(), [*body[0].parameters(), *body[2].parameters(),
                                                           *short.parameters(), *inner.parameters()]):
        np.testing.assert_allclose(g, tp.grad.numpy().reshape(g.shape), rtol=1e-5, atol=1e-5, err_msg=path)


@pytest.mark.parametrize("channels", [False, True])
def test_dropout_with_torch_mask_equals_torch(rng, channels):
    torch = pytest.importorskip("torch")
    p = 0.4
    x = (rng.uniform(0.5, 2, (4, 6, 5, 3)) * rng.choice([-1, 1], (4, 6, 5, 3))).astype(np.float32)
    torch.manual_seed(0)
    module = torch.nn.Dropout2d(p) if channels else torch.nn.Dropout(p)
    module.train()
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    yt = module(xt)
    kept = (yt.detach().numpy() != 0)
    kept = kept[:, :, :1, :1] if channels else kept
    layer = Dropout(p, channels=channels)
    layer.rng = FixedDraws(np.where(kept, 0.9, 0.1))       # u >= p exactly where torch kept
    dy = rng.standard_normal(x.shape).astype(np.float32)
    y = layer.forward(x)
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(layer.backward(dy), xt.grad.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("channels", [False, True])
def test_dropout_statistics_match_torch(rng, channels):
    torch = pytest.importorskip("torch")
    p, shape = 0.3, (64, 32, 8, 8)
    x = np.ones(shape, np.float32)
    layer = Dropout(p, channels=channels)
    layer.rng = np.random.default_rng(5)
    y = layer.forward(x)
    torch.manual_seed(5)
    yt = (torch.nn.Dropout2d(p) if channels else torch.nn.Dropout(p))(torch.from_numpy(x)).numpy()
    n = shape[0] * shape[1] if channels else x.size
    for out in (y, yt):
        assert set(np.unique(out)) == {0, np.float32(1 / (1 - p))}
        dropped = float((out == 0).mean())
        assert abs(dropped - p) < 5 * np.sqrt(p * (1 - p) / n), dropped      # five standard errors
        if channels:       # whole channels: every pixel of a channel shares its fate
            assert (out.min(axis=(2, 3)) == out.max(axis=(2, 3))).all()


def test_dropout_is_the_identity_in_eval_mode_and_needs_a_generator_in_training(rng):
    x = rng.standard_normal((3, 5)).astype(np.float32)
    layer = Dropout(0.5).eval()
    assert layer.forward(x) is x
    dy = rng.standard_normal((3, 5)).astype(np.float32)
    assert layer.backward(dy) is dy
    layer.train()
    with pytest.raises(ValueError, match=r"needs the run's random generator.*set_noise"):
        layer.forward(x)
    model = Sequential(Dense(5, 4, rng=rng), Dropout(0.2), Sequential(Dropout(0.1, channels=False)))
    gen = np.random.default_rng(3)
    assert set_noise(model, gen) == 2 and model[1].rng is gen and model[2][0].rng is gen
    y1, y2 = model.forward(x), model.forward(x)
    assert not np.array_equal(y1, y2)            # a new mask each step
    model.eval()
    np.testing.assert_array_equal(model.forward(x), model[0].forward(x))
    with pytest.raises(ValueError, match="Dropout p must be a probability"):
        Dropout(1.5)
    with pytest.raises(ValueError, match="drops whole channels"):
        Dropout(0.5, channels=True).forward(x)
    zeroed = Dropout(1.0)
    zeroed.rng = gen
    assert not zeroed.forward(x).any()


# -- construction, specs, inference ----------------------------------------------------------------
def test_specs_rebuild_the_blocks_and_reach_every_parameter(rng):
    model = small_blocks(rng, np.float32)
    spec = model.spec()
    rebuilt = build_layer(spec)
    assert rebuilt.spec() == spec
    rebuilt.load_state_dict(model.state_dict())
    x = rng.standard_normal((2, 2, 5, 6)).astype(np.float32)
    np.testing.assert_array_equal(rebuilt.forward(x), model.forward(x))
    assert [p for p, _, _ in model.named_parameters()] == [p for p, _, _ in rebuilt.named_parameters()]
    assert spec["layers"][1] == {"type": "Concat", "axis": 1, "branches": [
        {"type": "Identity"}, {"type": "Sequential", "layers": [
            {"type": "MaxPool2d", "kernel_size": 2}, spec["layers"][1]["branches"][1]["layers"][1],
            {"type": "Upsample", "size": [5, 6], "mode": "nearest"}]}]}
    assert Residual(Identity()).spec() == {"type": "Residual", "body": {"type": "Identity"}}
    assert build_layer(Upsample(scale_factor=(2, 1.5), mode="bilinear").spec()).scale_factor == (2.0, 1.5)
    assert build_layer(Dropout(0.25, channels=True).spec()).channels


def test_train_eval_and_inference_reach_the_branches(rng):
    model = Sequential(Residual(Sequential(Conv2d(2, 2, 3, padding=1, rng=rng), Dropout(0.5))),
                       Concat(Identity(), Sequential(Dropout(0.5, channels=True), MaxPool2d(2), Upsample())))
    set_noise(model, np.random.default_rng(0))
    model.eval()
    assert all(not layer.training for _, layer in model.named_layers())
    x = rng.standard_normal((2, 2, 4, 4)).astype(np.float32)
    y = model.forward(x)
    with inference():
        np.testing.assert_array_equal(model.forward(x), y)
    for path, layer in model.named_layers():
        if not isinstance(layer, Identity):
            with pytest.raises(RuntimeError, match="backward called before forward"):
                layer.backward(np.zeros((2, 2, 4, 4), np.float32))
    model.forward(x)
    model.forget()
    with pytest.raises(RuntimeError, match="backward called before forward"):
        model.backward(np.zeros((2, 4, 4, 4), np.float32))
    model.train()
    assert all(layer.training for _, layer in model.named_layers())


def test_bad_input_is_explained(rng):
    with pytest.raises(ValueError, match=r"needs an input of at least 3x3 pixels"):
        MaxPool2d(3).forward(np.zeros((1, 1, 2, 5), np.float32))
    with pytest.raises(ValueError, match="at most half the kernel size"):
        AvgPool2d(2, padding=2)
    with pytest.raises(ValueError, match="expected input of shape \\(N, C, H, W\\)"):
        Upsample().forward(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="mode must be one of"):
        Upsample(mode="bicubic")
    with pytest.raises(ValueError, match="the body gives shape .* but the shortcut"):
        Residual(Conv2d(2, 3, 1, rng=rng)).forward(np.zeros((1, 2, 3, 3), np.float32))
    with pytest.raises(ValueError, match="differ on an axis other than 1"):
        Concat(Identity(), MaxPool2d(2)).forward(np.zeros((1, 2, 4, 4), np.float32))
    with pytest.raises(ValueError, match="axis must be a whole number >= 1"):
        Concat(Identity(), axis=0)


# -- model files and checkpoints -------------------------------------------------------------------
def test_model_file_round_trip(tmp_path, rng):
    model = Sequential(Dropout(0.2), small_blocks(rng, np.float32), Dropout(0.1))
    path = io.save_model(tmp_path / "m.h5", model)
    loaded = npvae.load_model(path)
    assert loaded.spec() == model.spec() and not loaded.training
    for (pa, a, _), (pb, b, _) in zip(model.named_parameters(), loaded.named_parameters()):
        assert pa == pb
        np.testing.assert_array_equal(a, b)
    x = rng.standard_normal((2, 2, 5, 6)).astype(np.float32)
    np.testing.assert_array_equal(loaded.forward(x), model.eval().forward(x))


def _train(run_dir, epochs, resume):
    rng = np.random.default_rng(0)
    model = Sequential(Dense(6, 8, rng=rng), Dropout(0.5), Dense(8, 3, rng=rng))
    noise = np.random.default_rng(1)
    set_noise(model, noise)
    data = np.random.default_rng(2).standard_normal((32, 6)).astype(np.float32)
    trainer = Trainer(model, Adam(model, lr=1e-2), noise, run_dir, progress=False, log=lambda s: None)
    if resume:
        assert trainer.resume()

    def batches(gen):
        order = gen.permutation(len(data))
        for i in range(0, len(data), 8):
            yield data[order[i:i + 8]]

    def step(batch, _):
        y = model.forward(batch)
        model.backward(2 * y / y.size)
        return {"total": float(np.mean(y ** 2))}

    trainer.fit(epochs, batches, 4, step)
    return model.state_dict()


def test_a_resumed_run_with_dropout_ends_bit_identical(tmp_path):
    whole = _train(tmp_path / "whole", 3, False)
    _train(tmp_path / "parts", 2, False)
    resumed = _train(tmp_path / "parts", 3, True)
    for k in whole:
        np.testing.assert_array_equal(resumed[k], whole[k], err_msg=k)
    again = _train(tmp_path / "other", 3, False)
    assert all(np.array_equal(again[k], whole[k]) for k in whole)


def test_dropout_masks_of_mpi_ranks_make_the_single_process_masks(rng):
    """Each rank draws the whole batch's mask and keeps its samples' rows (npvae.distributed)."""

    class Rank(distributed.MPICommunicator):       # the sharding maths of one rank, without MPI
        def __init__(self, rank, size):
            self.rank, self.size, self._shard = rank, size, None

    x = rng.standard_normal((7, 3, 4, 4)).astype(np.float32)
    for channels in (False, True):
        whole = Dropout(0.5, channels=channels)
        whole.rng = np.random.default_rng(9)
        expect = whole.forward(x)
        parts = []
        for r in range(2):
            comm, layer = Rank(r, 2), Dropout(0.5, channels=channels)
            gen = np.random.default_rng(9)
            layer.rng = comm.noise(gen)
            part = comm.shard(len(x))
            parts.append(layer.forward(x[part]))
            assert gen.bit_generator.state == whole.rng.bit_generator.state
        np.testing.assert_array_equal(np.concatenate(parts), expect)
        assert not np.array_equal(parts[0][:3], parts[1][:3])


BAD_FIELDS = [  # (path of the field in the spec, value, message)
    (("layers", 0, "p"), 1.5, r"Dropout.p must be a probability in \[0, 1\], got 1.5"),
    (("layers", 0, "channels"), 1, r"Dropout.channels must be true or false, got 1"),
    (("layers", 1, "layers", 3, "kernel_size"), 0, r"AvgPool2d.kernel_size must be a whole number >= 1, got 0"),
    (("layers", 1, "layers", 3, "padding"), 2, r"AvgPool2d.padding must be at most half the kernel size"),
    (("layers", 1, "layers", 1, "branches"), [], r"Concat.branches must be a non-empty list"),
    (("layers", 1, "layers", 1, "axis"), 0, r"Concat.axis must be a whole number >= 1, got 0"),
    (("layers", 1, "layers", 1, "branches", 1, "layers", 2, "size"), [7, 10**6],
     r"Upsample.size asks for more than 4096 pixels a side"),
    (("layers", 1, "layers", 1, "branches", 1, "layers", 2, "mode"), "bicubic", r"Upsample.mode must be one of"),
    (("layers", 1, "layers", 0, "body"), {"type": "Conv2d", "in_channels": 2, "out_channels": 4, "kernel_size": 3},
     r"tensor 1.0.body.0.W has shape|missing"),
    (("layers", 1, "layers", 0, "shortcut", "out_channels"), 5, r"tensor 1.0.shortcut.W has shape"),
]


@pytest.mark.parametrize("where,value,match", BAD_FIELDS, ids=lambda v: str(v)[:40])
def test_damaged_specs_of_the_blocks_are_refused_naming_the_field(tmp_path, rng, where, value, match):
    model = Sequential(Dropout(0.2), small_blocks(rng, np.float32))
    tree = {"model": io.model_tree(model), "config": {}}
    spec = json.loads(tree["model"]["spec"])
    field = spec
    for key in where[:-1]:
        field = field[key]
    field[where[-1]] = value
    tree["model"]["spec"] = json.dumps(spec)
    h5mat.write_tree(tmp_path / "m.h5", tree, kind="model")
    with pytest.raises(FileFormatError, match=r"m\.h5: .*" + match):
        npvae.load_model(tmp_path / "m.h5")


def test_upsample_scale_is_bounded_in_model_files():
    assert modelcheck.param_shapes({"type": "Upsample", "scale_factor": [2, 1.5]}) == {}
    for bad in (0, -2, 1e300, "2", [2, 1e6], True):
        with pytest.raises(ValueError, match="Upsample.scale_factor must be"):
            modelcheck.param_shapes({"type": "Upsample", "scale_factor": bad})


MPI_DROPOUT = r"""
import sys
import numpy as np
from npvae import distributed
from npvae.layers import Dropout
comm = distributed.world()
x = np.random.default_rng(0).standard_normal((7, 3, 4, 4)).astype(np.float32)
outs = []
for channels in (False, True):
    layer = Dropout(0.5, channels=channels)
    layer.rng = comm.noise(np.random.default_rng(9))
    outs.append(layer.forward(x[comm.shard(len(x))]))
parts = comm.gather_object(outs)
if comm.is_root:
    np.savez(sys.argv[1], *[np.concatenate([p[k] for p in parts]) for k in range(2)], ranks=comm.size)
"""


def test_under_mpirun_the_ranks_masks_make_the_single_process_masks(tmp_path):
    pytest.importorskip("mpi4py")
    if shutil.which("mpirun") is None:
        pytest.skip("mpirun missing (apt-get install openmpi-bin)")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMPI_ALLOW_RUN_AS_ROOT": "1",
           "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "OMPI_MCA_rmaps_base_oversubscribe": "1", "NPVAE_MPI_TIMEOUT": "120"}
    env.pop("NPVAE_MPI", None)
    r = subprocess.run(["mpirun", "-n", "2", sys.executable, "-c", MPI_DROPOUT, str(tmp_path / "masks.npz")],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    got = np.load(tmp_path / "masks.npz")
    assert int(got["ranks"]) == 2
    x = np.random.default_rng(0).standard_normal((7, 3, 4, 4)).astype(np.float32)
    for k, channels in enumerate((False, True)):
        layer = Dropout(0.5, channels=channels)
        layer.rng = np.random.default_rng(9)
        np.testing.assert_array_equal(got[f"arr_{k}"], layer.forward(x))

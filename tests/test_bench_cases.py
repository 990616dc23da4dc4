"""The benchmark's cases that matter (docs/speed.md): the models ``npvae train`` builds,
their PyTorch twins (equal loss, gradients and Adam step on the same weights, batch and
noise), the separation of a song end to end with the network in npvae or in PyTorch,
and the per-layer timing. Tiny sizes; no timing assertions."""
import importlib.util
import re
import sys

import numpy as np
import pytest

from npvae.models.music import SpectrogramUNetVAE
from npvae_lab import pipeline_cases
from npvae_lab.pipeline_cases import PIPELINE_CASES, build_pipeline_case


def _command_config(task, argv):
    """The config ``npvae train TASK ARGV`` trains with."""
    from npvae.cli import parser
    from npvae.engine.config import given_settings
    from npvae.tasks import TASKS
    args = parser().parse_args(["train", task, *argv])
    cls = TASKS[task]
    return pipeline_cases.task_config(task, args.preset or "default", given_settings(args, cls.Config))


@pytest.mark.parametrize("name", PIPELINE_CASES)
def test_pipeline_case_is_the_model_the_command_builds(name):
    """Full size: the case's config is the command's (same flags), its model has the
    architecture and the initial weights the engine gives it."""
    task, preset, flags = PIPELINE_CASES[name]
    argv = ([] if preset == "default" else ["--preset", preset]) + \
        [a for k, v in flags.items() for a in (f"--{k}", str(v))]
    case = build_pipeline_case(name, "full")
    cfg = _command_config(task, argv)
    assert case.cfg == cfg
    if task == "mnist":
        from npvae.models.mnist import build_model
        assert cfg.batch_size == 128
        ref = build_model(cfg.model, rng=np.random.default_rng([cfg.seed, 0]), **cfg.model_kwargs())
    else:
        ref = SpectrogramUNetVAE(cfg.channels, cfg.latent_channels, rng=np.random.default_rng(cfg.seed + 1))
        assert case.batch["mixture"].shape == (cfg.batch_size, 513, cfg.frames)
    assert case.model.spec() == ref.spec()
    fresh = build_pipeline_case(name, "full")         # the step above has not run: initial weights
    for (path, p, _), (rpath, r, _) in zip(fresh.model.named_parameters(), ref.named_parameters()):
        assert path == rpath
        np.testing.assert_array_equal(p, r, err_msg=path)


@pytest.mark.parametrize("name", PIPELINE_CASES)
def test_pipeline_case_trains_with_fixed_noise(name):
    case = build_pipeline_case(name, "tiny")
    first = case.forward_backward()
    assert first == case.forward_backward()           # same weights, batch and noise: same loss
    losses = [case.step() for _ in range(3)]
    assert all(np.isfinite(losses)) and losses[-1] != first
    assert case.flops() > 0


def test_flop_count_of_a_dense_model():
    case = build_pipeline_case("mnist_dense", "tiny")
    n, lat = case.eps.shape
    widths = [784, 12, 10]
    expect = sum(2 * n * a * b for a, b in zip(widths[:-1], widths[1:]))          # encoder
    expect += 2 * 2 * n * 10 * lat                                                  # mu, logvar
    expect += 2 * n * (lat * 10 + 10 * 12 + 12 * 2 * 784)                           # decoder
    assert sum(case.layer_flops.values()) == expect
    first = case.model.encoder.layers[1]
    assert case.flops() == 3 * expect - case.layer_flops[id(first)]


@pytest.mark.parametrize("name", PIPELINE_CASES)
def test_torch_twin_equals_npvae(name):
    """Loss, every gradient and one Adam step of the PyTorch twin equal npvae's."""
    pytest.importorskip("torch")
    from npvae_lab.torch_pipelines import TorchPipelineCase, npvae_grads
    case = build_pipeline_case(name, "tiny")
    tcase = TorchPipelineCase(case)
    loss = case.forward_backward()
    tloss = tcase.loss()
    tloss.backward()
    assert loss == pytest.approx(float(tloss.detach()), rel=1e-5)
    grads = npvae_grads(case, tcase)
    for path, _, g in case.model.named_parameters():
        scale = max(float(np.abs(grads[path]).max()), 1e-6)
        np.testing.assert_allclose(g, grads[path], rtol=0, atol=2e-5 * scale, err_msg=path)
    case.optimizer.step()
    if tcase.clip:
        import torch
        torch.nn.utils.clip_grad_norm_(tcase.net.parameters(), tcase.clip)
    tcase.optimizer.step()
    params = npvae_grads(case, tcase, params=True)
    for path, p, _ in case.model.named_parameters():
        np.testing.assert_allclose(p, params[path], rtol=1e-5, atol=1e-6, err_msg=path)


def test_torch_twin_step_runs_and_learns():
    pytest.importorskip("torch")
    from npvae_lab.torch_pipelines import TorchPipelineCase
    tcase = TorchPipelineCase(build_pipeline_case("music", "tiny"))
    losses = [tcase.step() for _ in range(3)]
    assert all(np.isfinite(losses)) and losses[0] != losses[-1]


def test_fixed_noise_refuses_a_latent_of_another_shape():
    noise = pipeline_cases.FixedNoise(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="fixed noise"):
        noise.forward(np.zeros((4, 3), np.float32), np.zeros((4, 3), np.float32))


def test_torch_mask_network_equals_the_npvae_network():
    """The separation seam: the PyTorch network maps features to the same masks."""
    pytest.importorskip("torch")
    import npvae
    from npvae_lab.separation_bench import TorchMaskNetwork
    model = npvae.load_model("music-mir1k").model
    x = np.random.default_rng(0).standard_normal((1, 1, 512, 8 + 2 * model.DOWNSAMPLE)).astype(np.float32)
    np.testing.assert_allclose(TorchMaskNetwork(model).forward(x[..., 8:]), model.forward(x[..., 8:], sample=False),
                               rtol=0, atol=2e-6)


def _set_batchnorm_statistics(model, rng):
    """Running statistics and affine parameters away from their initial values."""
    from npvae.layers import BatchNorm
    for _, layer in model.named_layers():
        if isinstance(layer, BatchNorm):
            c = layer.num_features
            layer.buffers["running_mean"][...] = rng.normal(0.0, 0.5, c)
            layer.buffers["running_var"][...] = rng.uniform(0.3, 3.0, c)
            layer.params["gamma"][...] = rng.uniform(0.5, 1.5, c)
            layer.params["beta"][...] = rng.normal(0.0, 0.3, c)


SMALL_UNET = dict(channels=(4, 8, 8), latent_channels=4)
RNN = dict(rnn_hidden=8, freq_bins=64)


@pytest.mark.parametrize("stacks, options", [
    (1, dict(norm="batch")),
    (1, dict(norm="group")),
    (1, dict(norm="batch", norm_bias=True)),
    (1, dict(down="max", residual=True)),
    (1, dict(down="avg", dropout=0.3)),
    (1, dict(norm="batch", down="max", residual=True, dropout=0.2, rnn_layers=1, **RNN)),
    (1, dict(norm="group", down="avg", residual=True, rnn_layers=2, **RNN, channels=(4, 8, 8, 8))),
    (2, dict(norm="batch", rnn_layers=2, **RNN)),
    (2, dict(norm="group", down="max", residual=True)),
], ids=["batch", "group", "batch-bias", "max-residual", "avg-dropout", "batch-max-residual-rnn1",
        "group-avg-residual-rnn2-4levels", "stacked-batch-rnn2", "stacked-group-max-residual"])
def test_torch_mask_network_mirrors_every_option(stacks, options):
    """The separation seam for the other layouts a model file can hold: in eval mode
    the PyTorch network's masks are npvae's, and those of the BatchNorm-folded network
    npvae separate runs inside inference()."""
    pytest.importorskip("torch")
    from npvae.layers import fold_batchnorm, inference
    from npvae.models.stacked import mask_network
    from npvae_lab.separation_bench import TorchMaskNetwork
    rng = np.random.default_rng(stacks)
    model = mask_network(stacks, **{**SMALL_UNET, **options}, rng=np.random.default_rng(1))
    _set_batchnorm_statistics(model, rng)
    model.eval()
    x = rng.standard_normal((2, 1, 64, 16)).astype(np.float32)
    twin = TorchMaskNetwork(model)
    want = model.forward(x, sample=False)
    assert want.shape == (2, 2, 64, 16)
    np.testing.assert_allclose(twin.forward(x), want, rtol=0, atol=1e-5)
    folded = fold_batchnorm(model)
    assert (folded is model) == (options.get("norm") != "batch")
    with inference():
        np.testing.assert_allclose(twin.forward(x), folded.forward(x, sample=False), rtol=0, atol=1e-5)
    np.testing.assert_allclose(TorchMaskNetwork(folded).forward(x), want, rtol=0, atol=1e-5)


def test_torch_stacked_twin_keeps_every_stack():
    """The stacked twin's latent and logits are the stacks' side by side, as npvae's."""
    pytest.importorskip("torch")
    import torch
    from npvae.models.stacked import StackedSpectrogramUNetVAE
    from npvae_lab.torch_pipelines import TorchStackedSpectrogramUNet
    model = StackedSpectrogramUNetVAE(3, **SMALL_UNET, norm="group", rng=np.random.default_rng(2)).eval()
    x = np.random.default_rng(3).standard_normal((1, 1, 32, 16)).astype(np.float32)
    masks = model.forward(x, sample=False)
    net = TorchStackedSpectrogramUNet(model).eval()
    with torch.no_grad():
        tmasks, mu, logvar = net(torch.from_numpy(x))
    for got, want in ((tmasks, masks), (mu, model.mu), (logvar, model.logvar)):
        np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-5)
    assert len(net.earlier) == 2 and net.logits.shape == (1, 6, 32, 16)


@pytest.mark.parametrize("stacks, options", [
    (1, dict(norm="batch", down="max", residual=True, rnn_layers=2, **RNN)),
    (1, dict(norm="group", down="avg", residual=True, rnn_layers=1, **RNN)),
    (2, dict(norm="batch", rnn_layers=2, **RNN)),
], ids=["batch-max-residual-rnn2", "group-avg-residual-rnn1", "stacked-batch-rnn2"])
def test_torch_mask_network_trains_as_npvae(stacks, options):
    """Training mode without dropout (PyTorch's masks would differ): the same masks, the
    same parameter gradients and the same BatchNorm running statistics after one step."""
    pytest.importorskip("torch")
    import torch
    from npvae.layers import BatchNorm
    from npvae.models.stacked import mask_network
    from npvae_lab.torch_pipelines import torch_mask_network, twin_arrays
    rng = np.random.default_rng(4)
    model = mask_network(stacks, **{**SMALL_UNET, **options}, rng=np.random.default_rng(5))
    _set_batchnorm_statistics(model, rng)
    net = torch_mask_network(model).train()
    model.train()
    x = rng.standard_normal((2, 1, 64, 16)).astype(np.float32)
    w = rng.standard_normal((2, 2, 64, 16)).astype(np.float32)
    model.zero_grad()
    masks = model.forward(x, sample=False)
    model.backward(w)
    tmasks, _, _ = net(torch.from_numpy(x))
    (tmasks * torch.from_numpy(w)).sum().backward()
    np.testing.assert_allclose(tmasks.detach().numpy(), masks, rtol=0, atol=1e-5)
    grads = twin_arrays(model, net)
    for path, _, g in model.named_parameters():
        scale = max(float(np.abs(grads[path]).max()), 1e-6)
        np.testing.assert_allclose(g, grads[path], rtol=0, atol=2e-5 * scale, err_msg=path)
    buffers = dict(net.named_buffers())
    for path, layer in model.named_layers():
        if isinstance(layer, BatchNorm):
            for name, value in layer.buffers.items():
                np.testing.assert_allclose(value, buffers[f"{path}.{name}"].numpy(), rtol=1e-5, atol=1e-6,
                                           err_msg=f"{path}.{name}")


def test_separation_case_runs_the_command(tmp_path):
    """A 1 s stereo song through npvae separate with each network: both outputs
    written, and the row has the JSON keys."""
    from npvae_lab.separation_bench import time_separation
    from npvae_lab.torch_twin import torch_available
    torch_ok = torch_available()[0]
    row = time_separation(seconds=1.0, repeats=1, with_torch=torch_ok, settle_s=0.0, workdir=str(tmp_path))
    assert row["case"] == "separation" and row["outputs"] == ["song_accompaniment.wav", "song_vocals.wav"]
    assert row["npvae_ms"] > row["npvae"]["network_ms"] > 0
    if torch_ok:
        assert row["torch"]["network_ms"] > 0 and row["ratio"] == pytest.approx(row["npvae_ms"] / row["torch_ms"])
    assert list(tmp_path.iterdir()) == []                  # the temporary song and outputs are removed


def test_separated_song_sums_to_the_mixture(tmp_path):
    """The synthetic song is real audio for the command: its estimates add up to it."""
    import soundfile as sf
    from npvae_lab.separation_bench import separate, write_song
    song = write_song(tmp_path / "song.wav", seconds=0.5)
    separate([song, "--out", tmp_path / "out", "--no-progress"])
    x, sr = sf.read(str(song), dtype="float32")
    v, _ = sf.read(str(tmp_path / "out" / "song_vocals.wav"), dtype="float32")
    a, _ = sf.read(str(tmp_path / "out" / "song_accompaniment.wav"), dtype="float32")
    assert sr == 44100 and x.shape == v.shape == a.shape and x.shape[1] == 2
    assert np.abs(v + a - x).max() < 2e-3


def test_layer_bench_times_every_convolution():
    from npvae_lab.layer_bench import format_layers, time_layers
    case = build_pipeline_case("mnist_unet", "tiny")
    rows = time_layers(case, gemm_gflops=10.0, repeats=1, with_torch="torch" in sys.modules or
                       importlib.util.find_spec("torch") is not None, settle_s=0.0)
    assert [r["layer"] for r in rows] == ["enc1", "enc2", "enc3", "up2", "up1", "out"]
    for r in rows:
        assert r["npvae_forward_ms"] > 0 and r["npvae_backward_ms"] > 0 and r["gflop_forward"] > 0
    assert rows[0]["gflop_backward"] == rows[0]["gflop_forward"]        # the input needs no gradient
    assert rows[1]["gflop_backward"] == 2 * rows[1]["gflop_forward"]
    assert case.model.enc1.needs_input_grad                              # restored
    assert rows[0]["algorithm"].removesuffix("@1") in ("im2col", "direct", "winograd", "winograd4", "cin1")   # Conv2d.algorithm
    assert "enc3" in format_layers(rows, 10.0)


def test_layer_bench_times_batchnorm_and_groupnorm_after_every_convolution():
    from npvae_lab.layer_bench import format_norm_layers, time_norm_layers
    case = build_pipeline_case("mnist_unet", "tiny")
    rows = time_norm_layers(case, repeats=1, with_torch=importlib.util.find_spec("torch") is not None, settle_s=0.0)
    assert [(r["after"], r["type"]) for r in rows[:2]] == [("enc1", "BatchNorm"), ("enc1", "GroupNorm")]
    assert len(rows) == 12 and all(r["npvae_forward_ms"] > 0 and r["npvae_backward_ms"] > 0 for r in rows)
    assert "BatchNorm (up1)" in format_norm_layers(rows)


def test_layer_bench_times_the_recurrent_layers():
    from npvae_lab.layer_bench import format_layers, time_recurrent
    with_torch = importlib.util.find_spec("torch") is not None
    rows = time_recurrent(10.0, "tiny", kinds=("LSTM", "GRU"), repeats=1, with_torch=with_torch, settle_s=0.0)
    assert [(r["layer"], r["input"], r["output"]) for r in rows] == [("lstm", [2, 5, 8], [2, 5, 8]),
                                                                     ("gru", [2, 5, 8], [2, 5, 8])]
    # 2 layers x 2 directions x 2 N T (G*H*F_in + G*H*H): F_in = 8, then 2 H = 8
    assert rows[0]["gflop_forward"] * 1e9 == pytest.approx(2 * 2 * 2 * 10 * (16 * 8 + 16 * 4))
    for r in rows:
        assert r["npvae_forward_ms"] > 0 and r["npvae_backward_ms"] > 0
        assert r["gflop_backward"] == 2 * r["gflop_forward"]
        assert not with_torch or r["torch_backward_ms"] > 0
    assert "lstm" in format_layers(rows, 10.0)


def test_summary_table_gives_ranges_over_runs(tmp_path):
    from npvae_lab.bench_summary import load, markdown

    def report(ms, load_avg):
        t = {"min_ms": ms / 2}
        return {"machine": "CPU X", "threads": 2, "gemm_gflops": 100.0, "gemm_gflops_after": 120.0,
                "load_average": [load_avg, 0, 0],
                "cases": [{"case": "music", "npvae_ms": ms, "torch_ms": 200.0, "ratio": ms / 200.0,
                           "gemm_fraction": ms / 1000, "npvae_backend": "numba", "numba": t, "torch": t},
                          {"case": "separation", "npvae_ms": 2 * ms, "torch_ms": 400.0, "ratio": ms / 200.0,
                           "npvae": t, "torch": t}]}
    paths = []
    for k, ms in enumerate((100.0, 150.0)):
        paths.append(tmp_path / f"r{k}.json")
        paths[-1].write_text(__import__("json").dumps(report(ms, 1.0 + k)))
    text = markdown(load(paths))
    assert "| 100.0-150.0 | 200.0 | 0.50-0.75 | <= 1.0 | 50.0 / 50.0 | 10-15 |" in text
    assert "| 200.0-300.0 | 400.0 | 0.50-0.75 | <= 0.8 | 50.0 / 50.0 | - |" in text
    assert "2 runs on CPU X" in text and "100-120 GFLOP/s" in text and "1.0-2.0" in text


def test_scaling_table_pairs_each_layer_on_one_and_two_threads():
    from npvae_lab.bench_summary import scaling_markdown

    def report(threads, npvae_ms, torch_ms):
        row = {"case": "music", "layer": "enc2", "algorithm": "im2col", "npvae_forward_ms": npvae_ms / 2,
               "npvae_backward_ms": npvae_ms / 2, "torch_forward_ms": torch_ms / 2, "torch_backward_ms": torch_ms / 2}
        return {"threads": threads, "cases": [], "layers": [row]}

    assert scaling_markdown([report(2, 10.0, 8.0)]) == ""            # one thread count: no scaling to show
    text = scaling_markdown([report(1, 18.0, 16.0), report(2, 10.0, 8.0), report(2, 12.0, 9.0), report(2, 11.0, 100.0)])
    # the median of the three 2-thread runs: npvae 11.0 ms, PyTorch 9.0 ms
    assert "| music | enc2 (im2col) | 18.0 / 11.0 | 1.64 | 16.0 / 9.0 | 1.78 |" in text


def test_conv_layer_bench_script_times_each_algorithm_it_can_run(capsys):
    import bench_conv_layers
    assert bench_conv_layers.main(["--algorithms", "im2col", "im2col@1", "winograd", "--rounds", "1"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "->" in line]
    assert len(lines) == len(bench_conv_layers.SHAPES)
    for line in lines:                       # Winograd runs the 3x3 stride-1 first layers, no strided one
        assert "im2col " in line and "im2col@1 " in line
        assert ("winograd" in line) == ("3x3/1:" in line)
        assert all(float(t) > 0 for t in re.findall(r"(\d+\.\d) /", line))
    with pytest.raises(SystemExit):
        bench_conv_layers.main(["--algorithms", "fft"])


def test_layer_bench_times_dropout_pooling_and_upsampling():
    from npvae_lab.layer_bench import format_elementwise, time_elementwise
    with_torch = importlib.util.find_spec("torch") is not None
    rows = time_elementwise("tiny", repeats=1, with_torch=with_torch, settle_s=0.0)
    assert {r["layer"].split("(")[0] for r in rows} == {"Dropout", "MaxPool2d", "AvgPool2d", "Upsample"}
    for r in rows:
        assert r["npvae_forward_ms"] > 0 and r["npvae_backward_ms"] > 0
        assert ("torch_backward_ms" in r) == with_torch
    assert rows[2]["output"] == [2, 2, 2, 2] and rows[-1]["output"] == [2, 2, 7, 7]
    assert "MaxPool2d(2)" in format_elementwise(rows)

"""The benchmark's cases: npvae and PyTorch agree on the same weights, and ``npvae
bench`` runs (tiny sizes) with and without PyTorch. No timing assertions here."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from npvae import kernels
from npvae_lab import benchmark, torch_twin

pytestmark = pytest.mark.slow     # an end-to-end file (CI runs it on the default backend only)

REPO = Path(__file__).resolve().parents[1]


def _eps(case):
    if "head" not in case.model.parts:
        return None
    n, lat = case.batch["x"].shape[0], case.model.parts["head"].latent_dim
    return np.random.default_rng(5).standard_normal((n, lat)).astype(np.float32)


@pytest.mark.parametrize("name", benchmark.CASES)
def test_case_builds_and_trains(name):
    case = benchmark.build_case(name, "tiny")
    losses = [case.step() for _ in range(3)]
    assert all(np.isfinite(losses))
    assert case.flops() > 0


@pytest.mark.parametrize("name", benchmark.SYNTHETIC_CASES)
def test_npvae_and_torch_agree_on_one_step(name):
    torch = pytest.importorskip("torch")
    case = benchmark.build_case(name, "tiny")
    tcase = torch_twin.TorchCase(case)
    eps = _eps(case)
    loss = case.forward_backward(eps)
    tloss = tcase.loss(eps)
    tloss.backward()
    assert loss == pytest.approx(float(tloss.detach()), rel=1e-5)
    tgrads = torch_twin.torch_grads_as_npvae(case, tcase)
    for path, _, g in case.model.named_parameters():
        scale = max(float(np.abs(tgrads[path]).max()), 1e-6)
        np.testing.assert_allclose(g, tgrads[path], rtol=0, atol=2e-5 * scale, err_msg=path)
    # one Adam step each: the parameters stay together
    case.optimizer.step()
    tcase.optimizer.step()
    tparams = dict(tcase.parts.named_parameters())
    for path, p, _ in case.model.named_parameters():
        t = tparams[torch_twin._torch_path(case, path)].detach().numpy()
        np.testing.assert_allclose(p, t.T if t.ndim == 2 else t, rtol=1e-5, atol=1e-6, err_msg=path)
    assert torch.get_num_threads() >= 1


def test_report_fields_without_torch():
    report = benchmark.run_benchmark(cases=["dense_vae"], backends=["numpy"], steps=2, warmup=1,
                                     use_torch=False, size="tiny", log=None)
    entry = report["cases"][0]
    assert entry["case"] == "dense_vae" and entry["torch_ms"] is None and entry["ratio"] is None
    assert entry["npvae_ms"] == entry["numpy"]["median_ms"] > 0
    assert report["torch_missing_reason"] and report["peak_rss_mb"] > 0 and report["gemm_gflops"] > 0
    assert "no PyTorch comparison" in benchmark.format_table(report)
    assert kernels.backend() in kernels.BACKENDS


def test_unknown_case_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown case"):
        benchmark.run_benchmark(cases=["resnet"], use_torch=False, size="tiny")


def _run_command(tmp_path, *args, env_extra=None):
    """``npvae bench --quick --json`` run in ``tmp_path`` (the lab found on PYTHONPATH)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*(env_extra or []), str(REPO), str(REPO / "scripts")]),
               MPLBACKEND="Agg")
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "npvae", "bench", "--quick", "--json", "bench.json", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, json.loads(out.read_text())


def test_command_quick_writes_json(tmp_path):
    stdout, report = _run_command(tmp_path)
    assert [c["case"] for c in report["cases"]] == list(benchmark.DEFAULT_CASES)
    for c in report["cases"]:
        assert {"case", "npvae_ms", "torch_ms", "ratio"} <= set(c)
        if c["case"] == "separation":          # one pipeline run per network (tests/test_bench_cases.py)
            assert c["npvae_ms"] == c["npvae"]["median_ms"] > 0
            continue
        for b in report["backends"]:
            assert c[b]["median_ms"] > 0 and c[b]["min_ms"] <= c[b]["median_ms"] <= c[b]["max_ms"]
        if report["torch"] is not None:
            assert c["ratio"] == pytest.approx(c["npvae_ms"] / c["torch_ms"])
    assert "dense_vae" in stdout
    # which BLAS ran the GEMMs, in the JSON and in the printed header
    assert report["blas"] and {"internal_api", "architecture", "version", "num_threads"} <= set(report["blas"][0])
    assert f"BLAS: {report['blas'][0]['internal_api']} {report['blas'][0]['version']}" in stdout
    assert "wrote bench.json" in stdout


def test_command_says_why_torch_is_missing(tmp_path):
    fake = tmp_path / "fake"
    (fake / "torch").mkdir(parents=True)
    (fake / "torch" / "__init__.py").write_text("raise ImportError('simulated: no torch here')\n")
    stdout, report = _run_command(tmp_path, "--cases", "dense_vae", env_extra=[str(fake)])
    assert report["torch"] is None and report["cases"][0]["ratio"] is None
    assert "no PyTorch comparison" in stdout and "pip install torch" in stdout

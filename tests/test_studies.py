"""The loss study (``npvae study``) end to end on the tiny budget: one row per
configuration with finite metrics, Markdown + HDF5 + figure, and a killed study resuming
(--resume) without retraining."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from npvae import h5mat
from npvae_lab.studies import RESULT_FILE, configurations
from npvae_lab.study_table import markdown_table, read_study, verdict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDY = [sys.executable, "-m", "npvae", "study"]


def _env(shared_data):
    return {**os.environ, "NPVAE_DATA": str(shared_data), "MPLBACKEND": "Agg"}


def _check_study(out, task):
    study = read_study(out)
    assert h5mat.file_kind(out / "study.h5")[0] == "loss_study"
    names = [r["name"] for r in study["rows"]]
    for c in configurations(task):
        assert c.name in names, f"no row for {c.name}"
    extra = {"mnist": ["mixture"], "music": ["irm", "mixture"]}[task]
    assert set(names) == {c.name for c in configurations(task)} | set(extra)
    for r in study["rows"]:
        metrics = {k: v for k, v in r.items() if k not in ("name", "label", "group")}
        assert metrics and all(np.isfinite(v) for v in metrics.values()), r
    table = (out / "table.md").read_text()
    for r in study["rows"]:
        assert f"| {r['label']} |" in table
    assert (out / "validation_curves.png").stat().st_size > 1000
    trained = [c.name for c in configurations(task) if c.kind == "vae"]
    assert sorted(study["curves"]) == sorted(trained)
    return study


@pytest.mark.parametrize("task", ["mnist", "music"])
def test_tiny_study_writes_a_row_per_configuration(shared_data, tmp_path, task):
    out = tmp_path / task
    r = subprocess.run([*STUDY, "--task", task, "--budget", "tiny", "--out", str(out), "--jobs", "2"],
                       cwd=REPO, env=_env(shared_data), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    study = _check_study(out, task)
    if task == "music":   # the oracle ceiling is above the floor
        rows = {row["name"]: row for row in study["rows"]}
        assert rows["irm"]["vocals_gnsdr"] > rows["mixture"]["vocals_gnsdr"] + 3


def test_killed_study_resumes_without_retraining(shared_data, tmp_path):
    out = tmp_path / "study"
    cmd = [*STUDY, "--task", "mnist", "--budget", "tiny", "--out", str(out), "--jobs", "1",
           "--only", "bce_beta1", "mse_beta1"]
    first = out / "bce_beta1" / RESULT_FILE
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(shared_data), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not first.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert first.exists(), "the first configuration never finished"
        os.killpg(proc.pid, signal.SIGKILL)     # the study and its running configuration
    finally:
        proc.wait()
    assert not (out / "mse_beta1" / RESULT_FILE).exists(), "killed too late to test a resume"
    stamp = first.stat().st_mtime_ns
    again = subprocess.run(cmd, cwd=REPO, env=_env(shared_data), capture_output=True, text=True, timeout=600)
    assert again.returncode == 1 and "--resume to continue that study" in again.stderr, again.stderr
    r = subprocess.run(cmd + ["--resume"], cwd=REPO, env=_env(shared_data), capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "bce_beta1: done already, not trained again" in r.stdout
    assert "1 of 2 configurations to run" in r.stdout
    assert first.stat().st_mtime_ns == stamp
    names = [row["name"] for row in read_study(out)["rows"]]
    assert names == ["bce_beta1", "mse_beta1"]


def test_table_and_verdict_come_from_the_rows():
    study = {"task": "mnist", "budget": "x", "n_eval": 5, "curves": {}, "rows": [
        {"name": "a", "label": "A", "group": "loss", "digit_psnr": 10.0, "fashion_psnr": 12.0, "mean_psnr": 11.0,
         "mean_ssim": 0.5, "mean_mse": 0.01, "train_seconds": 3.0},
        {"name": "b", "label": "B", "group": "loss", "digit_psnr": 14.0, "fashion_psnr": 12.5, "mean_psnr": 13.25,
         "mean_ssim": 0.6, "mean_mse": 0.005, "train_seconds": 4.0},
        {"name": "n", "label": "N", "group": "baseline", "digit_psnr": 20.0, "fashion_psnr": 20.0,
         "mean_psnr": 20.0, "mean_ssim": 0.9, "mean_mse": 0.001, "train_seconds": 1.0}]}
    table = markdown_table(study)
    assert table.count("\n") == 4 and "| B | loss | 14.00 | 12.50 | 13.25 |" in table
    text = verdict(study)
    assert "**B** (13.25 dB)" in text and "A (11.00 dB)" in text and "2.25 dB" in text

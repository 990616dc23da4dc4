"""The loss study (``npvae study``) end to end on the tiny budget: one row per
configuration with finite metrics, Markdown + HDF5 + figure, and a killed study resuming
(--resume) without retraining."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from npvae.files import h5mat
from npvae.lab.studies import RESULT_FILE, configurations
from npvae.lab.study_table import markdown_table, read_study, verdict

pytestmark = pytest.mark.slow     # an end-to-end file (CI runs it on the default backend only)

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


# ----------------------------------------------------------------------------- ablations

ABLATIONS = [("mnist", "best"), ("mnist", "unet"), ("mnist", "vae"), ("mnist", "compact-vae"), ("mnist", "bn-vae"),
             ("mnist", "dense-best"), ("mnist", "anchor"), ("music", "best"), ("music", "recurrent"),
             ("music", "stacked"), ("music", "stacked-small")]


@pytest.mark.parametrize("task,preset", ABLATIONS)
def test_an_ablation_changes_one_setting_of_the_recipe_at_a_time(task, preset):
    from npvae.engine.run import make_config
    confs = configurations(task, preset)
    recipe = confs[0]
    assert recipe.group == "recipe" and "epochs" not in recipe.settings     # the budget sets the epochs
    assert len(confs) >= 3
    for c in confs[1:]:
        changed = [k for k in c.settings if c.settings[k] != recipe.settings.get(k)]
        if c.group == "alternative":     # another value in place of the recipe's: the model still builds
            assert changed == [c.name.removeprefix("alt_")], c
            make_config(task, c.settings)
            continue
        assert c.group == "ablation" and changed == [c.name.removeprefix("no_")], c
        # the changed setting is what a run of that recipe gets without the flag
        key = changed[0]
        unset = make_config(task, {k: v for k, v in c.settings.items() if k != key})
        ablated = make_config(task, c.settings)
        if task == "mnist":
            assert unset.model_kwargs() == ablated.model_kwargs()
        assert getattr(unset, key) in (getattr(ablated, key), None)


def test_the_new_layers_ablations_ask_what_each_option_buys():
    """BatchNorm and pooling put back, GroupNorm and dropout swapped in (Part I); BatchNorm
    and the recurrent bottleneck put back, GroupNorm, dropout and pooling swapped in (music)."""
    labels = {c.name: c.label for c in configurations("mnist", "anchor")}
    assert labels["no_norm"] == "--norm none instead of batch" and labels["no_down"] == "--down stride instead of max"
    assert labels["alt_norm"] == "--norm group instead of batch" and labels["alt_dropout"].startswith("--dropout 0.1")
    labels = {c.name: c.label for c in configurations("music", "recurrent")}
    assert labels["no_norm"] == "--norm none instead of batch" and labels["no_rnn_layers"] == "--rnn-layers 0 instead of 2"
    assert {"alt_norm", "alt_dropout", "alt_down"} <= set(labels)
    r = subprocess.run([*STUDY, "--task", "music", "--ablate", "recurrent", "--list"], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and re.search(r"alt_down +alternative +--down max instead of stride", r.stdout), r.stdout


def test_ablation_labels_name_the_flags_a_user_types():
    labels = {c.name: c.label for c in configurations("mnist", "unet")}
    assert labels["no_sample"] == "--sample instead of --no-sample"
    assert labels["no_channels"] == "--channels 16 32 64 instead of 32 64 128"
    assert labels["recipe"].startswith("--preset unet (--model unet, --channels 32 64 128,") and "--no-sample" in labels["recipe"]
    from npvae.lab.study_table import _bought
    assert _bought(labels["no_sample"]) == "--no-sample rather than --sample"
    assert _bought(labels["no_blocks"]) == "--blocks 2 rather than 1"


def test_ablation_table_and_verdict_say_what_each_setting_buys():
    study = {"task": "mnist", "budget": "x", "study": "ablate best", "n_eval": 5, "curves": {}, "rows": [
        {"name": "recipe", "label": "--preset best (...)", "group": "recipe", "digit_psnr": 20.0,
         "fashion_psnr": 22.0, "mean_psnr": 21.0, "mean_ssim": 0.8, "mean_mse": 0.01, "train_seconds": 3.0},
        {"name": "no_blocks", "label": "--blocks 1 instead of 2", "group": "ablation", "digit_psnr": 19.0,
         "fashion_psnr": 20.0, "mean_psnr": 19.5, "mean_ssim": 0.7, "mean_mse": 0.02, "train_seconds": 2.0},
        {"name": "no_beta", "label": "--beta 0.5 instead of 0.1", "group": "ablation", "digit_psnr": 21.0,
         "fashion_psnr": 22.0, "mean_psnr": 21.5, "mean_ssim": 0.8, "mean_mse": 0.01, "train_seconds": 2.0}]}
    table = markdown_table(study)
    assert "against the recipe (dB)" in table.splitlines()[0]
    assert "| --blocks 1 instead of 2 | ablation | 19.00 | 20.00 | 19.50 |" in table and "| -1.50 |" in table
    text = verdict(study)
    assert "recipe scores 21.00 dB" in text
    assert text.index("--blocks 2 rather than 1: +1.50 dB") < text.index("--beta 0.1 rather than 0.5: -0.50 dB")
    assert "does better without: --beta 0.5 instead of 0.1" in text
    # a run below the floor failed to train: named as such, not counted as what a setting buys
    study["rows"].append({"name": "no_channels", "label": "--channels 16 32 64 instead of 24 48 96", "group": "ablation",
                          "digit_psnr": 5.0, "fashion_psnr": 6.0, "mean_psnr": 5.5, "mean_ssim": 0.1,
                          "mean_mse": 0.3, "train_seconds": 2.0})
    assert "| failed to train |" in markdown_table(study)
    text = verdict(study)
    assert "--channels 24 48 96 rather than" not in text
    assert "failed to train (it scored below 10 dB): --channels 16 32 64 instead of 24 48 96 (5.50 dB)" in text
    # another value in place of the recipe's: its score against the recipe's, not what a setting buys
    study["rows"].append({"name": "alt_norm", "label": "--norm group instead of batch", "group": "alternative",
                          "digit_psnr": 20.5, "fashion_psnr": 21.9, "mean_psnr": 21.2, "mean_ssim": 0.8,
                          "mean_mse": 0.01, "train_seconds": 2.0})
    assert "| --norm group instead of batch | alternative | 20.50 |" in markdown_table(study)
    text = verdict(study)
    assert "With one setting swapped (the score minus the recipe's): --norm group instead of batch: +0.20 dB" in text
    assert "rather than batch" not in text


def test_tiny_ablation_end_to_end(shared_data, tmp_path):
    out = tmp_path / "ablate"
    # the dense preset: the quickest to train; the ablation machinery is the same for every preset
    cmd = [*STUDY, "--task", "mnist", "--ablate", "dense-best", "--budget", "tiny", "--out", str(out), "--jobs", "2",
           "--only", "recipe", "no_beta", "--seed", "1"]
    r = subprocess.run(cmd, cwd=REPO, env=_env(shared_data), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    study = read_study(out)
    assert study["study"] == "ablate dense-best" and study["seed"] == 1
    assert json.loads((out / "recipe" / "config.json").read_text())["seed"] == 1     # every run drew from it
    assert "seed 1" in (out / "table.md").read_text().splitlines()[0]
    # the study continues only with its own seed
    other = subprocess.run(cmd[:-2] + ["--resume"], cwd=REPO, env=_env(shared_data), capture_output=True, text=True,
                           timeout=600)
    assert other.returncode == 1 and "pass --seed 1" in other.stderr, other.stderr
    rows = {row["name"]: row for row in study["rows"]}
    assert sorted(rows) == ["no_beta", "recipe"] and rows["recipe"]["group"] == "recipe"
    assert all(np.isfinite(row["prior_mean_mean_psnr"]) for row in rows.values())
    table = (out / "table.md").read_text()
    assert "ablation" in table.splitlines()[0] and "| +0.00 |" in table
    assert f"{rows['no_beta']['mean_psnr'] - rows['recipe']['mean_psnr']:+.2f} |" in table
    # the folder holds an ablation: the loss study may not resume into it
    loss = subprocess.run([*STUDY, "--task", "mnist", "--budget", "tiny", "--out", str(out), "--resume",
                           "--only", "bce_beta1"], cwd=REPO, env=_env(shared_data), capture_output=True, text=True,
                          timeout=600)
    assert loss.returncode == 1 and "holds a mnist study (ablate dense-best)" in loss.stderr, loss.stderr
    # and the report has its section, numbers from the file
    report = tmp_path / "report"
    r = subprocess.run([sys.executable, "-m", "npvae", "report", str(out), "--out", str(report)], cwd=REPO,
                       env=_env(shared_data), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    md = (report / "report.md").read_text()
    assert "## Ablation of --preset dense-best, Part I (images)" in md
    assert f"recipe scores {rows['recipe']['mean_psnr']:.2f} dB" in md and "## Baselines" not in md
    assert "the same seed (1)" in md


def test_ablate_refuses_a_preset_it_cannot_take_apart():
    r = subprocess.run([*STUDY, "--task", "music", "--ablate", "dense-best", "--list"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--ablate takes a preset of music that changes settings: best" in r.stderr, r.stderr
    r = subprocess.run([*STUDY, "--task", "mnist", "--ablate", "best", "--list"], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "no_blocks" in r.stdout and "--blocks 1 instead of 2" in r.stdout, r.stderr


def test_study_help_names_every_preset_an_ablation_takes_apart():
    from npvae.lab.studies import ablatable_presets
    r = subprocess.run([*STUDY, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    listed = re.search(r"ablate this preset \((.*?)\)", " ".join(r.stdout.split())).group(1)
    named = {task.strip(): {p.strip() for p in presets.split(",")}
             for task, presets in (part.split(":") for part in listed.split(";"))}
    assert named == {task: set(ablatable_presets(task)) for task in ("mnist", "music")}, listed


# ----------------------------------------------------------------------------- a time budget

def test_timed_epochs_fit_the_minutes_and_are_chosen_once(shared_data, tmp_path, monkeypatch):
    from npvae.lab import studies
    settings = {**studies.BUDGETS["mnist"]["tiny"]["common"], **studies.BUDGETS["mnist"]["tiny"]["dense"],
                "data_dir": str(shared_data)}
    seconds = studies.seconds_per_epoch("mnist", settings, tmp_path)
    assert 0 < seconds < 60
    # the epochs that fit: the minutes over the timed seconds an epoch, at least 1
    monkeypatch.setattr(studies, "seconds_per_epoch", lambda *a, **k: 7.0)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert studies.timed_epochs("mnist", settings, tmp_path / "a", minutes=1.0, log=lambda s: None) == 8
    assert studies.timed_epochs("mnist", settings, tmp_path / "b", minutes=0.01, log=lambda s: None) == 1
    # a resumed study keeps the epochs it chose: no second timing
    monkeypatch.setattr(studies, "seconds_per_epoch", lambda *a, **k: pytest.fail("timed again"))
    assert studies.timed_epochs("mnist", settings, tmp_path / "a", minutes=1000.0) == 8


def test_a_one_thread_configuration_is_timed_by_its_own_cpu_seconds(shared_data, tmp_path, monkeypatch):
    """Time another process takes from this one (a busy machine) is not charged to the
    configuration: a step that waits costs wall-clock time but almost no CPU time."""
    import time

    from threadpoolctl import threadpool_limits

    from npvae.lab import studies
    from npvae.tasks.mnist.task import MnistTask
    numba = pytest.importorskip("numba")
    settings = {**studies.BUDGETS["mnist"]["tiny"]["common"], **studies.BUDGETS["mnist"]["tiny"]["dense"],
                "data_dir": str(shared_data)}
    real_step = MnistTask.step

    def waiting_step(self, *args, **kwargs):
        time.sleep(0.3)
        return real_step(self, *args, **kwargs)
    monkeypatch.setattr(MnistTask, "step", waiting_step)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        with threadpool_limits(limits=1):
            monkeypatch.setenv("NPVAE_NUM_THREADS", "1")
            one_thread = studies.seconds_per_epoch("mnist", settings, tmp_path / "one")
            monkeypatch.setenv("NPVAE_NUM_THREADS", "2")       # more threads: wall clock
            wall = studies.seconds_per_epoch("mnist", settings, tmp_path / "two")
    finally:
        numba.set_num_threads(threads)
    assert wall >= 0.3                     # at least the waits of an epoch's batches
    assert one_thread < 0.5 * wall, (one_thread, wall)


def test_a_study_resumes_only_with_its_own_time_budget(tmp_path):
    from npvae.errors import OutputError
    from npvae.lab import studies
    (tmp_path / "recipe").mkdir()
    (tmp_path / "recipe" / RESULT_FILE).write_text(json.dumps(
        {"task": "mnist", "budget": "tiny", "study": "ablate anchor", "seed": 0, "minutes": 2.0}))
    studies.check_study_dir(tmp_path, "mnist", "tiny", resume=True, ablate="anchor", minutes=2.0)
    for other in (None, 3.0):
        with pytest.raises(OutputError, match="--minutes 2"):
            studies.check_study_dir(tmp_path, "mnist", "tiny", resume=True, ablate="anchor", minutes=other)
    assert studies.default_out("mnist", "default", "anchor", 0, 20.0).name == "ablate-mnist-anchor-default-20min"

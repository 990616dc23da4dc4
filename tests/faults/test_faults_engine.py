"""Fault cases of the training engine, whatever the task: one set of flags and exit
statuses, a locked run folder, resume that keeps a run's own settings, a finished run
left alone, a full disk and a diverged loss that say what to do next."""
import errno
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from _faults import digest, expect_error, must_survive

import npvae
import npvae.cli
from npvae.files.guard import RunLock

REPO = Path(__file__).resolve().parents[2]
TASKS = ("mnist", "music", "blind-mnist", "blind-music")
SHARED_FLAGS = ("--epochs", "--batch-size", "--lr", "--lr-schedule", "--clip-norm", "--beta", "--kl-warmup",
                "--seed", "--display-every", "--data-dir", "--out", "--train-limit", "--eval-limit", "--progress",
                "--preset", "--resume", "--overwrite")


def finished_copy(run: Path, where: Path) -> Path:
    shutil.copytree(run, where)
    return where


@pytest.mark.fault("engine", "the four training pipelines: one train() for all", "correct result")
def test_one_train_function():
    """Every task trains through npvae.engine.run.train: no other ``def train(`` in the library."""
    found = [str(p.relative_to(REPO)) for p in (REPO / "npvae").rglob("*.py") if "\ndef train(" in p.read_text()]
    assert found == ["npvae/engine/run.py"], found


@pytest.mark.fault("engine", "the same flag for the same setting in every task ({task})", "correct result")
@pytest.mark.parametrize("task", TASKS)
def test_shared_flags_in_every_task(task, capsys):
    with pytest.raises(SystemExit):
        npvae.cli.main(["train", task, "--help"])
    text = capsys.readouterr().out
    missing = [f for f in SHARED_FLAGS if f not in text]
    assert not missing, f"npvae train {task} lacks {missing}"
    for old in ("--warmup ", "--recon", "--max-train-tracks", "--max-val-tracks"):
        assert old not in text, f"npvae train {task} still has {old}"


@pytest.mark.fault("engine", "npvae train blind-mnist --hidden 512 256 (space-separated list)", "correct result")
def test_blind_hidden_takes_a_spaced_list(cli, tmp_path):
    """The same list syntax as in npvae train mnist (this exited 2 for the blind script);
    --data-dir is a folder without data, so the run stops at the data with exit 1, not 2."""
    r = cli("train", "blind-mnist", "--hidden", "512", "256", "--data-dir", tmp_path / "none",
            "--out", tmp_path / "run", "--no-progress")
    assert r.code == 1, r.err
    assert "--hidden" not in r.err and "does not exist" in r.err


@pytest.mark.fault("engine", "npvae train {task} with a value no config accepts: exit 2", "clear error")
@pytest.mark.parametrize("task", TASKS)
def test_bad_value_is_a_usage_error_everywhere(cli, task, tmp_path):
    r = cli("train", task, "--epochs", "0", "--out", tmp_path / "run")
    expect_error(r, "--epochs must be >= 1")
    assert r.code == 2


@pytest.mark.fault("engine", "npvae train {task} with no data where it looks: exit 1, the fix named", "clear error")
@pytest.mark.parametrize("task", TASKS)
def test_missing_data_fails_with_status_1_everywhere(cli, task, tmp_path):
    r = cli("train", task, "--data-dir", tmp_path / "empty", "--out", tmp_path / "run", "--no-progress")
    expect_error(r, "data|not found|does not exist|no .*clips")
    assert r.code == 1


@pytest.mark.fault("engine", "--channels 16 (one number) for the U-Net", "clear error")
@pytest.mark.parametrize("channels", [["16"], ["16", "32", "64", "128", "256", "512"]])
def test_unet_channels_count(cli, tmp_path, channels):
    r = cli("train", "mnist", "--model", "unet", "--channels", *channels, "--out", tmp_path / "run")
    expect_error(r, r"--channels takes 2 to 5 numbers")
    assert r.code == 2


@pytest.mark.fault("engine", "two trainings started at once into one empty --out", "clear error")
def test_a_locked_run_folder_is_refused(cli, mnist_args, tmp_path):
    out = tmp_path / "run"
    with RunLock(out):            # a first run holds the folder
        r = cli("train", "mnist", *mnist_args(out))
    expect_error(r, rf"in use by another run \(process \d+ on .*\)")
    assert sorted(p.name for p in out.iterdir()) == []      # the second run wrote nothing


@pytest.mark.fault("engine", "a second process of an mpirun without MPI (NPVAE_MPI=0) into the same --out",
                   "clear error")
def test_a_second_process_is_refused_while_the_first_trains(tmp_path, mnist_args, shared_data):
    out = tmp_path / "run"
    env = {"NPVAE_DATA": str(shared_data), "MPLBACKEND": "Agg", "NPVAE_MPI": "0", "PATH": "/usr/bin:/bin"}
    import os
    env = {**os.environ, **env}
    cmd = [sys.executable, "-m", "npvae", "train", "mnist", *map(str, mnist_args(out, 3))]
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lock = out / ".npvae-lock"
        for _ in range(600):             # until the first holds the folder
            if lock.exists() and lock.stat().st_size:
                break
            if first.poll() is not None:
                break
            import time
            time.sleep(0.05)
        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    finally:
        out_first, err_first = first.communicate(timeout=300)
    assert first.returncode == 0, err_first
    assert second.returncode == 1 and "in use by another run" in second.stderr, second.stderr
    assert json.loads((out / "history.json").read_text())["epoch"] == [1, 2, 3]


@pytest.mark.fault("engine", "--resume of a finished 1-epoch run without repeating --epochs", "correct result")
def test_resume_of_a_finished_run_says_so(cli, mnist_run, tmp_path):
    """It does not train towards the default 50 epochs, and config.json still says 1."""
    run = finished_copy(mnist_run, tmp_path / "run")
    before = {name: digest(run / name) for name in ("config.json", "checkpoint.npz", "model.h5")}
    r = cli("train", "mnist", "--out", run, "--resume")
    assert r.code == 0, r.err
    assert re.search(r"finished run \(1 of 1 epochs\).*--resume --epochs \d+", " ".join(r.out.split()))
    for name, data in before.items():
        must_survive(run / name, data)


@pytest.mark.fault("engine", "--resume with more --epochs and no other flag keeps the run's settings",
                   "correct result")
def test_resume_keeps_the_runs_own_settings(cli, mnist_run, tmp_path):
    run = finished_copy(mnist_run, tmp_path / "run")
    r = cli("train", "mnist", "--out", run, "--resume", "--epochs", "2", "--no-progress")
    assert r.code == 0, r.err
    config = json.loads((run / "config.json").read_text())
    assert config["epochs"] == 2 and config["hidden"] == [16] and config["latent_dim"] == 2
    assert json.loads((run / "history.json").read_text())["epoch"] == [1, 2]


@pytest.mark.fault("engine", "--resume with a changed model setting (--latent-dim)", "clear error")
def test_resume_refuses_a_changed_model(cli, mnist_run, tmp_path):
    run = finished_copy(mnist_run, tmp_path / "run")
    before = digest(run / "checkpoint.npz")
    expect_error(cli("train", "mnist", "--out", run, "--resume", "--epochs", "2", "--latent-dim", "8"),
                 r"cannot resume .*latent_dim: 2 -> 8")
    must_survive(run / "checkpoint.npz", before)


@pytest.mark.fault("engine", "the divergence advice (--resume with a lower --lr) works as printed", "correct result")
def test_divergence_advice_can_be_followed(cli, mnist_run, tmp_path, monkeypatch):
    run = finished_copy(mnist_run, tmp_path / "run")
    from npvae.tasks.mnist.objective import SeparationObjective
    real = SeparationObjective.terms

    def diverging(self, *args, **kwargs):
        terms = real(self, *args, **kwargs)
        return {**terms, "total": float("nan")} if kwargs.get("backward", True) else terms

    monkeypatch.setattr(SeparationObjective, "terms", diverging)
    r = cli("train", "mnist", "--out", run, "--resume", "--epochs", "2", "--no-progress")
    message = expect_error(r, r"loss became nan .*checkpoint after epoch 1 is intact; lower the learning rate")
    advice = re.search(r"(npvae train mnist --out \S+ --resume --lr \S+ --clip-norm \S+)", " ".join(message.split()))
    assert advice, message
    monkeypatch.setattr(SeparationObjective, "terms", real)
    again = cli(*advice.group(1).split()[1:], "--epochs", "2", "--no-progress")
    assert again.code == 0, again.err
    config = json.loads((run / "config.json").read_text())
    assert config["epochs"] == 2 and config["clip_norm"] == 5.0 and config["lr"] < 1e-3


@pytest.mark.fault("engine", "a full disk while a checkpoint is written", "clear error")
def test_full_disk_while_training(cli, mnist_run, tmp_path, monkeypatch):
    run = finished_copy(mnist_run, tmp_path / "run")
    before = digest(run / "checkpoint.npz")
    import npvae.engine.loop

    def no_space(path, arrays, meta):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(npvae.engine.loop, "save_checkpoint", no_space)
    r = cli("train", "mnist", "--out", run, "--resume", "--epochs", "2", "--no-progress")
    expect_error(r, r"No space left on device.*after epoch 1, is intact.*--resume")
    assert r.code == 1
    must_survive(run / "checkpoint.npz", before)


@pytest.mark.fault("engine", "npvae train music writes config.json and metrics.json as every task does",
                   "correct result")
def test_music_run_has_every_record(music_run):
    for name in ("config.json", "metrics.json", "history.json", "model.h5", "results.h5", "loss_curves.png"):
        assert (music_run / name).is_file(), name
    config = json.loads((music_run / "config.json").read_text())
    assert config["pipeline"] == "music" and config["clip_norm"] == 5.0 and config["lr_schedule"] == "cosine"
    metrics = json.loads((music_run / "metrics.json").read_text())
    assert np.isfinite(metrics["final_val_total"])


@pytest.mark.fault("engine", "a 50-sample validation clip in the dataset", "clear error")
def test_a_too_short_validation_clip_is_named(cli, irmas, music_args, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(irmas, data)
    voi = sorted((data / "IRMAS-TrainingData" / "voi").glob("*.wav"))
    short = voi[-1]
    x, sr = sf.read(str(short), dtype="float32")
    sf.write(str(short), x[:50], sr)
    args = music_args(tmp_path / "run")
    args[args.index("--data-dir") + 1] = str(data)
    r = cli("train", "music", *args, "--eval-limit", "100")
    expect_error(r, r"too short .*\(50 samples\)")


@pytest.mark.fault("engine", "Ctrl-C while training: exit 130 and the command that resumes", "correct result")
def test_interrupt_names_the_resume_command(cli, mnist_run, mnist_args, tmp_path, monkeypatch):
    from npvae.tasks.mnist.objective import SeparationObjective

    def interrupt(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(SeparationObjective, "terms", interrupt)
    run = finished_copy(mnist_run, tmp_path / "run")
    r = cli("train", "mnist", "--out", run, "--resume", "--epochs", "2")
    assert r.code == 130 and "Traceback" not in r.err
    assert f"npvae train mnist --out {run} --resume" in r.err
    r = cli("train", "mnist", *mnist_args(tmp_path / "new"))       # before the first checkpoint
    assert r.code == 130 and "Traceback" not in r.err and "--overwrite" in r.err

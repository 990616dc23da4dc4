"""Fault cases of ``npvae train mnist``: bad settings, run folders that hold another run,
``--resume`` with changed settings, and where a run's files and data come from."""
import json
import re
import shutil
from pathlib import Path

import pytest
from _faults import expect_error, must_survive, resume_changed

E = re.escape      # the messages are plain text
BAD_FLAGS = [
    (["--epochs", "0"], E("--epochs must be >= 1")), (["--epochs", "-3"], E("--epochs must be >= 1")),
    (["--epochs", "1.5"], E("invalid int")), (["--batch-size", "0"], E("--batch-size must be >= 1")),
    (["--lr", "0"], E("--lr must be > 0")), (["--lr=-1e-3"], E("--lr must be > 0")),
    (["--lr", "nan"], E("--lr must be a finite number")), (["--lr", "inf"], E("--lr must be a finite number")),
    (["--beta", "-1"], E("--beta must be >= 0")), (["--kl-warmup", "-2"], E("--kl-warmup must be >= 0")),
    (["--mix-weight", "-1"], E("--mix-weight must be >= 0")),
    (["--latent-dim", "0"], E("--latent-dim must be >= 1")), (["--hidden", "0"], E("--hidden must be >= 1")),
    (["--hidden", "abc"], "invalid ints|expected whole numbers"), (["--channels", "0,4"], E("--channels must be >= 1")),
    (["--model", "resnet"], E("invalid choice")), (["--rule", "max"], E("invalid choice")),
    (["--loss", "hinge"], E("invalid choice")), (["--display-every", "0"], E("--display-every must be >= 1")),
    (["--train-limit", "0"], E("--train-limit must be >= 1")),
    (["--eval-limit", "0"], E("--eval-limit must be >= 1")), (["--seed", "-1"], E("--seed must be >= 0")),
]


@pytest.fixture
def train(cli):
    """``train(*argv)`` runs ``npvae train mnist ARGV``."""
    return lambda *args: cli("train", "mnist", *args)


@pytest.mark.fault("train_mnist", "{flags}", "clear error")
@pytest.mark.parametrize("flags, message", BAD_FLAGS, ids=[" ".join(b[0]) for b in BAD_FLAGS])
def test_bad_flags(train, mnist_args, tmp_path, flags, message):
    expect_error(train(*mnist_args(tmp_path / "run"), *flags), message)


@pytest.mark.fault("train_mnist", "--data-dir typo", "clear error")
def test_data_dir_typo(train, mnist_args, tmp_path):
    expect_error(train(*mnist_args(tmp_path / "run"), "--data-dir", tmp_path / "dta"), "does not exist")


@pytest.mark.fault("train_mnist", "--out is a file", "clear error")
def test_out_is_a_file(train, mnist_args, tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    expect_error(train(*mnist_args(f)), "is a file")


@pytest.mark.fault("train_mnist", "--out holds another run (no --resume / --overwrite)", "clear error")
def test_out_holds_another_run(train, mnist_args, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.h5").write_bytes(b"precious")
    r = train(*mnist_args(tmp_path))
    must_survive(tmp_path / "model.h5", b"precious")
    expect_error(r, "not empty.*--resume.*--overwrite")


@pytest.mark.fault("train_mnist", "--resume with --overwrite", "clear error")
def test_resume_and_overwrite(train, mnist_args, tmp_path):
    expect_error(train(*mnist_args(tmp_path), "--resume", "--overwrite"), "one of them")


@pytest.mark.fault("train_mnist", "--resume without --out", "clear error")
def test_resume_without_out(train):
    expect_error(train("--epochs", "1", "--resume"), "--resume needs --out")


RESUME_CHANGES = [
    ("--resume with a new --lr-schedule", ("--lr-schedule", "cosine"), "cannot resume.*lr_schedule: 'constant' -> 'cosine'"),
    ("--resume with a new --loss", ("--loss", "mse"), "cannot resume.*loss"),
    ("--resume with another architecture (--hidden)", ("--hidden", "32"), "cannot resume.*hidden"),
    ("--resume with a new --batch-size", ("--batch-size", "32"), "cannot resume.*batch_size"),
]


@pytest.mark.slow
@pytest.mark.fault("train_mnist", "{description}", "clear error")
@pytest.mark.parametrize("description, change, match", RESUME_CHANGES, ids=[c[0] for c in RESUME_CHANGES])
def test_resume_with_changed_settings(cli, mnist_run, mnist_args, shared_data, tmp_path, description, change,
                                      match):
    r = resume_changed(cli, "mnist", mnist_run, mnist_args, tmp_path, *change, data_dir=shared_data)
    expect_error(r, match)


@pytest.mark.slow
@pytest.mark.fault("train_mnist", "--resume with more --epochs continues the run", "correct result")
def test_resume_with_more_epochs(train, mnist_run, mnist_args, shared_data, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(mnist_run, d)
    r = train(*mnist_args(d, 2, data_dir=shared_data), "--resume")
    assert r.code == 0, r.err
    assert json.loads((d / "history.json").read_text())["epoch"] == [1, 2]


@pytest.mark.slow
@pytest.mark.fault("train_mnist", "--overwrite replaces the old run's files", "correct result")
def test_overwrite_replaces_old_files(train, mnist_run, mnist_args, shared_data, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(mnist_run, d)
    (d / "figures").mkdir(exist_ok=True)
    (d / "figures" / "epoch_099.png").write_bytes(b"stale")
    (d / "notes.txt").write_text("mine")
    r = train(*mnist_args(d, 1, data_dir=shared_data), "--overwrite")
    assert r.code == 0, r.err
    assert not (d / "figures" / "epoch_099.png").exists(), "a stale figure of the old run survived"
    must_survive(d / "notes.txt", b"mine")


@pytest.mark.slow
@pytest.mark.fault("train_mnist", "two runs with the default --out get different folders", "correct result")
def test_default_out_folders_differ(train, mnist_args, shared_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [a for a in mnist_args("x", data_dir=shared_data) if a not in ("--out", "x")]
    for _ in range(2):
        r = train(*args)
        assert r.code == 0, r.err
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(runs) == 2, runs


@pytest.mark.slow
@pytest.mark.fault("train_mnist", "the data folder used is printed and recorded", "correct result")
def test_data_folder_recorded(mnist_run):
    cfg = json.loads((mnist_run / "config.json").read_text())
    folders = cfg.get("data_folder") or {}
    assert folders.get("mnist") and Path(folders["mnist"]).is_dir(), cfg.get("data_folder")

"""Fault cases of ``npvae train music``: bad settings, run folders, ``--resume`` with changed
settings, and a tiny run on a synthetic IRMAS folder."""
import re
import shutil
from pathlib import Path

import pytest
from _faults import expect_error, must_survive, resume_changed

from npvae.files import h5mat

E = re.escape      # the messages are plain text
BAD_FLAGS = [
    (["--epochs", "0"], E("--epochs must be >= 1")), (["--batch-size", "0"], E("--batch-size must be >= 1")),
    (["--frames", "0"], E("--frames must be >= 1")), (["--frames", "7"], E("multiple of 8")),
    (["--frames", "-8"], E("--frames must be >= 1")), (["--lr", "0"], E("--lr must be > 0")),
    (["--lr", "nan"], E("--lr must be a finite number")),
    (["--channels", "0", "4", "8"], E("--channels must be >= 1")),
    (["--latent-channels", "0"], E("--latent-channels must be >= 1")),
    (["--beta", "-0.1"], E("--beta must be >= 0")), (["--mix-weight", "-1"], E("--mix-weight must be >= 0")),
    (["--display-every", "0"], E("--display-every must be >= 1")), (["--seed", "-5"], E("--seed must be >= 0")),
    (["--loss", "hinge"], E("invalid choice")), (["--dataset", "musdb"], E("invalid choice")),
]


@pytest.fixture
def train(cli):
    """``train(*argv)`` runs ``npvae train music ARGV``."""
    return lambda *args: cli("train", "music", *args)


@pytest.mark.fault("train_music", "{flags}", "clear error")
@pytest.mark.parametrize("flags, message", BAD_FLAGS, ids=[" ".join(b[0]) for b in BAD_FLAGS])
def test_bad_flags(train, music_args, tmp_path, flags, message):
    expect_error(train(*music_args(tmp_path / "run"), *flags), message)


@pytest.mark.fault("train_music", "--data-dir typo", "clear error")
def test_data_dir_typo(train, music_args, tmp_path):
    expect_error(train(*music_args(tmp_path / "run"), "--data-dir", tmp_path / "typo"), "does not exist")


@pytest.mark.fault("train_music", "--dataset stems without --data-dir", "clear error")
def test_stems_without_data_dir(train, tmp_path):
    expect_error(train("--dataset", "stems", "--out", tmp_path / "r", "--epochs", "1", "--no-progress"),
                 "stems need")


@pytest.mark.fault("train_music", "--out holds another run", "clear error")
def test_out_holds_another_run(train, music_args, tmp_path):
    (tmp_path / "model.h5").write_bytes(b"precious")
    r = train(*music_args(tmp_path))
    must_survive(tmp_path / "model.h5", b"precious")
    expect_error(r, "not empty")


@pytest.mark.fault("train_music", "--out is a file", "clear error")
def test_out_is_a_file(train, music_args, tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    expect_error(train(*music_args(f)), "is a file")


@pytest.mark.fault("train_music", "--resume without --out", "clear error")
def test_resume_without_out(train, music_args):
    args = music_args("x")
    i = args.index("--out")
    expect_error(train(*(args[:i] + args[i + 2:]), "--resume"), "--resume needs --out")


RESUME_CHANGES = [
    ("--resume with a new --lr-schedule", ("--lr-schedule", "constant"), "cannot resume.*lr_schedule"),
    ("--resume with a new --loss", ("--loss", "mse"), "cannot resume.*loss"),
]


@pytest.mark.slow
@pytest.mark.fault("train_music", "{description}", "clear error")
@pytest.mark.parametrize("description, change, match", RESUME_CHANGES, ids=[c[0] for c in RESUME_CHANGES])
def test_resume_with_changed_settings(cli, music_run, music_args, tmp_path, description, change, match):
    expect_error(resume_changed(cli, "music", music_run, music_args, tmp_path, *change), match)


@pytest.mark.slow
@pytest.mark.fault("train_music", "a tiny run records its data folder and resumes", "correct result")
def test_tiny_run_resumes(train, music_run, music_args, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(music_run, d)
    r = train(*music_args(d, 2), "--resume")
    assert r.code == 0, r.err
    tree = h5mat.read_tree(d / "results.h5", expected_kind="music_results")
    assert list(tree["history"]["epoch"]) == [1, 2]
    assert Path(tree["config"]["data_folder"]).is_dir()
    assert "data:" in r.out

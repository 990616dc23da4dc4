"""Fault cases of a command told to write over what it reads: the output named as the
input itself, through its run folder, or through a link; refused even with --overwrite
(npvae.files.guard.Inputs, shared by evaluate, ship and separate)."""
import os
import shutil

import pytest
from _faults import expect_error, must_survive


def _run_copy(music_run, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(music_run, d)
    return d


def _evaluate(cli, irmas, model, results):
    return cli("evaluate", model, "--dataset", "irmas", "--data-dir", irmas, "--no-baselines",
               "--results", results, "--overwrite")


REPLACED = [("RUN/model.h5 --results RUN/model.h5", "model.h5", "model.h5"),
            ("RUN --results RUN/model.h5 (the file the run folder gives)", ".", "model.h5"),
            ("RUN/model.h5 --results a symbolic link to it", "model.h5", "link.h5")]


@pytest.mark.fault("evaluate", "npvae evaluate {case} --overwrite", "clear error")
@pytest.mark.parametrize("case, model, results", REPLACED, ids=[c[0] for c in REPLACED])
def test_evaluate_refuses_to_replace_its_model(cli, music_run, irmas, tmp_path, case, model, results):
    d = _run_copy(music_run, tmp_path)
    before = (d / "model.h5").read_bytes()
    if results == "link.h5":
        os.symlink(d / "model.h5", d / "link.h5")
    r = _evaluate(cli, irmas, d / model, d / results)
    must_survive(d / "model.h5", before)
    expect_error(r, r"--results .*model\.h5|link\.h5 would replace the input .*model\.h5")


@pytest.mark.fault("ship", "npvae ship RUN model --dest RUN --overwrite (NAME.h5 is the run's model)", "clear error")
def test_ship_refuses_to_replace_its_model(cli, music_run, tmp_path):
    d = _run_copy(music_run, tmp_path)
    before = (d / "model.h5").read_bytes()
    r = cli("ship", d, "model", "--command", "npvae train music", "--commit", "1a2b3c4", "--dest", d,
            "--overwrite")
    must_survive(d / "model.h5", before)
    expect_error(r, r"--dest .*model\.h5 would replace the input")

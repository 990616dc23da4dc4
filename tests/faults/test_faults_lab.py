"""Fault cases of the lab's commands: ``npvae report``, ``npvae study`` and ``npvae bench``
(outputs that exist or cannot be written, inputs that are not what they should be, bad
counts, missing data, no source checkout)."""
import os
import sys
import time
from pathlib import Path

import pytest
from _faults import digest, expect_error, must_survive, no_temporaries

import npvae.cli.lab as lab_command

# The quickest benchmark there is: a case a guard must stop before it starts.
QUICK_BENCH = ["bench", "--quick", "--no-torch", "--cases", "dense_vae", "--backends", "numpy"]


@pytest.fixture
def study_dir(new_dir):
    """A finished (synthetic) loss study: study.h5, table.md and the figure."""
    from npvae.lab.study_table import write_outputs
    row = {"digit_psnr": 14.0, "fashion_psnr": 12.5, "mean_psnr": 13.25, "mean_ssim": 0.6, "mean_mse": 0.005,
           "train_seconds": 4.0}
    study = {"task": "mnist", "budget": "tiny", "n_eval": 5,
             "rows": [{"name": "bce_beta1", "label": "BCE, beta 1", "group": "loss", **row},
                      {"name": "nmf", "label": "supervised NMF", "group": "baseline", **row}],
             "curves": {"bce_beta1": {"label": "BCE, beta 1", "epoch": [1, 2], "value": [10.0, 12.0]}}}
    folder = new_dir() / "study-mnist"
    folder.mkdir()
    write_outputs(folder, study)
    return folder


# ----------------------------------------------------------------------------- npvae report

@pytest.mark.fault("lab", "npvae report into a folder that already holds a report, without --overwrite",
                   "clear error")
def test_report_refuses_to_replace_a_report(cli, study_dir, new_dir):
    out = new_dir()
    (out / "report.md").write_text("my edited report\n")
    (out / "figures").mkdir()
    (out / "figures" / "mine.png").write_bytes(b"png")
    before = digest(out / "report.md")
    expect_error(cli("report", study_dir, "--out", out), r"already holds a report.*--overwrite")
    must_survive(out / "report.md", before)
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["mine.png"]


@pytest.mark.fault("lab", "npvae report --overwrite over an old report with other figures", "correct result")
def test_report_overwrite_replaces_the_report_and_its_figures(cli, study_dir, new_dir):
    out = new_dir()
    (out / "report.md").write_text("old\n")
    (out / "figures").mkdir()
    (out / "figures" / "stale.png").write_bytes(b"png")
    (out / "audio").mkdir()
    (out / "audio" / "stale_mixture.wav").write_bytes(b"wav")
    (out / "notes.txt").write_text("not the report's\n")
    r = cli("report", study_dir, "--out", out, "--overwrite")
    assert r.code == 0, r.err
    md = (out / "report.md").read_text()
    assert "Loss study, Part I" in md and not (out / "figures" / "stale.png").exists()
    assert (out / "figures" / f"{study_dir.name}_validation_curves.png").exists()
    assert (out / "notes.txt").read_text() == "not the report's\n"
    # a study has no audio: the old report's audio folder goes with it
    assert sorted(p.name for p in out.iterdir()) == ["figures", "notes.txt", "report.html", "report.md", "report.pdf"]
    no_temporaries(out)


@pytest.mark.fault("lab", "npvae report with absolute run paths", "correct result")
def test_report_names_paths_relative_to_where_it_was_made(cli, study_dir, new_dir, monkeypatch):
    out = new_dir()
    monkeypatch.chdir(out.parent)
    r = cli("report", study_dir.resolve(), "--out", out.resolve())
    assert r.code == 0, r.err
    md = (out / "report.md").read_text()
    rel = os.path.relpath(study_dir)
    assert f"from: {rel}." in md and f"`npvae report {rel} --out {out.name}`" in md
    assert str(out.parent) not in md and str(Path.home()) not in md


# ----------------------------------------------------------------------------- npvae bench

@pytest.mark.fault("lab", "npvae bench --json into a folder that does not exist", "clear error")
def test_bench_json_in_a_missing_folder(cli, new_dir):
    start = time.monotonic()
    expect_error(cli(*QUICK_BENCH, "--json", new_dir() / "nope" / "bench.json"), r"nope.*does not exist")
    assert time.monotonic() - start < 5, "refused only after the benchmark ran"


@pytest.mark.fault("lab", "npvae bench --json naming a folder", "clear error")
def test_bench_json_is_a_folder(cli, new_dir):
    expect_error(cli(*QUICK_BENCH, "--json", new_dir()), r"is a folder.*file name")


@pytest.mark.fault("lab", "npvae bench --json into a folder that cannot be written", "clear error")
def test_bench_json_in_an_unwritable_folder(cli, new_dir):
    if os.geteuid() == 0:           # root writes anywhere a file can be made: /proc takes none
        if not Path("/proc/self").is_dir():
            pytest.skip("running as root with no /proc: no folder is unwritable")
        folder = Path("/proc")
    else:
        folder = new_dir()
        folder.chmod(0o555)
    expect_error(cli(*QUICK_BENCH, "--json", folder / "bench.json"), r"cannot write into")


@pytest.mark.fault("lab", "npvae bench --json naming an earlier run's file, without --overwrite", "clear error")
def test_bench_json_refuses_to_replace_a_file(cli, new_dir):
    path = new_dir() / "bench.json"
    path.write_text('{"cases": []}\n')
    before = digest(path)
    expect_error(cli(*QUICK_BENCH, "--json", path), r"exists.*--overwrite")
    must_survive(path, before)


@pytest.mark.fault("lab", "npvae bench --summarise {what}", "clear error")
@pytest.mark.parametrize("what", ["of a file that does not exist", "of a folder", "of a file that is not JSON",
                                  "of JSON that is not a benchmark run"])
def test_bench_summarise_bad_inputs(cli, new_dir, what):
    folder = new_dir()
    path = {"of a file that does not exist": folder / "missing.json", "of a folder": folder,
            "of a file that is not JSON": folder / "notes.txt",
            "of JSON that is not a benchmark run": folder / "other.json"}[what]
    if what == "of a file that is not JSON":
        path.write_text("run 3: quick\n")
    if what == "of JSON that is not a benchmark run":
        path.write_text('{"hello": 1}\n')
    pattern = {"of a file that does not exist": "does not exist", "of a folder": "is a folder",
               "of a file that is not JSON": "not a JSON file",
               "of JSON that is not a benchmark run": "not a report of npvae bench"}[what]
    expect_error(cli("bench", "--summarise", path), pattern)


# ----------------------------------------------------------------------------- npvae study

@pytest.mark.fault("lab", "npvae study --jobs {jobs}", "clear error")
@pytest.mark.parametrize("jobs", ["0", "-3"])
def test_study_jobs_must_be_positive(cli, new_dir, jobs):
    out = new_dir() / "study"
    r = cli("study", "--task", "mnist", "--budget", "tiny", "--jobs", jobs, "--out", out)
    expect_error(r, r"--jobs.*at least 1")
    assert r.code == 2 and not out.exists()


@pytest.mark.fault("lab", "npvae study --data-dir of a folder that does not exist", "clear error")
def test_study_checks_the_data_first(cli, new_dir):
    out = new_dir() / "study"
    r = cli("study", "--task", "mnist", "--budget", "tiny", "--data-dir", out.parent / "nope", "--out", out)
    expect_error(r, r"nope.*does not exist")
    assert r.code == 1 and not out.exists(), "the study started without its data"


@pytest.mark.fault("lab", "npvae study --task music --data-dir of a folder without MIR-1K", "clear error")
def test_study_music_checks_the_data_first(cli, new_dir):
    data = new_dir()
    out = new_dir() / "study"
    r = cli("study", "--task", "music", "--budget", "tiny", "--data-dir", data, "--out", out)
    expect_error(r, r"MIR-1K not found")
    assert r.code == 1 and not out.exists()


@pytest.mark.fault("lab", "npvae study --out of a folder that holds other files, without --overwrite",
                   "clear error")
def test_study_refuses_a_folder_in_use(cli, new_dir, shared_data):
    out = new_dir()
    (out / "notes.txt").write_text("mine\n")
    before = digest(out / "notes.txt")
    expect_error(cli("study", "--task", "mnist", "--budget", "tiny", "--out", out, "--data-dir", shared_data),
                 r"not empty.*--resume.*--overwrite")
    must_survive(out / "notes.txt", before)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


@pytest.mark.fault("lab", "npvae study --resume in a folder that holds a study of the other task", "clear error")
def test_study_resume_refuses_another_study(cli, new_dir, shared_data):
    import json
    out = new_dir()
    (out / "l1_raw").mkdir()
    (out / "l1_raw" / "study_result.json").write_text(json.dumps({"task": "music", "budget": "tiny"}))
    expect_error(cli("study", "--task", "mnist", "--budget", "tiny", "--out", out, "--resume",
                     "--data-dir", shared_data), r"holds a music study")


@pytest.mark.fault("lab", "npvae study --only of a configuration that does not exist", "clear error")
def test_study_unknown_configuration(cli, new_dir):
    r = cli("study", "--task", "mnist", "--only", "bce_beta9", "--out", new_dir() / "s")
    expect_error(r, r"unknown configuration.*bce_beta9")
    assert r.code == 2


@pytest.mark.fault("lab", "npvae study --task {task} --ablate {preset} (a preset that does not exist or changes nothing)",
                   "clear error")
@pytest.mark.parametrize("task,preset", [("mnist", "bets"), ("music", "dense-best"), ("mnist", "default")])
def test_study_ablate_unknown_preset(cli, new_dir, task, preset):
    r = cli("study", "--task", task, "--ablate", preset, "--out", new_dir() / "s")
    expect_error(r, rf"--ablate takes a preset of {task} that changes settings: .*got '{preset}'")
    assert r.code == 2


@pytest.mark.fault("lab", "npvae study --ablate compact-vae --sweep {items} (a key, value or point no run takes)",
                   "clear error")
@pytest.mark.parametrize("items,message", [
    (["latent_dim=2,4", "betta=0.1"], r"'betta' is not a setting a mnist sweep can vary; the keys are .*beta"),
    (["epochs=3,6"], r"'epochs' is not a setting .*the study sets it for every configuration"),
    (["beta=0.1,x"], r"--beta takes a number, not 'x'"),
    (["latent_dim=-4"], r"--sweep point latent_dim=-4 of --preset compact-vae: --latent-dim"),
    (["channels=32,64"], r"in --sweep a list's numbers are joined by ':', channels=32:64"),
    (["beta"], r"--sweep takes KEY=V1,V2,\.\.\."),
])
def test_study_sweep_refuses_a_bad_grid(cli, new_dir, items, message):
    out = new_dir() / "s"
    r = cli("study", "--task", "mnist", "--ablate", "compact-vae", "--sweep", *items, "--out", out)
    expect_error(r, message)
    assert r.code == 2 and not out.exists()


@pytest.mark.fault("lab", "npvae study --sweep without --ablate PRESET", "clear error")
def test_study_sweep_needs_a_preset(cli, new_dir):
    r = cli("study", "--task", "mnist", "--sweep", "beta=0.1,1", "--out", new_dir() / "s")
    expect_error(r, r"--sweep varies the settings of a preset: name it with --ablate PRESET")
    assert r.code == 2


@pytest.mark.fault("lab", "npvae study --ablate --resume in a folder that holds the loss study", "clear error")
def test_ablation_does_not_resume_a_loss_study(cli, new_dir, shared_data):
    import json
    from npvae.lab.studies import RESULT_FILE
    out = new_dir() / "s"
    (out / "bce_beta1").mkdir(parents=True)
    (out / "bce_beta1" / RESULT_FILE).write_text(json.dumps({"task": "mnist", "budget": "tiny", "study": "loss"}))
    r = cli("study", "--task", "mnist", "--ablate", "best", "--budget", "tiny", "--resume", "--out", out,
            "--data-dir", shared_data)
    expect_error(r, r"holds a mnist study \(loss\).*same task and budget and kind")


# ----------------------------------------------------------------------------- no source checkout

def _installed_without_source(new_dir, monkeypatch):
    """As where npvae is installed and no checkout is near: no scripts/npvae_lab anywhere."""
    installed = new_dir() / "site-packages"
    monkeypatch.chdir(new_dir())
    monkeypatch.setattr(lab_command, "__file__", str(installed / "npvae" / "cli" / "lab.py"))
    monkeypatch.setattr(sys, "path", [p for p in sys.path if not (Path(p or ".") / "npvae_lab").is_dir()])


@pytest.mark.fault("lab", "npvae bench where npvae is installed without its source", "clear error")
def test_bench_needs_a_checkout(cli, new_dir, monkeypatch):
    _installed_without_source(new_dir, monkeypatch)
    (Path.cwd() / "a.json").write_text('{"cases": []}')
    expect_error(cli("bench", "--summarise", "a.json"),
                 r"npvae bench needs a source checkout of npvae.*git clone.*library itself is installed")


@pytest.mark.fault("lab", "npvae study where npvae is installed without its source", "correct result")
def test_study_and_report_need_no_checkout(cli, new_dir, monkeypatch):
    """The studies and the report are installed with the library (npvae.lab)."""
    _installed_without_source(new_dir, monkeypatch)
    r = cli("study", "--task", "mnist", "--list")
    assert r.code == 0 and "checkout" not in r.err, r.err
    assert "bce_beta1" in r.out

"""The sweep of a preset (``npvae study --ablate PRESET --sweep KEY=V1,V2 ...``): its grid
of configurations, the usage errors of a bad key, value or point, its table and verdict,
and a two-point sweep end to end on the tiny budget (equal time, resumed, reported)."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from npvae.engine.run import make_config
from npvae.lab import studies
from npvae.lab.study_table import markdown_table, read_study, sweep_steps, verdict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDY = [sys.executable, "-m", "npvae", "study"]


def _env(shared_data):
    return {**os.environ, "NPVAE_DATA": str(shared_data), "MPLBACKEND": "Agg"}


# ----------------------------------------------------------------------------- the grid

def test_a_sweep_is_the_preset_at_every_point_of_the_grid():
    confs = studies.configurations("mnist", "compact-vae", ["latent_dim=2,4,8", "beta=0.003,0.1"])
    assert [c.name for c in confs] == ["latent_dim=2,beta=0.003", "latent_dim=2,beta=0.1", "latent_dim=4,beta=0.003",
                                       "latent_dim=4,beta=0.1", "latent_dim=8,beta=0.003", "latent_dim=8,beta=0.1"]
    recipe = studies.ablation_configurations("mnist", "compact-vae")[0].settings     # the preset but its epochs
    for c in confs:
        assert c.group == "sweep" and c.kind == "vae" and "epochs" not in c.settings     # the budget's epochs
        point = dict(part.split("=") for part in c.name.split(","))
        assert c.settings == {**recipe, "latent_dim": int(point["latent_dim"]), "beta": float(point["beta"])}
        assert c.label == f"--latent-dim {point['latent_dim']} --beta {point['beta']}"
    # the point that is the preset itself says so
    marked = [c.name for c in studies.configurations("mnist", "compact-vae", ["latent_dim=4,8", "beta=0.01"])
              if c.label.endswith("(--preset compact-vae as it is)")]
    assert marked == ["latent_dim=4,beta=0.01"]


@pytest.mark.parametrize("task", ["mnist", "music"])
def test_a_swept_value_is_what_its_train_flag_gives(task):
    """parse_setting reads every setting a sweep can vary as ``npvae train TASK --flag``
    reads it (a list's numbers joined by ':' where the flag takes spaces or commas)."""
    import argparse
    import typing

    from npvae.engine.config import add_config_flags, given_settings, parse_setting
    cls = studies._task_class(task)
    parser = argparse.ArgumentParser()
    add_config_flags(parser, cls.Config, choices=cls.choices)
    hints = typing.get_type_hints(cls.Config)
    for key in studies.sweep_keys(task):
        flag, hint = "--" + key.replace("_", "-"), str(hints[key])
        allowed = cls.choices.get(key)
        if "bool" in hint:
            cases = [("false", [f"--no-{flag[2:]}"]), ("true", [flag])]
        elif "tuple" in hint:
            cases = [("4:8:16", [flag, "4", "8", "16"]), ("5", [flag, "5"])]
        elif allowed:
            cases = [(allowed[-1], [flag, allowed[-1]])]
        else:
            cases = [("3", [flag, "3"])]
        for text, argv in cases:
            want = given_settings(parser.parse_args(argv), cls.Config)[key]
            got = parse_setting(cls.Config, key, text, cls.choices, parts=":")
            assert got == want and type(got) is type(want), (key, text, got, want)


def test_a_sweep_takes_lists_switches_and_the_flags_spelling():
    confs = studies.configurations("mnist", "compact-vae", ["channels=32:64,24:48:96", "latent-dim=4", "sample=false"])
    assert [c.name for c in confs] == ["channels=32-64,latent_dim=4,sample=false",
                                       "channels=24-48-96,latent_dim=4,sample=false"]
    assert confs[1].settings["channels"] == (24, 48, 96) and confs[1].settings["sample"] is False
    assert confs[1].label == "--channels 24 48 96 --latent-dim 4 --no-sample"
    # a value is parsed, so 0.10 and 0.1 are one point
    with pytest.raises(ValueError, match="beta=0.1 twice"):
        studies.parse_sweep("mnist", ["beta=0.1,0.10"])


@pytest.mark.parametrize("items,message", [
    (["latentdim=4"], "'latentdim' is not a setting a mnist sweep can vary; the keys are batch_size, lr,"),
    (["epochs=2,3"], "the study sets it for every configuration"),
    (["latent_dim=4.5"], "--latent-dim takes a whole number, not '4.5'"),
    (["beta=a"], "--beta takes a number, not 'a'"),
    (["norm=layer"], "--norm takes one of none, batch, group, not 'layer'"),
    (["sample=maybe"], "--sample is a switch: true or false"),
    (["channels=32:6x"], "--channels takes whole numbers such as 16:32:64, not '32:6x'"),
    (["channels=32,64"], "got 1: 32 (in --sweep a list's numbers are joined by ':', channels=32:64)"),
    (["latent_dim"], "--sweep takes KEY=V1,V2,..."),
    (["beta=0.1", "beta=0.2"], "names beta twice"),
    (["latent_dim=0"], "--sweep point latent_dim=0 of --preset compact-vae: --latent-dim"),
    (["channels=8:16:32:64"], "--sweep point channels=8:16:32:64 of --preset compact-vae: --channels takes"),
])
def test_a_bad_sweep_is_refused_naming_the_problem(items, message):
    with pytest.raises(ValueError) as err:
        studies.configurations("mnist", "compact-vae", items)
    assert message in str(err.value), str(err.value)


def test_a_bad_sweep_is_a_usage_error_before_any_work(tmp_path):
    r = subprocess.run([*STUDY, "--task", "mnist", "--ablate", "compact-vae", "--sweep", "latent_dim=2,4", "lr=fast",
                        "--out", str(tmp_path / "s")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--lr takes a number, not 'fast'" in r.stderr, r.stderr
    assert not (tmp_path / "s").exists()
    r = subprocess.run([*STUDY, "--task", "mnist", "--sweep", "beta=0.1", "--list"], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "name it with --ablate PRESET" in r.stderr, r.stderr
    r = subprocess.run([*STUDY, "--task", "mnist", "--ablate", "compact-vae", "--sweep", "latent_dim=2,4",
                        "beta=0.01,0.1", "--list"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "mnist sweep compact-vae study" in r.stdout, r.stderr
    assert re.search(r"latent_dim=4,beta=0.01 +sweep +--latent-dim 4 --beta 0.01 \(--preset compact-vae as it is\)",
                     r.stdout), r.stdout


def test_the_compact_vae_latent_is_no_larger_than_the_mixture():
    from npvae.models.mnist import build_model
    cfg = make_config("mnist", preset="compact-vae")
    model = build_model(cfg.model, rng=np.random.default_rng(0), **cfg.model_kwargs())
    model.forward(np.zeros((2, 28, 28), np.float32), sample=False)
    assert model.mu.shape == (2, 4, 14, 14) and model.mu[0].size == 784


def test_overwrite_clears_the_points_of_an_earlier_grid_and_nothing_else(tmp_path):
    for name in ("latent_dim=2,beta=0.1", "latent_dim=16,beta=0.1", "mine=1", "notes"):
        (tmp_path / name).mkdir()
    for name in ("latent_dim=2,beta=0.1", "latent_dim=16,beta=0.1"):
        (tmp_path / name / "log.txt").write_text("$ ...")
    (tmp_path / "table.md").write_text("old")
    removed = studies.clear_study_dir(tmp_path, "mnist", "compact-vae", ["latent_dim=2,4", "beta=0.1"])
    assert sorted(p.name for p in removed) == ["latent_dim=16,beta=0.1", "latent_dim=2,beta=0.1", "table.md"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine=1", "notes"]     # not a study's folders


# ----------------------------------------------------------------------------- table and verdict

def _row(name, mean, prior, kl, size, group="sweep"):
    label = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in (p.split("=") for p in name.split(",")))
    return {"name": name, "label": label, "group": group, "digit_psnr": mean, "fashion_psnr": mean,
            "mean_psnr": mean, "mean_ssim": 0.5, "mean_mse": 0.01, "train_seconds": 3.0,
            "prior_mean_mean_psnr": prior, "kl_nats": kl, "latent_size": float(size)}


def test_sweep_table_and_verdict_say_how_each_key_moves_the_score():
    study = {"task": "mnist", "budget": "x", "study": "sweep compact-vae", "n_eval": 5, "curves": {}, "rows": [
        _row("latent_dim=2,beta=0.01", 18.0, 9.0, 300.0, 392), _row("latent_dim=2,beta=0.1", 17.0, 9.5, 100.0, 392),
        _row("latent_dim=4,beta=0.01", 19.5, 9.0, 500.0, 784), _row("latent_dim=4,beta=0.1", 18.0, 9.5, 150.0, 784)]}
    table = markdown_table(study)
    assert "latent (numbers)" in table.splitlines()[0] and "against the recipe" not in table
    assert "| --latent-dim 4 --beta 0.01 | sweep | 19.50 |" in table and "| 500.0 | 784 |" in table
    assert table.index("--latent-dim 2 --beta 0.01") < table.index("--latent-dim 4 --beta 0.1")   # the grid's order
    steps = sweep_steps(study)
    assert steps["latent_dim"] == [("2", "4", [1.5, 1.0])] and steps["beta"] == [("0.01", "0.1", [-1.0, -1.5])]
    text = verdict(study)
    assert ("the best point of the grid is **--latent-dim 4 --beta 0.01 (19.50 dB; 784 latent numbers; 10.50 dB lost "
            "at the prior mean; KL 500 nats)**") in text
    assert "the worst --latent-dim 2 --beta 0.1 (17.00 dB" in text
    assert "--latent-dim 2 to 4: +1.25 dB (mean of 2 pairs, +1.00 to +1.50)" in text
    assert "--beta 0.01 to 0.1: -1.25 dB (mean of 2 pairs, -1.50 to -1.00)" in text
    assert "every point that trained loses 7.50 to 10.50 dB" in text
    # a point that failed to train is named, and no step is measured against it
    study["rows"][3] = _row("latent_dim=4,beta=0.1", 5.0, 5.0, 1.0, 784)
    text = verdict(study)
    assert verdict({**study, "rows": [study["rows"][3]]}) == ("Every point of the sweep failed to train (below 10 dB): "
                                                             "--latent-dim 4 --beta 0.1 (5.00 dB).")
    assert "These points failed to train (below 10 dB): --latent-dim 4 --beta 0.1 (5.00 dB)." in text
    assert "--latent-dim 2 to 4: +1.50 dB (mean of 1 pair)" in text


# ----------------------------------------------------------------------------- end to end

def test_tiny_sweep_end_to_end(shared_data, tmp_path):
    out = tmp_path / "sweep"
    # small channels: the quickest to train; the grid machinery is the same for every size
    cmd = [*STUDY, "--task", "mnist", "--ablate", "compact-vae", "--sweep", "latent_dim=1,2", "channels=4:8",
           "--budget", "tiny", "--minutes", "0.02", "--out", str(out), "--jobs", "2"]
    r = subprocess.run(cmd, cwd=REPO, env=_env(shared_data), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    names = ["latent_dim=1,channels=4-8", "latent_dim=2,channels=4-8"]
    study = read_study(out)
    assert study["study"] == "sweep compact-vae" and [row["name"] for row in study["rows"]] == names
    rows = {row["name"]: row for row in study["rows"]}
    for name, latent in zip(names, (1, 2)):
        config = json.loads((out / name / "config.json").read_text())
        assert config["latent_dim"] == latent and config["channels"] == [4, 8] and config["beta"] == 0.01
        timed = json.loads((out / name / studies.TIMED_FILE).read_text())      # equal time: epochs from a timing
        assert rows[name]["epochs"] == timed["epochs"] >= 1
        assert rows[name]["latent_size"] == latent * 14 * 14                  # a 14x14 map of L channels
        assert all(np.isfinite(rows[name][k]) for k in ("mean_psnr", "prior_mean_mean_psnr", "kl_nats"))
    table = (out / "table.md").read_text()
    assert table.startswith("# mnist: the compact-vae preset's sweep (tiny budget)")
    assert "| --latent-dim 1 --channels 4 8 | sweep |" in table and "| 196 |" in table and "| 392 |" in table
    # the verdict: a step between the two points, or (a few seconds of training may not reach
    # the floor of a working model) the points that failed to train
    if all(row["mean_psnr"] >= 10 for row in rows.values()):
        step = rows[names[1]]["mean_psnr"] - rows[names[0]]["mean_psnr"]
        assert f"--latent-dim 1 to 2: {step:+.2f} dB (mean of 1 pair)" in table
    else:
        assert "failed to train (below 10 dB): " in table and all(
            f"{row['label']} ({row['mean_psnr']:.2f} dB)" in table for row in rows.values() if row["mean_psnr"] < 10)
    # resumed: nothing trained again, the table rewritten from the same results
    again = subprocess.run(cmd + ["--resume"], cwd=REPO, env=_env(shared_data), capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0 and "0 of 2 configurations to run" in again.stdout, again.stdout + again.stderr
    assert (out / "table.md").read_text() == table
    # an ablation of the same preset may not resume into the sweep's folder
    other = subprocess.run(cmd[:cmd.index("--sweep")] + cmd[cmd.index("--budget"):] + ["--resume"], cwd=REPO,
                           env=_env(shared_data), capture_output=True, text=True, timeout=600)
    assert other.returncode == 1 and "holds a mnist study (sweep compact-vae)" in other.stderr, other.stderr
    # and the report gives it a section of its own, numbers from the file
    report = tmp_path / "report"
    r = subprocess.run([sys.executable, "-m", "npvae", "report", str(out), "--out", str(report)], cwd=REPO,
                       env=_env(shared_data), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    md = (report / "report.md").read_text()
    assert "## Sweep of --preset compact-vae, Part I (images)" in md and "## Baselines" not in md
    assert f"{rows[names[0]]['mean_psnr']:.2f}" in md

"""The settings of a training run: each task's config and its flags in ``npvae train TASK``,
the shared flags, presets, and the learning-rate schedule. Nothing here trains: the
engine's ``train`` is replaced by a stand-in that records what the command asked for."""
import argparse
import dataclasses
import typing

import pytest

import npvae
from npvae import cli
from npvae.engine import run as engine_run
from npvae.engine.config import RunConfig, add_config_flags, field_names, from_record, given_settings
from npvae.engine.run import make_config
from npvae.tasks.mnist import MnistConfig
from npvae.tasks.music import LossConfig, MusicConfig
from npvae.schedules import lr_at, schedule_lr
from npvae.tasks import TASKS

# The flags every task has, each with one value to give and the setting it makes.
SHARED = {"--epochs": ("3", "epochs", 3), "--batch-size": ("16", "batch_size", 16),
          "--lr": ("0.002", "lr", 0.002), "--lr-schedule": ("cosine", "lr_schedule", "cosine"),
          "--clip-norm": ("2.5", "clip_norm", 2.5), "--weight-decay": ("0.01", "weight_decay", 0.01),
          "--ema-decay": ("0.999", "ema_decay", 0.999),
          "--beta": ("0.25", "beta", 0.25),
          "--kl-warmup": ("1.5", "kl_warmup", 1.5), "--seed": ("7", "seed", 7),
          "--display-every": ("2", "display_every", 2), "--data-dir": ("some/data", "data_dir", "some/data"),
          "--out": ("runs/x", "out", "runs/x"), "--train-limit": ("100", "train_limit", 100),
          "--eval-limit": ("10", "eval_limit", 10), "--no-progress": (None, "progress", False),
          "--tensorboard": (None, "tensorboard", True), "--no-html": (None, "html", False)}


def subparser(parser, name):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise KeyError(name)


def task_parser(name):
    """The parser of ``npvae train NAME``, as the ``npvae`` command builds it."""
    return subparser(subparser(cli.parser(), "train"), name)


def options(parser) -> dict:
    """Every option string of ``parser``: its action."""
    return {flag: action for action in parser._actions for flag in action.option_strings}


@pytest.fixture
def command(monkeypatch):
    """``command(*argv)`` runs ``npvae train ARGV`` with the engine replaced by a recorder;
    returns what the engine was asked (task, settings, preset, resume, overwrite) and the
    config it would train with."""
    def fake_train(task, settings=None, *, preset="default", resume=False, overwrite=False, log=print,
                   started=None):
        seen.update(task=task, settings=settings, preset=preset, resume=resume, overwrite=overwrite)
        return engine_run.RunResult(None, None, {}, None, None, None)

    seen = {}
    monkeypatch.setattr(engine_run, "train", fake_train)

    def run(*argv):
        seen.clear()
        assert cli.main(["train", *argv]) == 0
        if not seen["resume"]:
            seen["config"] = make_config(seen["task"], seen["settings"], seen["preset"])
        return dict(seen)
    return run


@pytest.fixture
def refused(monkeypatch, capsys):
    """``refused(*argv)`` runs ``npvae train ARGV`` (the engine must not start) and returns
    ``(exit status, stderr)``."""
    def no_train(*args, **kwargs):
        raise AssertionError("training started despite a bad setting")

    monkeypatch.setattr(engine_run, "train", no_train)

    def run(*argv):
        capsys.readouterr()
        try:
            code = cli.main(["train", *argv])
        except SystemExit as exc:        # argparse's own refusals (bad types, choices)
            code = exc.code
        return code, capsys.readouterr().err
    return run


# ----------------------------------------------------------------------------- every field a flag

@pytest.mark.parametrize("name", list(TASKS))
def test_every_setting_of_each_task_has_a_flag(name, capsys):
    task = TASKS[name]
    flags = options(task_parser(name))
    for field in field_names(task.Config):
        flag = "--" + field.replace("_", "-")
        assert flag in flags, f"npvae train {name} has no {flag}"
        assert flags[flag].dest == field, flag
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", name, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for field in field_names(task.Config):
        assert "--" + field.replace("_", "-") in text, field
    for flag in ("--preset", "--resume", "--overwrite"):
        assert flag in flags and flag in text, flag


@pytest.mark.parametrize("name", list(TASKS))
def test_each_flag_shows_the_config_default(name):
    """A flag not given leaves the setting to the config, and its help says that default."""
    task = TASKS[name]
    hints = typing.get_type_hints(task.Config)
    flags = options(task_parser(name))
    for field in dataclasses.fields(task.Config):
        default = field.default
        if default is None or hints[field.name] is bool:
            continue
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else str(default)
        text = flags["--" + field.name.replace("_", "-")].help
        assert f"default: {shown}" in text, (field.name, text)


@pytest.mark.parametrize("name", list(TASKS))
def test_no_flags_give_the_task_config_defaults(name, command):
    seen = command(name)
    assert seen["settings"] == {} and seen["preset"] == "default" and not seen["resume"] and not seen["overwrite"]
    assert seen["config"] == TASKS[name].Config()


def test_music_flags_reach_the_objective_and_the_augmentation(command):
    assert set(field_names(MusicConfig)) >= {"sample", "remix_prob", "gain_db", "loss", "loss_compression",
                                             "loss_power", "mix_weight", "beta", "kl_warmup", "train_limit"}
    cfg = command("music", "--no-sample", "--remix-prob", "0.2", "--gain-db", "1.5", "--loss", "mse",
                  "--loss-compression", "power", "--loss-power", "0.3", "--channels", "4", "4", "8",
                  "--voice-pitch", "2", "--no-progress")["config"]
    assert cfg.loss_config() == LossConfig(loss="mse", compression="power", power=0.3, sample=False)
    assert (cfg.remix_prob, cfg.gain_db, cfg.voice_pitch, cfg.channels, cfg.progress) == (0.2, 1.5, 2.0, (4, 4, 8),
                                                                                           False)
    assert command("music", "--channels", "8,16,32")["config"].channels == (8, 16, 32)


def test_mnist_flags_reach_the_config(command):
    cfg = command("mnist", "--no-sample", "--n-examples", "4", "--hidden", "64,32", "--show")["config"]
    assert (cfg.sample, cfg.n_examples, cfg.hidden, cfg.show) == (False, 4, (64, 32), True)


def test_blind_flags_reach_the_config(command):
    seen = command("blind-mnist", "--groups", "3", "--hidden", "64,32", "--rule", "sum", "--beta", "0.1",
                   "--train-limit", "100", "--no-progress", "--out", "x")
    cfg = seen["config"]
    assert (cfg.groups, cfg.hidden, cfg.rule, cfg.beta, cfg.train_limit, cfg.progress, cfg.out) == \
        (3, (64, 32), "sum", 0.1, 100, False, "x")
    cfg = command("blind-music", "--frames", "16", "--hidden", "8,4", "--train-limit", "3", "--no-progress",
                  "--beta", "2")["config"]
    assert (cfg.frames, cfg.hidden, cfg.train_limit, cfg.progress, cfg.beta) == (16, (8, 4), 3, False, 2.0)


def test_the_flag_generator_alone():
    """add_config_flags / given_settings on a plain parser: every field a flag, only the
    flags given come back (tuple flags joined), the config validates them."""
    from npvae.tasks.blind_music.task import BlindMusicConfig
    p = argparse.ArgumentParser()
    add_config_flags(p, BlindMusicConfig)
    assert set(field_names(BlindMusicConfig)) <= {a.dest for a in p._actions}
    got = given_settings(p.parse_args(["--frames", "16", "--hidden", "8,4", "2", "--train-limit", "3",
                                       "--no-progress", "--beta", "2"]), BlindMusicConfig)
    assert got == {"frames": 16, "hidden": (8, 4, 2), "train_limit": 3, "progress": False, "beta": 2.0}
    assert given_settings(p.parse_args([]), BlindMusicConfig) == {}
    with pytest.raises(ValueError, match="--groups must be at least 2"):
        BlindMusicConfig(**given_settings(p.parse_args(["--groups", "1"]), BlindMusicConfig))


# ----------------------------------------------------------------------------- the shared flags

@pytest.mark.parametrize("name", list(TASKS))
def test_the_shared_flags_mean_the_same_in_every_task(name, command):
    shared = set(field_names(RunConfig))
    assert {setting for _, setting, _ in SHARED.values()} == shared
    assert shared <= set(field_names(TASKS[name].Config))
    flags = options(task_parser(name))
    argv = []
    for flag, (value, setting, _) in SHARED.items():
        assert flag in flags and flags[flag].dest == setting, flag
        argv += [flag] if value is None else [flag, value]
    assert "--progress" in flags and flags["--progress"] is flags["--no-progress"]
    seen = command(name, *argv)
    for flag, (_, setting, want) in SHARED.items():
        assert seen["settings"][setting] == want, flag
        assert getattr(seen["config"], setting) == want, flag


# ----------------------------------------------------------------------------- tuple flags

TUPLE_FLAGS = [("mnist", "--hidden", (), "hidden", (16, 32)),
               ("mnist", "--channels", ("--model", "unet"), "channels", (8, 16, 32)),
               ("music", "--channels", (), "channels", (8, 16, 32)),
               ("blind-mnist", "--hidden", (), "hidden", (512, 256)),
               ("blind-music", "--hidden", (), "hidden", (512, 256))]


def test_the_tuple_flag_cases_cover_every_tuple_setting():
    def is_tuple(hint):
        return hint is tuple or tuple in typing.get_args(hint)
    every = {(name, field) for name, task in TASKS.items()
             for field, hint in typing.get_type_hints(task.Config).items() if is_tuple(hint)}
    assert every == {(name, field) for name, _, _, field, _ in TUPLE_FLAGS}


@pytest.mark.parametrize("name,flag,extra,field,numbers", TUPLE_FLAGS)
def test_tuple_flags_take_spaces_or_commas_in_every_task(name, flag, extra, field, numbers, command):
    spaced = [str(n) for n in numbers]
    forms = [spaced, [",".join(spaced)], [",".join(spaced[:-1]), spaced[-1]]]
    for form in forms:
        seen = command(name, *extra, flag, *form, "--seed", "3")   # a flag after the numbers ends the list
        assert seen["settings"][field] == numbers, form
        assert getattr(seen["config"], field) == numbers and seen["config"].seed == 3, form


# ----------------------------------------------------------------------------- bad values

@pytest.mark.parametrize("args,message", [
    (["music", "--frames", "12"], "--frames must be a multiple of 8"),
    (["music", "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    (["music", "--epochs", "0"], "--epochs must be >= 1, got 0"),
    (["music", "--remix-prob", "2"], "--remix-prob is a probability"),
    (["music", "--voice-pitch", "13"], "--voice-pitch is a pitch change in semitones, at most 12"),
    (["music", "--voice-pitch", "-1"], "--voice-pitch must be >= 0"),
    (["music", "--channels", "4"], "--channels takes one number per encoder level, at least 2"),
    (["music", "--remix", "swap"], "argument --remix: invalid choice"),
    (["mnist", "--epochs", "0"], "--epochs must be >= 1, got 0"),
    (["mnist", "--latent-dim", "-1"], "--latent-dim must be >= 1, got -1"),
    (["mnist", "--display-every", "0"], "--display-every must be >= 1, got 0"),
    (["mnist", "--blocks", "2"], "--blocks (3x3 convolutions per level) is a setting of the unet and vae"),
    (["mnist", "--model", "unet", "--channels", "8", "8", "8", "8", "8", "8"], "--channels takes 2 to 5 numbers"),
    (["mnist", "--norm", "batch"], "--norm is an option of the unet and vae models"),
    (["mnist", "--model", "vae", "--down", "max"], "--down is an option of the unet model; the vae model has none"),
    (["mnist", "--model", "unet", "--dropout", "1"], "--dropout is the probability"),
    (["mnist", "--model", "unet", "--residual"], "--residual adds each level's first convolution"),
    (["music", "--rnn-layers", "1", "--rnn-hidden", "7"], "--rnn-hidden is split between the two directions"),
    (["mnist", "--model", "mlp"], "argument --model: invalid choice"),
    (["mnist", "--epochs", "abc"], "argument --epochs: invalid int value"),
    (["mnist", "--hidden", "64", "x"], "argument --hidden: expected whole numbers"),
    (["mnist", "--lr-schedule", "linear"], "argument --lr-schedule: invalid choice"),
    (["mnist", "--preset", "best", "--out", "x", "--resume"], "--preset starts a new run"),
    (["blind-mnist", "--epochs", "0"], "--epochs must be >= 1, got 0"),
    (["blind-mnist", "--latent-dim", "-1"], "--latent-dim must be >= 1, got -1"),
    (["blind-mnist", "--beta", "-0.5"], "--beta must be >= 0"),
    (["blind-mnist", "--lr", "0"], "--lr must be > 0"),
    (["blind-mnist", "--train-limit", "0"], "--train-limit must be >= 1, got 0"),
    (["blind-mnist", "--groups", "0"], "--groups must be >= 1, got 0"),
    (["blind-mnist", "--groups", "9"], "--groups must be between 2 and 8"),
    (["blind-mnist", "--out", "x", "--resume", "--overwrite"], "--resume continues a run and --overwrite"),
    (["blind-mnist", "--resume"], "--resume needs --out"),
    (["blind-music", "--groups", "1"], "--groups must be at least 2"),
    (["blind-music", "--frames", "0"], "--frames must be >= 1, got 0"),
    (["blind-music", "--seed", "-1"], "--seed must be >= 0"),
    (["blind-music", "--hidden", "512", "0"], "--hidden must be >= 1, got 0"),
    (["blind-music", "--resume"], "--resume needs --out"),
    (["blind-music", "--out", "x", "--resume", "--overwrite"], "--resume continues a run and --overwrite"),
])
def test_bad_values_are_refused_before_any_work(args, message, refused):
    code, err = refused(*args)
    assert code == 2 and message in err, err
    assert "Traceback" not in err


def test_the_vae_model_takes_a_norm():
    kwargs = MnistConfig(model="vae", norm="batch", channels=(4, 8)).model_kwargs()
    assert kwargs["norm"] == "batch"
    assert "norm" not in MnistConfig(model="vae").model_kwargs()     # the spec such models always had


def test_configs_validate_without_the_command():
    with pytest.raises(ValueError, match="--frames must be a multiple of 8"):
        MusicConfig(frames=20)
    with pytest.raises(ValueError, match="--model must be one of"):
        MnistConfig(model="mlp")
    record = MusicConfig(gain_db=0.0).record()
    assert record["gain_db"] == 0.0 and record["loss_compression"] == "none" and "objective" not in record
    assert MusicConfig(**from_record(MusicConfig, record)) == MusicConfig(gain_db=0.0)
    # names earlier versions recorded come back under today's names
    old = {**record, "max_train_tracks": 3, "max_val_tracks": 2}
    del old["train_limit"], old["eval_limit"]
    assert MusicConfig(**from_record(MusicConfig, old)) == MusicConfig(gain_db=0.0, train_limit=3, eval_limit=2)


def test_the_library_refuses_bad_settings_before_making_a_folder(tmp_path):
    with pytest.raises(ValueError, match="--lr-schedule"):
        npvae.train("mnist", {"lr_schedule": "linear", "out": str(tmp_path / "a")})
    with pytest.raises(ValueError, match="--remix"):
        npvae.train("music", {"remix": "swap", "out": str(tmp_path / "b")})
    with pytest.raises(ValueError, match=r"no setting warmup; .*kl_warmup"):
        npvae.train("mnist", {"warmup": 1.0, "out": str(tmp_path / "c")})
    assert list(tmp_path.iterdir()) == []


def test_the_library_refuses_a_resume_that_names_no_run_or_also_overwrites(tmp_path):
    """The engine makes the check the command reports as a usage error: npvae.train refuses too."""
    with pytest.raises(ValueError, match="--resume continues a run and --overwrite replaces it"):
        npvae.train("mnist", {"out": str(tmp_path / "a")}, resume=True, overwrite=True)
    with pytest.raises(ValueError, match="--resume needs --out"):
        npvae.train("mnist", {"epochs": 2}, resume=True)
    with pytest.raises(ValueError, match="--resume needs --out"):
        npvae.train("mnist", MnistConfig(), resume=True)
    assert list(tmp_path.iterdir()) == []


def test_a_resume_keeps_the_runs_settings_and_refuses_changes_to_what_was_learnt(tmp_path):
    """The one place that decides a resume's settings (engine/resume.py), before any data is loaded."""
    from npvae.engine.resume import SavedRun, resumed_config
    task = TASKS["mnist"]
    record = {**MnistConfig(latent_dim=8, epochs=2, out="old/place").record(), "pipeline": "mnist",
              "data_folder": {"mnist": "x"}, "backend": "numpy"}
    saved = SavedRun({"epoch": 1, "config": record})
    final = ("model.h5", "results.h5")
    cfg, finished = resumed_config(task, tmp_path, saved, {"out": str(tmp_path), "epochs": 3, "lr": 1e-4}, final)
    assert finished is None
    assert cfg == MnistConfig(latent_dim=8, epochs=3, lr=1e-4, out=str(tmp_path))
    with pytest.raises(ValueError) as refused:
        resumed_config(task, tmp_path, saved, {"epochs": 3, "latent_dim": 4, "beta": 0.1}, final)
    text = str(refused.value)
    # what changed, which settings may change, how to go on
    assert "beta: 0.5 -> 0.1; latent_dim: 8 -> 4" in text
    assert "only clip_norm, data_dir, display_every, epochs, eval_limit, html, lr, n_examples, progress, show, " \
           "tensorboard may change" in text
    assert "Drop those flags" in text and "another --out" in text
    with pytest.raises(ValueError, match=r"holds a mnist run, not a music run: resume it with npvae train mnist"):
        resumed_config(TASKS["music"], tmp_path, saved, {}, final)
    # a run that trained its epochs and wrote its files has finished: it says how to train on
    for name in final:
        (tmp_path / name).write_bytes(b"")
    cfg, finished = resumed_config(task, tmp_path, SavedRun({"epoch": 2, "config": record}), {}, final)
    assert cfg.epochs == 2 and "is a finished run (2 of 2 epochs)" in finished and "--resume --epochs 3" in finished


# ----------------------------------------------------------------------------- presets

def test_mnist_preset_sets_the_config_and_flags_override_it(command):
    best = TASKS["mnist"].presets["best"]
    cfg = command("mnist", "--preset", "best")["config"]
    for key, value in best.items():
        assert getattr(cfg, key) == value, key
    seen = command("mnist", "--preset", "best", "--epochs", "3", "--lr", "0.01")
    assert seen["preset"] == "best" and seen["settings"] == {"epochs": 3, "lr": 0.01}
    assert seen["config"] == MnistConfig(model="unet", channels=(24, 48, 96), blocks=2, beta=0.1,
                                         lr_schedule="cosine", epochs=3, lr=0.01)
    default = command("mnist")["config"]
    assert default.model == "dense" and default.lr_schedule == "constant"


def test_music_preset_sets_the_config_and_flags_override_it(command):
    cfg = command("music", "--preset", "best", "--out", "x")["config"]
    for key, value in TASKS["music"].presets["best"].items():
        assert getattr(cfg, key) == value, key
    cfg = command("music", "--preset", "best", "--remix", "shift", "--gain-db", "1.5", "--out", "x")["config"]
    assert cfg == MusicConfig(channels=(24, 48, 96, 128, 128), epochs=45, remix="shift", gain_db=1.5, logit_penalty=1e-3,
                              out="x")


def test_every_preset_makes_a_valid_config():
    for task in TASKS.values():
        assert "default" in task.presets and task.presets["default"] == {}
        for name in task.presets:
            assert isinstance(make_config(task.name, {}, name), task.Config), (task.name, name)


def test_unknown_presets_and_tasks_are_refused_with_the_names(refused):
    with pytest.raises(ValueError, match="unknown mnist preset 'fastest': choose one of anchor, best, bn-vae, "
                                         "compact-vae, default, dense-best"):
        make_config("mnist", {}, "fastest")
    with pytest.raises(ValueError, match="blind-mnist, blind-music"):
        npvae.train("speech", {})
    with pytest.raises(ValueError, match="music"):
        make_config("speech")
    code, err = refused("mnist", "--preset", "fastest")
    assert code == 2 and "--preset" in err and "'best', 'bn-vae', 'compact-vae', 'default', 'dense-best'" in err
    code, err = refused("speech")
    assert code == 2 and "blind-mnist" in err and "blind-music" in err


def test_resume_passes_only_the_named_changes(command):
    seen = command("mnist", "--out", "runs/x", "--resume", "--epochs", "4")
    assert seen["resume"] and not seen["overwrite"]
    assert seen["settings"] == {"out": "runs/x", "epochs": 4}
    seen = command("blind-mnist", "--out", "x", "--resume")
    assert seen["resume"] and seen["settings"] == {"out": "x"}
    assert command("mnist", "--out", "x", "--overwrite")["overwrite"]


# ----------------------------------------------------------------------------- the schedule

def test_cosine_schedule():
    assert schedule_lr("constant", 9.5, 10, 1e-3) == 1e-3
    assert lr_at(0, 10, 1.0) == 1.0 and lr_at(6.0, 10, 1.0) == 1.0          # flat for 60%
    assert lr_at(8.0, 10, 1.0) == pytest.approx(0.1 + 0.9 * 0.5)           # half-way down
    assert lr_at(10.0, 10, 1.0) == pytest.approx(0.1) and lr_at(12, 10, 1.0) == pytest.approx(0.1)
    lrs = [schedule_lr("cosine", e / 4, 10, 1.0) for e in range(41)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    with pytest.raises(ValueError, match="cosine"):
        schedule_lr("step", 1, 10, 1.0)


def test_part_i_titles_say_whether_the_run_trained_a_vae():
    from npvae.tasks.mnist.task import MnistTask
    kind = lambda **kw: MnistTask(MnistConfig(model="unet", **kw), ".", None, print).model_kind()
    assert kind() == "unet VAE" and kind(beta=0.0) == "unet VAE" and kind(sample=False, beta=0.1) == "unet VAE"
    assert kind(sample=False, beta=0.0) == "unet (deterministic)"

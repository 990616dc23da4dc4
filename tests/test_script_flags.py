"""Every setting of each pipeline's TrainConfig has a flag in its script, with the
config's default; bad values are refused by the config with a message naming them."""
import dataclasses
import importlib.util
from pathlib import Path

import pytest

from npvae.pipelines import mnist, music

REPO = Path(__file__).resolve().parents[1]


def script(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def flag_dests(parser):
    return {a.dest for a in parser._actions}


def test_train_music_has_a_flag_for_every_setting():
    s = script("train_music")
    names = {name for name, _, _ in music.TrainConfig.flat_fields()}
    assert names >= {"sample", "remix_prob", "gain_db", "loss_power", "kl_warmup", "max_train_tracks"}
    assert flag_dests(s.parser()) >= names
    cfg, resume, overwrite = s.parse_args([])
    assert cfg == music.TrainConfig() and not resume and not overwrite
    cfg, *_ = s.parse_args(["--no-sample", "--remix-prob", "0.2", "--gain-db", "1.5", "--loss", "mse",
                           "--loss-compression", "power", "--loss-power", "0.3", "--channels", "4", "4", "8",
                           "--no-progress", "--resume"])
    assert cfg.objective == music.LossConfig(loss="mse", compression="power", power=0.3, sample=False)
    assert (cfg.remix_prob, cfg.gain_db, cfg.channels, cfg.progress) == (0.2, 1.5, (4, 4, 8), False)
    assert s.parse_args(["--channels", "8,16,32"])[0].channels == (8, 16, 32)


def test_train_mnist_has_a_flag_for_every_setting():
    s = script("train_mnist")
    names = {f.name for f in dataclasses.fields(mnist.TrainConfig)}
    assert flag_dests(s.parser()) >= names
    assert s.parse_args([])[0] == mnist.TrainConfig()
    cfg, *_ = s.parse_args(["--no-sample", "--n-examples", "4", "--hidden", "64,32", "--show"])
    assert (cfg.sample, cfg.n_examples, cfg.hidden, cfg.show) == (False, 4, (64, 32), True)


@pytest.mark.parametrize("name,args,message", [
    ("train_music", ["--frames", "12"], "multiple of 8"),
    ("train_music", ["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    ("train_music", ["--epochs", "0"], "--epochs must be >= 1, got 0"),
    ("train_music", ["--remix-prob", "2"], "--remix-prob"),
    ("train_mnist", ["--epochs", "0"], "--epochs must be >= 1, got 0"),
    ("train_mnist", ["--latent-dim", "-1"], "--latent-dim must be >= 1, got -1"),
    ("train_mnist", ["--display-every", "0"], "--display-every must be >= 1, got 0"),
])
def test_bad_values_are_refused_by_the_config(name, args, message, capsys):
    with pytest.raises(SystemExit):
        script(name).parse_args(args)
    assert message in capsys.readouterr().err


def test_configs_validate_without_the_scripts():
    with pytest.raises(ValueError, match="multiple of 8"):
        music.TrainConfig(frames=20)
    with pytest.raises(ValueError, match="unknown model"):
        mnist.TrainConfig(model="mlp")
    flat = music.TrainConfig(gain_db=0.0).flat()
    assert flat["gain_db"] == 0.0 and flat["loss_compression"] == "none" and "objective" not in flat
    assert music.TrainConfig.from_flat(**flat) == music.TrainConfig(gain_db=0.0)

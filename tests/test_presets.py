"""Named recipes (npvae.presets), the flags that reach them, and the learning-rate schedule."""
import sys
from pathlib import Path

import pytest

from npvae import presets
from npvae.schedules import lr_at, schedule_lr

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import train_mnist  # noqa: E402
import train_music  # noqa: E402


def test_mnist_preset_sets_the_config_and_flags_override_it():
    best = presets.get("mnist", "best")
    cfg, *_ = train_mnist.parse_args(["--preset", "best"])
    for key, value in best.items():
        assert getattr(cfg, key) == (tuple(value) if isinstance(value, list) else value), key
    cfg, *_ = train_mnist.parse_args(["--preset", "best", "--epochs", "3", "--lr", "0.01"])
    assert cfg.epochs == 3 and cfg.lr == 0.01 and cfg.model == best["model"]
    default, *_ = train_mnist.parse_args([])
    assert default.model == "dense" and default.lr_schedule == "constant"


def test_music_preset_sets_the_config_and_flags_override_it(monkeypatch):
    seen = {}
    monkeypatch.setattr(train_music, "train", lambda cfg, resume=False, **kw: seen.setdefault("cfg", cfg))
    train_music.main(["--preset", "best", "--out", "x"])
    for key, value in presets.get("music", "best").items():
        assert getattr(seen["cfg"], key) == (tuple(value) if isinstance(value, list) else value), key
    seen.clear()
    train_music.main(["--preset", "best", "--remix", "shift", "--gain-db", "1.5", "--out", "x"])
    assert seen["cfg"].remix == "shift" and seen["cfg"].gain_db == 1.5


def test_unknown_presets_are_refused_with_the_names():
    with pytest.raises(ValueError, match="best"):
        presets.get("mnist", "fastest")
    with pytest.raises(ValueError, match="music"):
        presets.names("speech")
    with pytest.raises(SystemExit):
        train_mnist.parse_args(["--preset", "fastest"])


def test_cosine_schedule():
    assert schedule_lr("constant", 9.5, 10, 1e-3) == 1e-3
    assert lr_at(0, 10, 1.0) == 1.0 and lr_at(6.0, 10, 1.0) == 1.0          # flat for 60%
    assert lr_at(8.0, 10, 1.0) == pytest.approx(0.1 + 0.9 * 0.5)           # half-way down
    assert lr_at(10.0, 10, 1.0) == pytest.approx(0.1) and lr_at(12, 10, 1.0) == pytest.approx(0.1)
    lrs = [schedule_lr("cosine", e / 4, 10, 1.0) for e in range(41)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    with pytest.raises(ValueError, match="cosine"):
        schedule_lr("step", 1, 10, 1.0)


def test_pipelines_refuse_unknown_schedule_and_remix(tmp_path):
    from npvae.pipelines import mnist, music
    with pytest.raises(ValueError, match="schedule"):
        mnist.train(mnist.TrainConfig(lr_schedule="linear", out=str(tmp_path / "a")))
    with pytest.raises(ValueError, match="remix"):
        music.train(music.TrainConfig(remix="swap", out=str(tmp_path / "b")))

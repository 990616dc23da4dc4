"""TensorBoard records of a training run (``--tensorboard``), read back with TensorBoard's
own readers: the scalars are history.json, the figures and sounds are there, the
settings and final scores are in the hyper-parameter view, and a resumed run continues
its steps with none written twice."""
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import npvae
from npvae.errors import MissingExtraError
from npvae.watch.board import INSTALL_HINT, scalar_tag, written_steps

pytest.importorskip("tensorboardX", reason='the tensorboard extra is not installed: pip install "npvae[tensorboard]"')
pytest.importorskip("tensorboard", reason='the tensorboard extra is not installed: pip install "npvae[tensorboard]"')
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader  # noqa: E402

pytestmark = pytest.mark.slow     # an end-to-end file (CI runs it on the default backend only)


def quiet(*args):
    pass


def mnist_settings(out, shared_data, **kw):
    base = dict(model="dense", hidden=(32, 16), latent_dim=4, epochs=3, batch_size=64, train_limit=256,
                eval_limit=64, display_every=2, data_dir=str(shared_data), out=str(out), progress=False,
                kl_warmup=1.0, n_examples=4, tensorboard=True)
    base.update(kw)
    return base


def accumulator(run_dir) -> EventAccumulator:
    ea = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "audio": 0, "tensors": 0})
    ea.Reload()
    return ea


def points(run_dir) -> Counter:
    """How often each (tag, step) occurs in all of the folder's event files, read one
    record at a time (TensorBoard's accumulator would hide repeats)."""
    seen = Counter()
    for path in sorted(Path(run_dir).glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                seen[value.tag, event.step] += 1
    return seen


def check_scalars_are_history(ea, run_dir):
    history = json.loads((run_dir / "history.json").read_text())
    for key, values in history.items():
        tag = scalar_tag(key)
        if tag is None:
            continue
        events = ea.Scalars(tag)
        assert [e.step for e in events] == history["epoch"], tag
        # TensorBoard keeps scalars as float32
        assert [e.value for e in events] == [float(np.float32(v)) for v in values], tag
    return history


def test_a_run_with_tensorboard_writes_its_history_figures_and_settings(tmp_path, shared_data):
    from tensorboard.plugins.hparams import plugin_data_pb2
    result = npvae.train("mnist", mnist_settings(tmp_path / "run", shared_data), log=quiet)
    run = result.run_dir
    ea = accumulator(run)
    history = check_scalars_are_history(ea, run)
    assert history["epoch"] == [1, 2, 3]
    tags = ea.Tags()
    assert {"train/total", "validation/psnr", "schedule/learning_rate", "schedule/kl_weight"} <= set(tags["scalars"])
    # the figures at the displays (every 2 epochs and the last), as PNG images of the saved figure's size
    images = ea.Images("figures/validation_pairs")
    assert [im.step for im in images] == [2, 3]
    from matplotlib.image import imread
    height, width = imread(str(run / "figures" / "epoch_003.png")).shape[:2]
    assert (images[-1].height, images[-1].width) == (height, width)
    assert images[-1].encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n"
    # the final scores as scalars at the last epoch, and the settings in the hyper-parameter view
    metrics = json.loads((run / "metrics.json").read_text())
    final = ea.Scalars("final/mean_psnr")
    assert [(e.step, e.value) for e in final] == [(3, float(np.float32(metrics["mean_psnr"])))]
    content = ea.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["lr"].number_value == pytest.approx(1e-3) and hparams["model"].string_value == "dense"
    assert hparams["hidden"].string_value == "32,16" and hparams["pipeline"].string_value == "mnist"
    assert "out" not in hparams and "data_dir" not in hparams
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} >= {"final/mean_psnr", "final/digit_ssim"}
    assert all(n == 1 for n in points(run).values())


def test_resumed_runs_continue_their_steps_and_write_no_point_twice(tmp_path, shared_data):
    """Three sessions: 2 epochs with TensorBoard; a third epoch without (as if killed
    after its checkpoint, before its events); a fourth with it again. Every epoch's
    scalars are there once (the third filled in from the history), the figures at the
    displays of the sessions that wrote events, each session in its own file."""
    run = tmp_path / "run"
    npvae.train("mnist", mnist_settings(run, shared_data, epochs=2, display_every=1), log=quiet)
    assert {tag: sorted(steps) for tag, steps in written_steps(run).items()}["train/total"] == [1, 2]
    npvae.train("mnist", {"out": str(run), "epochs": 3, "tensorboard": False}, resume=True, log=quiet)
    npvae.train("mnist", {"out": str(run), "epochs": 4, "tensorboard": True}, resume=True, log=quiet)
    assert len(list(run.glob("events.out.tfevents.*"))) == 2
    seen = points(run)
    assert max(seen.values()) == 1, [k for k, n in seen.items() if n > 1]
    ea = accumulator(run)
    history = check_scalars_are_history(ea, run)
    assert history["epoch"] == [1, 2, 3, 4]
    assert [im.step for im in ea.Images("figures/validation_pairs")] == [1, 2, 4]
    assert [e.step for e in ea.Scalars("final/mean_psnr")] == [2, 4]


def test_a_new_run_into_an_old_folder_starts_its_events_afresh(tmp_path, shared_data):
    run = tmp_path / "run"
    npvae.train("mnist", mnist_settings(run, shared_data, epochs=1), log=quiet)
    npvae.train("mnist", mnist_settings(run, shared_data, epochs=1, seed=5), overwrite=True, log=quiet)
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    assert all(n == 1 for n in points(run).values())


def test_music_runs_write_their_examples_as_audio(tmp_path, shared_data):
    result = npvae.train("music", dict(dataset="mir1k", channels=(4, 4, 8), latent_channels=4, batch_size=4,
                                       frames=32, train_limit=2, eval_limit=1, epochs=2, display_every=1,
                                       snippet_seconds=1.0, data_dir=str(shared_data), out=str(tmp_path / "m"),
                                       progress=False, tensorboard=True), log=quiet)
    ea = accumulator(result.run_dir)
    check_scalars_are_history(ea, result.run_dir)
    sr = result.task.stft_cfg.sample_rate
    for tag, steps in {"audio/estimated_vocals": [1, 2], "audio/estimated_accompaniment": [1, 2],
                       "audio/mixture": [1], "audio/true_vocals": [1], "audio/true_accompaniment": [1]}.items():
        clips = ea.Audio(tag)
        assert [c.step for c in clips] == steps, tag
        assert clips[0].sample_rate == sr and clips[0].length_frames == sr, tag      # one second
        assert clips[0].encoded_audio_string[:4] == b"RIFF", tag
    assert "validation/vocals_si_sdri" in ea.Tags()["scalars"]
    assert [e.value for e in ea.Scalars("final/val_total")] == [float(np.float32(result.metrics["final_val_total"]))]


def test_a_missing_writer_is_named_with_its_install_command(tmp_path, shared_data, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)       # import tensorboardX fails
    run = tmp_path / "run"
    with pytest.raises(MissingExtraError, match="tensorboardX") as info:
        npvae.train("mnist", mnist_settings(run, shared_data, epochs=1), log=quiet)
    assert INSTALL_HINT in str(info.value) and "without --tensorboard" in str(info.value)
    assert not run.exists()
    # the same from the command line: a message, no traceback, exit status 1
    from npvae.cli import main
    status = main(["train", "mnist", "--out", str(tmp_path / "cli"), "--tensorboard", "--epochs", "1",
                   "--train-limit", "64", "--no-progress", "--data-dir", str(shared_data)])
    assert status == 1
    err = capsys.readouterr().err
    assert INSTALL_HINT in err and "Traceback" not in err and not (tmp_path / "cli").exists()
    # without the flag nothing needs it
    result = npvae.train("mnist", mnist_settings(tmp_path / "plain", shared_data, epochs=1, tensorboard=False),
                         log=quiet)
    assert not list(result.run_dir.glob("events.out.tfevents.*"))

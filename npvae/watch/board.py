"""TensorBoard event files for a training run (``npvae train ... --tensorboard``).

:class:`Board` writes into the run folder itself, so ``tensorboard --logdir runs/``
shows one TensorBoard run per run folder. At every display (every ``display_every``
epochs, and the last epoch) it writes, with step = epoch:

* every entry of the run's history as a scalar (:func:`scalar_tag`: ``train/<term>``,
  ``validation/<term>``, ``schedule/learning_rate``, ``schedule/kl_weight``,
  ``time/...``), for every epoch not written yet, so the scalars are ``history.json``;
* the task's example figures as images (``figures/<label>``, the label in lower case with ``_``);
* for sound, the estimates as audio (``audio/<label>``) and, once, the references;

and when the run ends, its settings and final scores in TensorBoard's hyper-parameter
view (the scores also as scalars ``final/<name>`` at the last epoch, ``<name>`` without a
leading ``final_``).

Event files are append-only, and a run may be killed at any point and resumed from its
last checkpoint. So each :class:`Board` writes a fresh event file, and before writing
it reads what the run folder's event files already hold (:func:`written_steps`) and
skips every (tag, step) found there: a resumed run continues where its events stopped,
with no point written twice, and fills in the scalars of epochs whose display a kill
interrupted. The writer is tensorboardX, an optional extra (:func:`require_writer`).
"""
from __future__ import annotations

import math
import os
import struct
import time
from pathlib import Path

import numpy as np

from ..errors import MissingExtraError
from .html import slug

EVENT_FILE_PREFIX = "events.out.tfevents."
INSTALL_HINT = 'pip install "npvae[tensorboard]"'

# History entries with their own TensorBoard names; the others are train_<term> and val_<term>.
NAMED_TAGS = {"val_lr": "schedule/learning_rate", "val_beta": "schedule/kl_weight",
              "seconds": "time/epoch_seconds", "comm_seconds": "time/comm_seconds"}
# Settings that say where or how a run is shown, not what it learns: not hyper-parameters.
NOT_HPARAMS = frozenset({"out", "data_dir", "data_folder", "progress", "show", "tensorboard", "html",
                         "npvae_version", "display_every"})


def require_writer():
    """tensorboardX's ``SummaryWriter``; a clear error naming the install command when the
    optional extra is missing."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError as exc:
        raise MissingExtraError(f"--tensorboard writes TensorBoard event files with tensorboardX, which is not "
                                f"installed ({exc}); install the extra with: {INSTALL_HINT}, or train "
                                "without --tensorboard") from None
    return SummaryWriter


def scalar_tag(key: str) -> str | None:
    """The TensorBoard tag of history entry ``key`` (None for ``epoch``, the step itself)."""
    if key == "epoch":
        return None
    if key in NAMED_TAGS:
        return NAMED_TAGS[key]
    for prefix, group in (("train_", "train/"), ("val_", "validation/")):
        if key.startswith(prefix):
            return group + key[len(prefix):]
    return "other/" + key


def _records(path: Path):
    """The payloads of a TFRecord file, stopping quietly at a truncated last record (a
    writer killed mid-write)."""
    with open(path, "rb") as f:
        while True:
            head = f.read(12)
            if len(head) < 12:
                return
            (length,) = struct.unpack("<Q", head[:8])
            data = f.read(length)
            if len(data) < length or len(f.read(4)) < 4:
                return
            yield data


def written_steps(folder) -> dict[str, set[int]]:
    """``{tag: {steps}}`` of every summary value in ``folder``'s event files."""
    from tensorboardX.proto.event_pb2 import Event
    out: dict[str, set[int]] = {}
    for path in sorted(Path(folder).glob(EVENT_FILE_PREFIX + "*")):
        for data in _records(path):
            try:
                event = Event.FromString(data)
            except Exception:       # a damaged record: what follows it cannot be trusted either
                break
            for value in event.summary.value:
                out.setdefault(value.tag, set()).add(int(event.step))
    return out


def hparam_value(value):
    """A setting as a hyper-parameter value (a number, string or boolean), or None to leave it out."""
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value if math.isfinite(value) else str(value)
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float, str)) for v in value):
        return ",".join(map(str, value))
    return None


def _as_mono(wave: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(wave, np.float32).reshape(-1), -1.0, 1.0)


class Board:
    """The TensorBoard writer of one training session in ``run_dir`` (rank 0 only)."""

    def __init__(self, run_dir):
        self.run_dir = Path(run_dir)
        self._writer_cls = require_writer()
        self.done = written_steps(self.run_dir)
        self._writer = None

    def _write(self):
        if self._writer is None:      # a fresh file per session, created when first needed
            self._writer = self._writer_cls(logdir=str(self.run_dir), flush_secs=3600, max_queue=1000,
                                            filename_suffix=f".{os.getpid()}.{time.time_ns()}")
        return self._writer

    def _new(self, tag: str, step: int) -> bool:
        """True (and noted) when ``tag`` has no point at ``step`` yet."""
        steps = self.done.setdefault(tag, set())
        if step in steps:
            return False
        steps.add(step)
        return True

    def scalars(self, history: dict) -> None:
        """Every entry of ``history`` at every epoch not written yet."""
        for i, epoch in enumerate(history.get("epoch", [])):
            for key, values in history.items():
                tag = scalar_tag(key)
                if tag is not None and i < len(values) and self._new(tag, int(epoch)):
                    self._write().add_scalar(tag, float(values[i]), int(epoch))

    def display(self, epoch: int, history: dict, shown) -> None:
        """One display: the scalars so far, ``shown``'s figures and sound (a
        :class:`~npvae.engine.task.Shown`), written to disk before this returns."""
        from matplotlib.image import imread
        self.scalars(history)
        for label, path in shown.figures.items():
            tag = f"figures/{slug(label)}"
            if self._new(tag, epoch):
                self._write().add_image(tag, imread(str(path))[..., :3], epoch, dataformats="HWC")
        for label, wave in shown.audio.items():
            tag = f"audio/{slug(label)}"
            if self._new(tag, epoch):
                self._write().add_audio(tag, _as_mono(wave), epoch, sample_rate=shown.sample_rate)
        for label, wave in shown.references.items():
            tag = f"audio/{slug(label)}"
            if not self.done.get(tag) and self._new(tag, epoch):      # the references once
                self._write().add_audio(tag, _as_mono(wave), epoch, sample_rate=shown.sample_rate)
        self.flush()

    def finish(self, epoch: int, history: dict, config: dict, metrics: dict) -> None:
        """The end of the run: the scalars, then the settings with the final scores in the
        hyper-parameter view (the scores as ``final/<name>`` at ``epoch``)."""
        from tensorboardX.summary import hparams
        self.scalars(history)
        scores = {f"final/{k.removeprefix('final_')}": float(v) for k, v in metrics.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        settings = {k: hparam_value(v) for k, v in config.items() if k not in NOT_HPARAMS}
        settings = {k: v for k, v in settings.items() if v is not None}
        if self._new("_hparams_/session_start_info", epoch):
            writer = self._write()
            for summary in hparams(settings, scores):
                writer._get_file_writer().add_summary(summary, epoch)
            for tag, value in scores.items():
                if self._new(tag, epoch):
                    writer.add_scalar(tag, value, epoch)
        self.flush()

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


__all__ = ["Board", "written_steps", "scalar_tag", "require_writer", "INSTALL_HINT"]

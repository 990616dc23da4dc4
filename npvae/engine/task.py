"""What a kind of training run supplies to the engine: a :class:`Task`.

The engine (:func:`npvae.engine.train`) owns everything that is the same for every
run: the run folder and its lock, presets, the learning-rate and KL schedules,
clipping, MPI, checkpoints and resume, progress, the records and the figures' timing.
A task says what differs, in a subclass with these parts:

* class attributes: ``name`` (``npvae train <name>``), ``Config`` (its settings, a
  :class:`~npvae.engine.config.RunConfig` subclass), ``presets`` (named recipes),
  ``help``/``choices`` (texts and allowed values of its flags), ``summary``;
* ``setup(init_rng, noise_rng, saved_record)``: load the data, build the model and the
  objective (``saved_record``: the resumed checkpoint's recorded config, or None);
* ``planned_model()`` (optional): the spec of the model setup will build, so that a
  model too large for the machine is refused before it is built;
* ``train_data`` (with ``n_batches(batch_size)`` and ``batches(rng, batch_size, shard)``),
  or ``n_batches`` and ``batches(rng)`` of its own (this rank's share of each batch);
* ``step(batch, epoch, beta)``: forward and backward of one batch, the loss terms;
* ``validate(epoch, beta)``: the terms on held-out data (rank 0, eval mode);
* ``display(epoch, history)``: the figures every ``display_every`` epochs, and what it
  drew as a :class:`Shown` (figure files, and for sound the examples' waveforms) for the
  run's page and TensorBoard;
* ``evaluate(history)``: the final scores, a flat dict of numbers (``metrics.json``);
* ``save(config, history, metrics)``: ``model.h5``, ``results.h5`` and the final figures.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import RunConfig


@dataclass
class Shown:
    """What one display drew. figures : label -> PNG file. audio : label -> mono waveform
    (n,) of the model's estimates, at ``sample_rate`` Hz; references : label -> mono
    waveform of the inputs and true sources (the same at every display)."""
    figures: dict = field(default_factory=dict)
    audio: dict = field(default_factory=dict)
    references: dict = field(default_factory=dict)
    sample_rate: int = 0


class Task:
    """One kind of training run (see the module docstring); an instance is one run."""
    name: str = ""
    Config: type = RunConfig
    presets: dict[str, dict] = {"default": {}}
    help: dict[str, str] = {}
    choices: dict[str, tuple] = {}
    summary: str = ""
    figures: tuple[str, ...] = ()       # files the final save writes besides model.h5 and results.h5
    # the task's own settings a resumed run may change (the engine's: npvae.engine.resume.RESUMABLE)
    resumable: frozenset[str] = frozenset()
    renamed_flags: dict[str, str] = {}   # old flag -> its name now (refused, naming the new one)

    def __init__(self, cfg, run_dir: Path, comm, log):
        self.cfg, self.run_dir, self.comm, self.log = cfg, Path(run_dir), comm, log
        self.model = None

    # -- before the run ------------------------------------------------------------
    @classmethod
    def finalize(cls, cfg):
        """``cfg`` with the defaults that depend on other settings filled in."""
        return cfg

    @classmethod
    def run_prefix(cls, cfg) -> str:
        """The stem of a new run folder's name, ``runs/<stem>-<time>``."""
        return cls.name

    def seeds(self) -> tuple[np.random.Generator, np.random.Generator]:
        """``(init_rng, train_rng)``: the initial weights', and the batches' and noise's."""
        return np.random.default_rng([self.cfg.seed, 0]), np.random.default_rng([self.cfg.seed, 1])

    def record(self) -> dict:
        """Entries of ``config.json`` besides the settings (data folders, statistics)."""
        return {}

    @classmethod
    def planned_model(cls, cfg) -> tuple[dict, tuple[int, ...], str] | None:
        """``(spec, example_shape, flags)``: the spec of the model :meth:`setup` will build,
        the shape of one training example and the flags that size the model, known from
        the settings alone; the engine estimates the run's memory from them before setup
        (:mod:`npvae.engine.memory`). None: no estimate."""
        return None

    def describe(self) -> str:
        """One line on the model and the data, printed when the run starts."""
        return f"{type(self.model).__name__}: {self.model.num_parameters():,} parameters"

    # -- the parts a task must give ------------------------------------------------
    def setup(self, init_rng, noise_rng, saved_record: dict | None) -> None:
        raise NotImplementedError

    @property
    def n_batches(self) -> int:
        """Batches an epoch (of ``self.train_data`` by default)."""
        return self.train_data.n_batches(self.cfg.batch_size)

    def batches(self, rng: np.random.Generator):
        """One epoch of this rank's batches (by default ``self.train_data.batches``, which
        takes the batch size and ``shard``, the share of each global batch; see
        :meth:`npvae.data.mixtures.MixtureData.batches`)."""
        return self.train_data.batches(rng, self.cfg.batch_size, shard=self.comm.shard)

    def step(self, batch, epoch: float, beta: float) -> dict:
        raise NotImplementedError

    def validate(self, epoch: int, beta: float) -> dict:
        return {}

    def display(self, epoch: int, history: dict) -> Shown:
        return Shown()

    def save_curves(self, path: Path, history: dict) -> None:
        """The loss curves (every ``display_every`` epochs and at the end)."""
        from ..plotting import save_loss_curves
        save_loss_curves(path, history)

    def evaluate(self, history: dict) -> dict:
        raise NotImplementedError

    def save(self, config: dict, history: dict, metrics: dict) -> None:
        raise NotImplementedError


__all__ = ["Task", "Shown"]

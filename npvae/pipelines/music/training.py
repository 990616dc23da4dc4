"""Part II end to end: train a spectrogram separator, show it every few epochs, save it.

:func:`train` is what ``scripts/train_music.py`` runs; :class:`TrainConfig` holds every
setting of a run, the objective's in a :class:`~.objective.LossConfig`.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from ..._version import __version__
from ... import distributed, spectral_losses
from ...audio.datasets import dataset_folder, load_tracks
from ...audio.io import write_audio
from ...audio.remix import sample_remix_batch
from ...audio.stft import STFTConfig
from ...checkpoint import CHECKPOINT_FILE, load_checkpoint
from ...configflags import dataclass_fields
from ...fileguard import prepare_run_dir, unique_run_dir
from ...io import MODEL_FILE, RESULTS_FILE, save_music_results, save_separator
from ...models.music import SpectrogramUNetVAE
from ...optim import Adam
from ...plotting import plot_example, plot_history
from ...schedules import lr_at
from ...separator import Normalizer, Separator
from ...training import Trainer
from ...validate import check_settings
from .batches import sample_batch
from .evaluation import example, quick_validation
from .objective import LossConfig, MusicObjective

# The flat name of each LossConfig field: in flags, model files' /config and checkpoints.
LOSS_KEYS = {"loss": "loss", "loss_compression": "compression", "loss_power": "power",
             "mix_weight": "mix_weight", "beta": "beta", "kl_warmup": "kl_warmup", "sample": "sample"}


@dataclass
class TrainConfig:
    """Settings of :func:`train` (the options of ``scripts/train_music.py``).

    compression : of the network's input magnitudes ("log" or "power"; see
    :class:`~npvae.separator.Normalizer`). remix_prob, gain_db : training-batch
    augmentation; remix : "shift" (the same clip's accompaniment, shifted:
    :func:`~.batches.sample_batch`) or "cross" (another clip's:
    :func:`npvae.audio.remix.sample_remix_batch`). max_train_tracks,
    max_val_tracks : first N clips only (quick runs, tests). objective : the loss.
    """
    dataset: str = "mir1k"
    data_dir: str | None = None
    out: str | None = None                # None: a new folder runs/music-<dataset>-<time>
    epochs: int = 50
    batch_size: int = 8
    frames: int = 64
    lr: float = 1e-3
    seed: int = 0
    channels: tuple = (16, 32, 64)
    latent_channels: int = 32
    compression: str = "log"
    remix_prob: float = 0.5
    gain_db: float = 3.0
    remix: str = "shift"
    display_every: int = 5
    snippet_seconds: float = 4.0
    max_val_tracks: int = 24
    max_train_tracks: int | None = None
    progress: bool = True
    objective: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self):
        if isinstance(self.objective, dict):
            self.objective = LossConfig(**self.objective)
        # One validation, on the flat settings, so every message names the flag to change.
        check_settings(SimpleNamespace(**self.flat()),
                       positive_int=("epochs", "batch_size", "frames", "channels", "latent_channels",
                                     "display_every", "max_val_tracks", "max_train_tracks"),
                       nonneg_int=("seed",), positive=("lr", "snippet_seconds"),
                       nonneg=("mix_weight", "beta", "kl_warmup", "remix_prob", "gain_db"),
                       choices={"dataset": ("mir1k", "irmas", "stems"), "compression": ("log", "power"),
                                "loss": tuple(spectral_losses.LOSSES),
                                "loss_compression": ("none", "log", "power"), "remix": ("shift", "cross")},
                       optional=("max_train_tracks",))
        self.channels = tuple(int(c) for c in self.channels)
        d = SpectrogramUNetVAE.DOWNSAMPLE
        if self.frames % d:
            raise ValueError(f"--frames must be a multiple of {d} (the network halves the time axis "
                             f"{d.bit_length() - 1} times), got {self.frames}")
        if len(self.channels) != 3:
            raise ValueError(f"--channels takes 3 numbers, got {list(self.channels)}")
        if self.remix_prob > 1:
            raise ValueError(f"--remix-prob is a probability in [0, 1], got {self.remix_prob}")

    @classmethod
    def flat_fields(cls) -> list[tuple[str, str, object]]:
        """``(flat name, type, default)`` of every setting, the loss's included (the flags)."""
        loss = {name: (t, d) for name, t, d in dataclass_fields(LossConfig)}
        return dataclass_fields(cls, skip=("objective",)) + [(k, *loss[name]) for k, name in LOSS_KEYS.items()]

    @classmethod
    def from_flat(cls, **settings) -> "TrainConfig":
        """A config from flat settings: the loss's under their :data:`LOSS_KEYS` names."""
        loss = {LOSS_KEYS[k]: settings.pop(k) for k in list(settings) if k in LOSS_KEYS}
        return cls(**settings, objective=LossConfig(**loss))

    def flat(self) -> dict:
        """Every setting under one flat name (tuples as lists): the run's recorded config."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "objective"}
        out["channels"] = list(self.channels)
        out.update({k: getattr(self.objective, name) for k, name in LOSS_KEYS.items()})
        return out


def train(cfg: TrainConfig, resume: bool = False, log=print, overwrite: bool = False) -> dict:
    """Train a separator as ``cfg`` says; writes into ``cfg.out`` (None: a new folder
    ``runs/music-<dataset>-<time>``; an existing run folder is refused unless ``resume``
    or ``overwrite``, :func:`npvae.fileguard.prepare_run_dir`):

    checkpoint.npz (every epoch, atomically), figures/epoch_XXX.png and
    snippets/epoch_XXX_{vocals,accompaniment}.wav every ``display_every`` epochs,
    loss_curves.png, model.h5 and results.h5 at the end. Returns a dict with the
    Separator, the history and the run's wall time.
    """
    t_start = time.perf_counter()
    comm = distributed.world()
    comm.check_batch_size(cfg.batch_size)
    if not comm.is_root:
        log = lambda text: None  # noqa: E731 - rank 0 alone speaks
    if cfg.out is None and resume:
        raise ValueError("--resume needs --out RUN_DIR (the run to continue)")
    out = None
    if comm.is_root:      # rank 0 checks (or creates) the one run folder; the others use it
        out = unique_run_dir(Path("runs") / f"music-{cfg.dataset}") if cfg.out is None else \
            prepare_run_dir(cfg.out, resume=resume, overwrite=overwrite)
    out = Path(comm.bcast_object(out))
    cfg = replace(cfg, out=str(out))
    folder = dataset_folder(cfg.dataset, cfg.data_dir)
    log(f"data: {folder}")
    out.mkdir(parents=True, exist_ok=True)
    stft_cfg = STFTConfig.for_dataset(cfg.dataset)
    train_tracks = load_tracks(cfg.dataset, "train", cfg.data_dir)[:cfg.max_train_tracks]
    val_tracks = load_tracks(cfg.dataset, "validation", cfg.data_dir)[:cfg.max_val_tracks]
    log(f"{cfg.dataset}: {len(train_tracks)} training clips ({sum(t.duration for t in train_tracks):.0f} s), "
        f"{len(val_tracks)} validation clips ({sum(t.duration for t in val_tracks):.0f} s)")

    rng = np.random.default_rng(cfg.seed)
    model = SpectrogramUNetVAE(cfg.channels, cfg.latent_channels, rng=np.random.default_rng(cfg.seed + 1))
    model.rng = comm.noise(rng)    # rng itself when training alone
    ckpt = out / CHECKPOINT_FILE
    if resume and ckpt.exists():
        sep = Separator.from_config(model, load_checkpoint(ckpt)[1]["config"], str(ckpt))
    else:
        sep = Separator(model, stft_cfg, Normalizer.fit(train_tracks, stft_cfg, cfg.compression))
    # rank 0's normaliser, also where only it can read the checkpoint
    sep = Separator(model, sep.stft_cfg, comm.bcast_object(sep.norm))
    run_config = {**cfg.flat(), "data_folder": str(folder), **sep.config()}
    objective = MusicObjective(sep, cfg.objective)
    opt = Adam(model, lr=cfg.lr, clip_norm=5.0)
    trainer = Trainer(model, opt, rng, out, config=run_config, display_every=cfg.display_every,
                      progress=cfg.progress, log=log, comm=comm)
    if resume and trainer.resume():
        log(f"resumed from {ckpt} after epoch {trainer.epoch}")
    log(f"model: {model.num_parameters()} parameters; {asdict(stft_cfg)}")
    if comm.parallel:
        log(f"data-parallel over {comm.size} MPI ranks, {cfg.batch_size // comm.size}+ excerpts of each batch "
            f"of {cfg.batch_size} per rank, {comm.threads} thread(s) each")

    total_frames = sum(stft_cfg.n_frames(t.n_samples) for t in train_tracks)
    n_batches = max(1, total_frames // (cfg.batch_size * cfg.frames))

    sampler = {"shift": sample_batch, "cross": sample_remix_batch}[cfg.remix]

    def batches(r):
        for _ in range(n_batches):
            yield sampler(train_tracks, r, cfg.batch_size, cfg.frames, stft_cfg, cfg.remix_prob, cfg.gain_db,
                          part=comm.shard(cfg.batch_size))

    def step(batch, epoch):
        opt.lr = lr_at(epoch, cfg.epochs, cfg.lr)
        return objective.terms(batch, epoch)

    def validate():
        terms = objective.on_tracks(val_tracks)
        terms.update(quick_validation(sep, val_tracks))
        terms["lr"] = opt.lr
        return terms

    show = val_tracks[0] if val_tracks else train_tracks[0]

    def on_display(epoch, history):
        ex = example(sep, show, cfg.snippet_seconds)
        plot_example(ex, out / "figures" / f"epoch_{epoch:03d}.png", stft_cfg, f"{show.name}, epoch {epoch}")
        for key in ("vocals_hat", "accompaniment_hat"):
            write_audio(out / "snippets" / f"epoch_{epoch:03d}_{key.replace('_hat', '')}.wav",
                        ex[key], stft_cfg.sample_rate)

    history = trainer.fit(cfg.epochs, batches, n_batches, step, validate, on_display)
    train_seconds = time.perf_counter() - t_start
    if not comm.is_root:   # rank 0 writes the files
        return {"separator": sep, "history": history, "seconds": train_seconds}
    plot_history(history, out / "loss_curves.png")
    config = {**cfg.flat(), "data_folder": str(folder), "npvae_version": __version__}
    save_separator(out / MODEL_FILE, sep, config)
    examples = {"sample_rate": stft_cfg.sample_rate, "clip0": example(sep, show, cfg.snippet_seconds)}
    metrics = {f"final_val_{k}": float(v[-1]) for k, v in history.items() if k.startswith("val_")}
    metrics["train_seconds"] = train_seconds
    save_music_results(out / RESULTS_FILE, sep, config, history, metrics, examples)
    log(f"wrote {out / MODEL_FILE}, {out / RESULTS_FILE}, {out / 'loss_curves.png'} "
        f"({train_seconds / 60:.1f} min)")
    return {"separator": sep, "history": history, "seconds": train_seconds}

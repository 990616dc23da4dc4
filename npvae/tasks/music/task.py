"""Music as a training task: singing voice and accompaniment from STFT spectrograms.

``npvae train music`` (and ``python scripts/train_music.py``) runs :class:`MusicTask`
through the engine (:func:`npvae.engine.train`). Every ``display_every`` epochs the run
folder gets a spectrogram figure ``figures/epoch_XXX.png`` and WAV snippets of the
estimates ``snippets/epoch_XXX_{vocals,accompaniment}.wav``; ``model.h5`` is a
separator (``npvae.load_model`` returns a :class:`~npvae.separation.separator.Separator`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ... import spectral_losses
from ...audio.datasets import dataset_folder, load_tracks
from ...audio.io import write_audio
from ...audio.remix import sample_remix_batch
from ...audio.stft import STFTConfig
from ...engine.checkpoint import CHECKPOINT_FILE
from ...engine.config import RunConfig
from ...engine.task import Shown, Task
from ...errors import DatasetError
from ...files.model_file import MODEL_FILE, RESULTS_FILE, save_music_results, save_separator
from ...models.music import SpectrogramUNetVAE
from ...models.options import DOWNS, NORMS
from ...models.stacked import MAX_STACKS, mask_network
from ...plotting import plot_example, plot_history
from ...separation.separator import Normalizer, Separator
from ...inputs import check_settings
from .batches import sample_batch
from .evaluation import example, quick_validation
from .objective import LossConfig, MusicObjective

DATASETS = ("mir1k", "irmas", "stems")


@dataclass
class MusicConfig(RunConfig):
    """Settings of a music run (each a flag of ``npvae train music``).

    dataset : "mir1k", "irmas" or "stems" (a folder of stems, see ``--data-dir``).
    frames : STFT frames per training excerpt. channels, latent_channels : the spectrogram
    U-Net VAE's encoder levels and its latent map. norm, down, dropout, residual,
    rnn_layers, rnn_hidden : the U-Net's options (:class:`~npvae.models.music.SpectrogramUNetVAE`):
    BatchNorm or GroupNorm after every convolution, pooling instead of strided
    convolutions, decoder dropout, residual blocks, a recurrent bottleneck over the frames
    (0 layers: none). stacks : hourglasses (U-Nets) in a row, each after the first
    refining the masks of the one before (:class:`~npvae.models.stacked.StackedSpectrogramUNetVAE`;
    1: one U-Net). compression : of the network's
    input magnitudes (see :class:`~npvae.separation.separator.Normalizer`). remix, remix_prob,
    gain_db, voice_pitch : training-batch augmentation; remix "shift" takes the same clip's
    accompaniment, shifted (:func:`~.batches.sample_batch`), "cross" another clip's
    (:func:`npvae.audio.remix.sample_remix_batch`); voice_pitch (semitones) reads each
    voice excerpt at a random rate (:mod:`npvae.audio.augment`). loss, loss_compression, loss_power,
    mix_weight, sample, logit_penalty : the objective (:class:`~.objective.LossConfig`).
    snippet_seconds : length of the displayed example. train_limit, eval_limit : the
    first N training / validation clips.
    """
    dataset: str = "mir1k"
    eval_limit: int | None = 24
    frames: int = 64
    channels: tuple = (16, 32, 64)
    latent_channels: int = 32
    norm: str = "none"
    down: str = "stride"
    dropout: float = 0.0
    residual: bool = False
    rnn_layers: int = 0
    rnn_hidden: int = 256
    stacks: int = 1
    compression: str = "log"
    remix: str = "shift"
    remix_prob: float = 0.5
    gain_db: float = 3.0
    voice_pitch: float = 0.0
    loss: str = "l1"
    loss_compression: str = "none"
    loss_power: float = 0.5
    mix_weight: float = 0.5
    beta: float = 0.01
    kl_warmup: float = 1.0
    sample: bool = True
    logit_penalty: float = 0.0
    epochs: int = 50
    batch_size: int = 8
    lr_schedule: str = "cosine"
    clip_norm: float = 5.0
    snippet_seconds: float = 4.0

    def __post_init__(self):
        super().__post_init__()
        check_settings(self, positive_int=("frames", "channels", "latent_channels", "rnn_hidden", "stacks"),
                       nonneg_int=("rnn_layers",), positive=("snippet_seconds", "loss_power"),
                       nonneg=("mix_weight", "remix_prob", "gain_db", "logit_penalty", "voice_pitch", "dropout"),
                       choices={"dataset": DATASETS, "compression": ("log", "power"), "norm": NORMS, "down": DOWNS,
                                "loss": tuple(spectral_losses.LOSSES),
                                "loss_compression": ("none", "log", "power"), "remix": ("shift", "cross")})
        self.channels = tuple(int(c) for c in (self.channels if isinstance(self.channels, (list, tuple))
                                               else [self.channels]))
        if len(self.channels) < 2:
            raise ValueError(f"--channels takes one number per encoder level, at least 2 (e.g. 16 32 64), got "
                             f"{len(self.channels)}: {' '.join(map(str, self.channels))}")
        d = self.downsample
        if self.frames % d:
            raise ValueError(f"--frames must be a multiple of {d} (the network halves the time axis "
                             f"{d.bit_length() - 1} times, once per level of --channels), got {self.frames}")
        if self.dropout >= 1:
            raise ValueError(f"--dropout is the probability of zeroing a decoder feature, below 1 (0: none), got "
                             f"{self.dropout!r}")
        if self.rnn_layers and self.rnn_hidden % 2:
            raise ValueError(f"--rnn-hidden is split between the two directions of the recurrent bottleneck: it must "
                             f"be even, got {self.rnn_hidden}")
        if self.stacks > MAX_STACKS:
            raise ValueError(f"--stacks is the number of hourglasses in a row, at most {MAX_STACKS}, got "
                             f"{self.stacks}")
        if self.remix_prob > 1:
            raise ValueError(f"--remix-prob is a probability in [0, 1], got {self.remix_prob}")
        if self.voice_pitch > 12:
            raise ValueError(f"--voice-pitch is a pitch change in semitones, at most 12 (an octave), got "
                             f"{self.voice_pitch:g}")

    @property
    def downsample(self) -> int:
        """How many times the network shrinks F and T: 2 ** (levels)."""
        return 2 ** len(self.channels)

    def model_kwargs(self, freq_bins: int) -> dict:
        """The mask network's arguments (:func:`~npvae.models.stacked.mask_network`);
        ``freq_bins`` the STFT's bins the network sees."""
        return dict(stacks=self.stacks, channels=self.channels, latent_channels=self.latent_channels, norm=self.norm,
                    down=self.down, dropout=self.dropout, residual=self.residual, rnn_layers=self.rnn_layers,
                    rnn_hidden=self.rnn_hidden, freq_bins=freq_bins if self.rnn_layers else None)

    def loss_config(self) -> LossConfig:
        return LossConfig(loss=self.loss, compression=self.loss_compression, power=self.loss_power,
                          mix_weight=self.mix_weight, sample=self.sample,
                          logit_penalty=self.logit_penalty)


def check_clip_lengths(tracks, stft_cfg: STFTConfig, what: str, folder,
                       need: int = SpectrogramUNetVAE.DOWNSAMPLE) -> None:
    """Refuse clips too short for the network (fewer STFT frames than it downsamples by,
    ``need``), naming each one, before any training starts."""
    short = [t for t in tracks if stft_cfg.n_frames(t.n_samples) < need]
    if short:
        names = ", ".join(f"{t.name} ({t.n_samples} samples)" for t in short[:5]) + (", ..." if len(short) > 5 else "")
        min_samples = (need - 1) * stft_cfg.hop + 1
        raise DatasetError(f"{len(short)} {what} clip(s) in {folder} are too short for the network, which needs at "
                           f"least {need} STFT frames (about {min_samples / stft_cfg.sample_rate * 1000:.0f} ms at "
                           f"{stft_cfg.sample_rate} Hz): {names}. Remove them from the dataset folder")


class MusicTask(Task):
    """Supervised music: the model sees a mixture's spectrogram and learns two masks."""
    name = "music"
    resumable = frozenset({"snippet_seconds"})   # what is shown and kept as examples, not what is learnt
    Config = MusicConfig
    summary = "Music: separate singing voice from accompaniment (MIR-1K, IRMAS or stems)"
    figures = ()
    presets = {
        "default": {},
        # the spectrogram U-Net VAE five levels deep (24-48-96-128-128, 1.88M parameters; a
        # receptive field four times as wide as the default's), 45 epochs, half the training
        # excerpts remixed with another clip's accompaniment, and the mask-logit penalty
        # without which this deep net's voice mask dies in the first epoch at some seeds
        "best": {"channels": (24, 48, 96, 128, 128), "epochs": 45, "remix": "cross", "logit_penalty": 1e-3},
        # the anchors' layers on the best recipe's network: BatchNorm after every convolution
        # and a two-layer bidirectional LSTM over the frames at the bottleneck (Open-Unmix's)
        "recurrent": {"channels": (24, 48, 96, 128, 128), "epochs": 45, "remix": "cross", "logit_penalty": 1e-3,
                      "norm": "batch", "rnn_layers": 2, "rnn_hidden": 256},
        # the recurrent recipe twice in a row (stacked hourglasses, 7.44M parameters): 50 epochs
        # trained in 94 minutes under `mpirun -n 2` on a 2-core machine (see training.md)
        "stacked": {"channels": (24, 48, 96, 128, 128), "epochs": 50, "remix": "cross", "logit_penalty": 1e-3,
                    "norm": "batch", "rnn_layers": 2, "rnn_hidden": 256, "stacks": 2},
        # the stacked recipe narrow enough to ship (1.71M parameters, a 7.5 MB file): 16-32-48-64-64
        # channels and a recurrent bottleneck of 96; 50 epochs in 69 minutes on one thread
        "stacked-small": {"channels": (16, 32, 48, 64, 64), "epochs": 50, "remix": "cross", "logit_penalty": 1e-3,
                          "norm": "batch", "rnn_layers": 2, "rnn_hidden": 96, "stacks": 2},
    }
    help = {
        "dataset": "mir1k, irmas or a folder of stems (see --data-dir)",
        "data_dir": "data root (holds MIR-1K/ or IRMAS-TrainingData/), or the stems folder (else $NPVAE_DATA)",
        "batch_size": "excerpts per batch",
        "frames": "STFT frames per training excerpt (a multiple of 8)",
        "channels": "channels of the encoder levels, one number per level (each halves F and T)",
        "latent_channels": "channels of the Gaussian latent map",
        "norm": "a BatchNorm (batch) or GroupNorm (group) after every convolution but the last, before its activation",
        "down": "halve the maps by strided convolutions (stride), or by max or average pooling after each encoder "
                "convolution (max, avg)",
        "dropout": "probability of zeroing a decoder feature in training (0: no dropout)",
        "residual": "a residual block (one more convolution, added to its input) after every level",
        "rnn_layers": "layers of a bidirectional LSTM over the frames at the bottleneck (0: none)",
        "rnn_hidden": "width of the recurrent bottleneck (its LSTM has half as many units each way)",
        "stacks": "U-Nets in a row (stacked hourglasses): each after the first sees the mixture and the masks of "
                  "the one before and refines them; every stack's masks are trained (1: one U-Net)",
        "compression": "compression of the network's input magnitudes",
        "remix": "remixed excerpts take the accompaniment of the same clip, shifted (shift), or of another (cross)",
        "remix_prob": "chance that an excerpt is remixed",
        "gain_db": "random accompaniment gain in [-gain_db, gain_db] dB",
        "voice_pitch": "read each training voice excerpt at a random rate: a pitch (and tempo) change within "
                       "this many semitones (0: none)",
        "loss": "reconstruction loss on magnitudes: l1, mse, kl (generalised KL), is (Itakura-Saito)",
        "loss_compression": "compression of magnitudes inside l1/mse",
        "loss_power": "exponent of the power compression inside l1/mse",
        "mix_weight": "weight of the reconstructed mixture's term",
        "sample": "sample the latent in training (--no-sample: a deterministic net with a KL code penalty)",
        "logit_penalty": "weight of the masks' mean squared logit in the loss (keeps the sigmoids from saturating)",
        "snippet_seconds": "length of the example shown every --display-every epochs",
        "train_limit": "the first N training clips only (quick runs)",
        "eval_limit": "validation clips scored every epoch (the first N)",
    }
    choices = {"dataset": DATASETS, "compression": ("log", "power"), "loss": tuple(spectral_losses.LOSSES),
               "norm": NORMS, "down": DOWNS,
               "remix": ("shift", "cross"), "loss_compression": ("none", "log", "power")}

    @classmethod
    def run_prefix(cls, cfg) -> str:
        return f"music-{cfg.dataset}"

    def seeds(self):
        return np.random.default_rng(self.cfg.seed + 1), np.random.default_rng(self.cfg.seed)

    @classmethod
    def planned_model(cls, cfg):
        bins = STFTConfig.for_dataset(cfg.dataset).n_freq - 1
        spec = {"type": "SpectrogramUNetVAE", "channels": list(cfg.channels), "latent_channels": cfg.latent_channels}
        if cfg.stacks > 1:
            spec.update(type="StackedSpectrogramUNetVAE", stacks=cfg.stacks)
        return spec, (bins, cfg.frames), "--channels, --latent-channels, --stacks, --frames"

    def setup(self, init_rng, noise_rng, saved_record):
        cfg = self.cfg
        self.folder = dataset_folder(cfg.dataset, cfg.data_dir)
        self.log(f"data: {self.folder}")
        self.stft_cfg = stft_cfg = STFTConfig.for_dataset(cfg.dataset)
        self.train_tracks = load_tracks(cfg.dataset, "train", cfg.data_dir)[:cfg.train_limit]
        self.val_tracks = load_tracks(cfg.dataset, "validation", cfg.data_dir)[:cfg.eval_limit]
        check_clip_lengths(self.train_tracks, stft_cfg, "training", self.folder, self.cfg.downsample)
        check_clip_lengths(self.val_tracks, stft_cfg, "validation", self.folder, self.cfg.downsample)
        self.log(f"{cfg.dataset}: {len(self.train_tracks)} training clips "
                 f"({sum(t.duration for t in self.train_tracks):.0f} s), {len(self.val_tracks)} validation clips "
                 f"({sum(t.duration for t in self.val_tracks):.0f} s)")
        self.model = model = mask_network(**cfg.model_kwargs(stft_cfg.n_freq - 1), rng=init_rng)
        model.rng = noise_rng
        if saved_record is not None:       # the normaliser the run was trained with
            sep = Separator.from_config(model, saved_record, str(self.run_dir / CHECKPOINT_FILE))
        else:
            sep = Separator(model, stft_cfg, Normalizer.fit(self.train_tracks, stft_cfg, cfg.compression))
        # rank 0's normaliser, also where only it can read the checkpoint
        self.sep = Separator(model, sep.stft_cfg, self.comm.bcast_object(sep.norm))
        self.objective = MusicObjective(self.sep, cfg.loss_config())
        total_frames = sum(stft_cfg.n_frames(t.n_samples) for t in self.train_tracks)
        self._n_batches = max(1, total_frames // (cfg.batch_size * cfg.frames))
        self.shown = self.val_tracks[0] if self.val_tracks else self.train_tracks[0]

    def record(self) -> dict:
        return {"data_folder": str(self.folder), **self.sep.config()}

    def describe(self) -> str:
        return f"{super().describe()}; STFT {self.stft_cfg}"

    @property
    def n_batches(self) -> int:
        return self._n_batches

    def batches(self, rng):
        cfg = self.cfg
        sampler = {"shift": sample_batch, "cross": sample_remix_batch}[cfg.remix]
        for _ in range(self._n_batches):
            yield sampler(self.train_tracks, rng, cfg.batch_size, cfg.frames, self.stft_cfg, cfg.remix_prob,
                          cfg.gain_db, part=self.comm.shard(cfg.batch_size), voice_pitch=cfg.voice_pitch)

    def step(self, batch, epoch, beta):
        return self.objective.terms(batch, beta=beta)

    def validate(self, epoch, beta):
        terms = self.objective.on_tracks(self.val_tracks, beta)
        terms.update(quick_validation(self.sep, self.val_tracks))
        return terms

    def display(self, epoch, history):
        ex = example(self.sep, self.shown, self.cfg.snippet_seconds)
        path = plot_example(ex, self.run_dir / "figures" / f"epoch_{epoch:03d}.png", self.stft_cfg,
                            f"{self.shown.name}, epoch {epoch}")
        for key in ("vocals_hat", "accompaniment_hat"):
            write_audio(self.run_dir / "snippets" / f"epoch_{epoch:03d}_{key.replace('_hat', '')}.wav",
                        ex[key], self.stft_cfg.sample_rate)
        return Shown(figures={f"{self.shown.name} (validation)": path},
                     audio={"estimated vocals": ex["vocals_hat"], "estimated accompaniment": ex["accompaniment_hat"]},
                     references={"mixture": ex["mixture"], "true vocals": ex["vocals"],
                                 "true accompaniment": ex["accompaniment"]},
                     sample_rate=self.stft_cfg.sample_rate)

    def save_curves(self, path, history):
        plot_history(history, path)

    def evaluate(self, history) -> dict:
        """The last epoch's validation terms and SI-SDR improvements (``npvae evaluate``
        gives the full BSS Eval scores)."""
        return {f"final_{k}": float(v[-1]) for k, v in history.items() if k.startswith("val_")}

    def save(self, config, history, metrics):
        save_separator(self.run_dir / MODEL_FILE, self.sep, config)
        examples = {"sample_rate": self.stft_cfg.sample_rate, "clip0": example(self.sep, self.shown,
                                                                                self.cfg.snippet_seconds)}
        save_music_results(self.run_dir / RESULTS_FILE, self.sep, config, history, metrics, examples)


__all__ = ["MusicConfig", "MusicTask", "check_clip_lengths"]

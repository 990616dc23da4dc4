"""Part I end to end: train a separation VAE on digit + fashion mixtures, show it, score it.

The loss is :class:`~.objective.SeparationObjective`; figures are :mod:`npvae.plotting`.

:func:`train` is what ``scripts/train_mnist.py`` runs. A run directory holds::

    checkpoint.npz      parameters, Adam moments, RNG state, history (atomic, every epoch)
    config.json         the settings
    history.json        per-epoch loss terms on training and validation data
    metrics.json        MSE / PSNR / SSIM per source on the fixed evaluation pairs
    model.h5            the model (HDF5 / MATLAB v7.3), loads with npvae.load_model
    results.h5          model, config, history, metrics and example images
    figures/epoch_XXX.png   the display grid every --display-every epochs
    grid.png, loss_curves.png
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ... import kernels

from ... import distributed
from ..._version import __version__
from ...checkpoint import atomic_write_text
from ...data.mixtures import MixtureData, load_mixture_data
from ...data.mnist import find_files, load_images
from ...fileguard import prepare_run_dir, unique_run_dir
from ...io import MODEL_FILE, RESULTS_FILE, save_model, save_results
from ...metrics.image import psnr, separation_report
from ...models.mnist import MODELS, OUTPUTS, RULES, build_model
from ...optim import Adam
from ...plotting import GRID_ROWS, save_grid, save_loss_curves
from ...schedules import SCHEDULES, schedule_lr
from ...training import Trainer
from ...validate import check_settings
from ...vae import KLWeight
from .objective import RECON_LOSSES, SeparationObjective

MODEL_DEFAULTS = {  # per-model architecture defaults (the flags override them)
    "dense": {"hidden": (512, 256), "output": "sources"},
    "conv": {"channels": (32, 64), "hidden": 256, "output": "sources"},
    "unet": {"channels": (16, 32, 64), "output": "split", "blocks": 1},
}
# Default epochs per model: about 10 minutes on 2 cores for dense and conv, 20 for the U-Net.
DEFAULT_EPOCHS = {"dense": 50, "conv": 15, "unet": 10}


@dataclass
class TrainConfig:
    """Settings of one Part I run (each has a flag of the same name in ``scripts/train_mnist.py``).

    hidden, channels, output, blocks : architecture (None: the model's default,
    :data:`MODEL_DEFAULTS`); blocks (U-Net only) is the number of 3x3 convolutions per level.
    loss, beta, warmup, mix_weight, sample : the objective (see :mod:`.objective`); warmup is
    the epochs over which beta ramps up from 0; sample False takes z = mu in training too.
    epochs : None for the model's default (:data:`DEFAULT_EPOCHS`). train_limit,
    eval_limit : subsets for quick runs. n_examples : evaluation pairs in results.h5.
    """
    model: str = "dense"
    latent_dim: int = 32
    hidden: tuple | None = None
    channels: tuple | None = None
    output: str | None = None
    blocks: int | None = None
    rule: str = "average"
    loss: str = "bce"
    beta: float = 0.5
    warmup: float = 5.0
    mix_weight: float = 1.0
    sample: bool = True
    lr: float = 1e-3
    lr_schedule: str = "constant"  # "cosine": constant for 60% of the epochs, then cosine down to lr / 10
    batch_size: int = 128
    epochs: int | None = None
    seed: int = 0
    display_every: int = 5
    data_dir: str | None = None
    out: str | None = None
    train_limit: int | None = None
    eval_limit: int | None = None
    n_examples: int = 16
    show: bool = False
    progress: bool = True

    def __post_init__(self):
        if not isinstance(self.model, str) or self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}: choose one of {sorted(MODELS)}")
        check_settings(self, positive_int=("latent_dim", "batch_size", "epochs", "display_every", "train_limit",
                                           "eval_limit", "n_examples", "hidden", "channels", "blocks"),
                       nonneg_int=("seed",), positive=("lr",), nonneg=("beta", "warmup", "mix_weight"),
                       choices={"rule": RULES, "loss": RECON_LOSSES, "output": OUTPUTS, "lr_schedule": SCHEDULES},
                       optional=("epochs", "train_limit", "eval_limit", "hidden", "channels", "output", "blocks"))
        if self.blocks is not None and self.model != "unet":
            raise ValueError(f"blocks (3x3 convolutions per level) is a U-Net setting; the {self.model} model has "
                             "none: drop --blocks or use --model unet")
        for key in ("hidden", "channels"):
            if getattr(self, key) is not None:
                setattr(self, key, tuple(int(v) for v in getattr(self, key)))

    def model_kwargs(self) -> dict:
        kw = dict(MODEL_DEFAULTS[self.model])
        for key in ("hidden", "channels", "output", "blocks"):
            value = getattr(self, key)
            if value is not None and key in kw:
                kw[key] = value
        if self.model == "conv" and isinstance(kw.get("hidden"), (list, tuple)):
            kw["hidden"] = int(kw["hidden"][0])
        return {**kw, "latent_dim": self.latent_dim, "rule": self.rule}


def default_out(cfg: TrainConfig) -> Path:
    """A new, unique run folder ``runs/mnist-<model>-<time>[-k]`` (created)."""
    return unique_run_dir(Path("runs") / f"mnist-{cfg.model}")


def load_data(cfg: TrainConfig) -> MixtureData:
    """The mixture data; ``train_limit``/``eval_limit`` take a subset (quick runs, tests)."""
    if cfg.train_limit is None and cfg.eval_limit is None:
        return load_mixture_data(cfg.data_dir, rule=cfg.rule, seed=cfg.seed)
    n_val = 5000 if cfg.train_limit is None else max(64, min(5000, cfg.train_limit // 4))
    n_eval = 10000 if cfg.eval_limit is None else int(cfg.eval_limit)
    arrays = {}
    for name in ("mnist", "fashion-mnist"):
        train, _ = load_images(name, "train", cfg.data_dir)
        test, _ = load_images(name, "test", cfg.data_dir)
        if cfg.train_limit is not None:
            train = np.concatenate([train[:cfg.train_limit], train[-n_val:]])
        arrays[name] = (train, test[:n_eval])
    return MixtureData(arrays["mnist"][0], arrays["fashion-mnist"][0], arrays["mnist"][1],
                       arrays["fashion-mnist"][1], rule=cfg.rule, seed=cfg.seed, n_validation=n_val,
                       n_eval=n_eval)


# ----------------------------------------------------------------------------- scoring

def evaluate(model, mixture, digit, fashion, batch_size: int = 500) -> dict:
    """Per-source MSE / PSNR (dB) / SSIM of ``model.separate`` on the given pairs."""
    d_hat, f_hat, _ = model.separate(mixture, batch_size=batch_size)
    return separation_report(d_hat, f_hat, digit, fashion)


def validation_terms(objective: SeparationObjective, mixture, digit, fashion, beta: float) -> dict:
    """Loss terms (posterior mean, no sampling) and mean PSNR on the validation pairs."""
    sums, n = {}, len(mixture)
    psnrs = []
    for i in range(0, n, 500):
        sl = slice(i, i + 500)
        terms = objective.terms(mixture[sl], digit[sl], fashion[sl], beta=beta, sample=False, backward=False)
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + v * len(mixture[sl])
        y = objective.model.forward(mixture[sl], sample=False)
        d_hat, f_hat = np.ascontiguousarray(y[:, 0]), np.ascontiguousarray(y[:, 1])
        psnrs.append((psnr(d_hat, digit[sl]) + psnr(f_hat, fashion[sl])) / 2)
    out = {k: v / n for k, v in sums.items()}
    out["psnr"] = float(np.mean(np.concatenate(psnrs)))
    return out


# ----------------------------------------------------------------------------- pictures

def example_images(model, mixture, digit, fashion) -> dict:
    """The grid rows for a few pairs: inputs, truths and the model's estimates."""
    d_hat, f_hat, m_hat = model.separate(mixture)
    return {"mixture": mixture, "digit": digit, "fashion": fashion, "digit_hat": d_hat, "fashion_hat": f_hat,
            "mixture_hat": m_hat}


# ----------------------------------------------------------------------------- the run

def format_metrics(metrics: dict) -> str:
    lines = [f"{'':10s}{'MSE':>10s}{'PSNR (dB)':>11s}{'SSIM':>8s}"]
    for src in ("digit", "fashion", "mean"):
        lines.append(f"{src:10s}{metrics[src + '_mse']:10.5f}{metrics[src + '_psnr']:11.2f}"
                     f"{metrics[src + '_ssim']:8.4f}")
    return "\n".join(lines)


def data_folders(data_dir=None) -> dict:
    """The folders the two datasets are read from (for the run's record)."""
    out = {}
    for name in ("mnist", "fashion-mnist"):
        found = find_files(name, "train", data_dir)
        out[name] = str(found[0].parent.resolve()) if found else None
    return out


def train(cfg: TrainConfig, resume: bool = False, log=print, overwrite: bool = False) -> dict:
    """Train, display every ``cfg.display_every`` epochs, evaluate and save; returns the metrics.

    A new run refuses an ``out`` folder that holds files unless ``overwrite``; with
    ``resume`` the run must have been started with the same settings (see
    :data:`npvae.training.RESUMABLE_SETTINGS`).
    """
    schedule_lr(cfg.lr_schedule, 0, 1, cfg.lr)      # an unknown schedule fails before any work
    comm = distributed.world()
    comm.check_batch_size(cfg.batch_size)
    if not comm.is_root:
        log = lambda text: None  # noqa: E731 - rank 0 alone speaks
    if resume and not cfg.out:
        raise ValueError("--resume needs --out RUN_DIR (the run to continue)")
    run_dir = None
    if comm.is_root:      # rank 0 checks (or creates) the one run folder; the others use it
        run_dir = prepare_run_dir(cfg.out, resume=resume, overwrite=overwrite) if cfg.out else default_out(cfg)
    run_dir = Path(comm.bcast_object(run_dir))
    cfg = dataclasses.replace(cfg, out=str(run_dir), epochs=cfg.epochs or DEFAULT_EPOCHS.get(cfg.model, 20))
    model = build_model(cfg.model, rng=np.random.default_rng([cfg.seed, 0]), **cfg.model_kwargs())
    data = load_data(cfg)
    folders = data_folders(cfg.data_dir)
    log("data: " + ", ".join(f"{k} from {v}" for k, v in folders.items()))
    run_dir.mkdir(parents=True, exist_ok=True)
    optimizer = Adam(model, lr=cfg.lr)
    config = {**dataclasses.asdict(cfg), "backend": kernels.backend(), "npvae_version": __version__,
              "data_folder": folders}
    trainer = Trainer(model, optimizer, np.random.default_rng([cfg.seed, 1]), run_dir, config=config,
                      display_every=cfg.display_every, progress=cfg.progress, log=log, comm=comm)
    if resume:
        if trainer.resume():
            log(f"resumed from {trainer.checkpoint_path} after epoch {trainer.epoch}")
        else:
            log(f"no checkpoint in {run_dir}; starting afresh")
    if comm.is_root:
        atomic_write_text(run_dir / "config.json", json.dumps(config, indent=2, default=str))
    log(f"{type(model).__name__}: {model.num_parameters():,} parameters, backend {kernels.backend()}, "
        f"{data.n_train:,} training pairs an epoch, run directory {run_dir}")
    if comm.parallel:
        log(f"data-parallel over {comm.size} MPI ranks, {cfg.batch_size // comm.size}+ pairs of each batch "
            f"of {cfg.batch_size} per rank, {comm.threads} thread(s) each")
    # the latent's noise continues with the run (and its checkpoints); each MPI rank draws its own share
    model.rng = comm.noise(trainer.rng)    # trainer.rng itself when training alone
    objective = SeparationObjective(model, cfg.loss, cfg.mix_weight)
    kl_weight = KLWeight(cfg.beta, cfg.warmup)
    val = data.validation_set()
    shown = tuple(a[:8] for a in val)

    def step(batch, epoch):
        mixture, digit, fashion = batch
        optimizer.lr = schedule_lr(cfg.lr_schedule, epoch, cfg.epochs, cfg.lr)
        return objective.terms(mixture, digit, fashion, beta=kl_weight(epoch), sample=cfg.sample)

    def validate():
        terms = validation_terms(objective, *val, beta=kl_weight(trainer.epoch))
        return {**terms, "beta": kl_weight(trainer.epoch), "lr": optimizer.lr}

    def on_display(epoch, history):
        path = save_grid(run_dir / "figures" / f"epoch_{epoch:03d}.png", example_images(model, *shown),
                         title=f"{cfg.model} VAE, epoch {epoch} (validation pairs)", show=cfg.show)
        save_loss_curves(run_dir / "loss_curves.png", history)
        log(f"           figure: {path}")

    start = time.perf_counter()
    trainer.fit(cfg.epochs, batches=lambda rng: data.batches(rng, cfg.batch_size, shard=comm.shard),
                n_batches=data.n_batches(cfg.batch_size), step=step, validate=validate, on_display=on_display)
    train_seconds = time.perf_counter() - start
    if not comm.is_root:   # rank 0 evaluates and writes the files
        return {"metrics": None, "run_dir": run_dir, "history": trainer.history}

    mixture, digit, fashion = data.evaluation_set()
    metrics = evaluate(model, mixture, digit, fashion)
    baseline = separation_report(mixture, mixture, digit, fashion)
    metrics.update({f"mixture_as_estimate_{k}": v for k, v in baseline.items() if k.startswith("mean_")})
    metrics["n_eval_pairs"] = int(len(mixture))
    metrics["train_seconds_this_session"] = float(train_seconds)
    metrics["train_seconds_total"] = float(sum(trainer.history.get("seconds", [])))
    log(f"test metrics on {len(mixture):,} fixed evaluation pairs:\n{format_metrics(metrics)}")
    log(f"(mixture as the estimate: mean PSNR {metrics['mixture_as_estimate_mean_psnr']:.2f} dB)")

    k = min(cfg.n_examples, len(mixture))
    examples = example_images(model, mixture[:k], digit[:k], fashion[:k])
    save_grid(run_dir / "grid.png", {r: examples[r][:8] for r in GRID_ROWS},
              title=f"{cfg.model} VAE on evaluation pairs: mean PSNR {metrics['mean_psnr']:.1f} dB")
    save_loss_curves(run_dir / "loss_curves.png", trainer.history)
    atomic_write_text(run_dir / "history.json", json.dumps(trainer.history, indent=1))
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2))
    save_model(run_dir / MODEL_FILE, model, config)
    save_results(run_dir / RESULTS_FILE, "mnist_results", model, config, trainer.history, metrics,
                 {k: v.astype(np.float32) for k, v in examples.items()})
    log(f"wrote {run_dir / MODEL_FILE}, {run_dir / RESULTS_FILE}, {run_dir / 'grid.png'}, "
        f"{run_dir / 'loss_curves.png'}")
    return {"metrics": metrics, "run_dir": run_dir, "history": trainer.history}


__all__ = ["TrainConfig", "train", "evaluate", "load_data"]

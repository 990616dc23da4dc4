"""Part I, blind: train on mixtures alone, score with the best permutation.

:func:`train` is what ``scripts/train_blind.py`` runs. The training step sees only
batches of :class:`npvae.data.blind.MixtureOnlyData` (mixtures); validation and
test sources are used to score the model (per-mixture Hungarian matching on MSE),
never to train or select it. A run directory holds::

    checkpoint.npz      parameters, Adam moments, RNG state, history (atomic, every epoch)
    config.json         the settings
    history.json        per-epoch loss terms (training and validation) and validation PSNR
    metrics.json        permutation-invariant MSE / PSNR / SSIM per source on the test pairs
    model.h5            the model (HDF5 / MATLAB v7.3), loads with npvae.load_model
    results.h5          model, config, history, metrics and example images (kind blind_results)
    figures/epoch_XXX.png   the display grid every --display-every epochs
    grid.png, loss_curves.png, latent_groups.png
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import kernels

from .._version import __version__
from ..checkpoint import atomic_write_text
from ..data.blind import SOURCE_NAMES, TASKS, load_blind_data
from ..fileguard import prepare_run_dir, unique_run_dir
from ..io import MODEL_FILE, RESULTS_FILE, save_model, save_results
from ..metrics.image import separation_report
from ..metrics.permutation import best_permutation, matched, permutation_report
from ..models.blind import BlindSeparationVAE
from ..optim import Adam
from ..training import Trainer
from ..validate import check_settings
from .blind_objective import RECON, RULES, BlindLossConfig, BlindObjective, consistent_sources, remix
from ..plotting import pyplot, save_loss_curves

RESULTS_KIND = "blind_results"


@dataclass
class BlindTrainConfig:
    """Settings of one blind Part I run (each field is a flag of ``scripts/train_blind.py``)."""
    task: str = "mnist-fashion"      # mnist-fashion or mnist-mnist
    rule: str = "average"            # mixing rule: average or sum (clipped)
    groups: int = 2                  # K latent groups (sources assumed)
    latent_dim: int = 20             # size of each group's code
    hidden: tuple = (512, 256)       # encoder widths (the decoder mirrors them)
    recon: str = "l1"                # l1 (Laplace) or mse (Gaussian) on the mixture
    beta: float = 0.5                # KL weight
    warmup: float = 5.0              # epochs over which beta ramps up from 0
    lr: float = 1e-3
    batch_size: int = 128
    epochs: int = 60
    seed: int = 0
    display_every: int = 5
    data_dir: str | None = None
    out: str | None = None
    train_limit: int | None = None   # training images per set (quick runs)
    eval_limit: int | None = None    # evaluation pairs (default 10,000)
    n_examples: int = 16
    progress: bool = True

    def __post_init__(self):
        check_settings(self, positive_int=("groups", "latent_dim", "hidden", "batch_size", "epochs", "display_every",
                                           "n_examples", "train_limit", "eval_limit"),
                       nonneg_int=("seed",), positive=("lr",), nonneg=("beta", "warmup"),
                       choices={"task": sorted(TASKS), "rule": RULES, "recon": RECON},
                       optional=("train_limit", "eval_limit"))
        if self.groups > 8:
            raise ValueError(f"--groups must be between 1 and 8, got {self.groups}")
        self.hidden = tuple(int(h) for h in self.hidden)
        self.loss_config()  # validates rule, recon, beta, warmup

    def loss_config(self) -> BlindLossConfig:
        return BlindLossConfig(rule=self.rule, recon=self.recon, beta=self.beta, warmup=self.warmup)


def default_out(cfg: BlindTrainConfig) -> Path:
    """A new, unique run folder ``runs/blind-<task>-<rule>-K<groups>-<time>[-k]`` (created)."""
    return unique_run_dir(Path("runs") / f"blind-{cfg.task}-{cfg.rule}-K{cfg.groups}")


# ----------------------------------------------------------------------------- scoring

def score(model: BlindSeparationVAE, mixture, sources_a, sources_b, rule: str, names) -> dict:
    """Permutation-invariant scores of the decoded groups (``*``) and of the masked,
    mixture-consistent estimates (``masked_*``) against the true sources."""
    y = model.separate(mixture)
    truth = np.stack([sources_a, sources_b], axis=1)
    out = permutation_report(y, truth, names)
    masked = permutation_report(consistent_sources(y, mixture, rule), truth, names)
    out.update({f"masked_{k}": v for k, v in masked.items()})
    return out


def validation_terms(objective: BlindObjective, mixture, sources_a, sources_b, epoch: float) -> dict:
    """Loss terms (posterior mean) on the validation mixtures, plus the permutation-invariant
    mean PSNR of the decoded groups (a score for the curves, not used for training)."""
    sums, n, ys = {}, len(mixture), []
    for i in range(0, n, 500):
        sl = slice(i, i + 500)
        terms = objective.terms(mixture[sl], epoch=epoch, sample=False, backward=False)
        ys.append(objective.model._y.copy())
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + v * len(mixture[sl])
    out = {k: v / n for k, v in sums.items()}
    rep = permutation_report(np.concatenate(ys), np.stack([sources_a, sources_b], axis=1), ("a", "b"))
    out["psnr"] = rep["mean_psnr"]
    return out


# ----------------------------------------------------------------------------- pictures

def example_rows(model, mixture, sources_a, sources_b, rule: str, names) -> dict:
    """Grid rows: the mixture, the two true sources, the K decoded groups as the model
    orders them, the remixed groups, and the groups matched to the sources."""
    y = model.separate(mixture)
    truth = np.stack([sources_a, sources_b], axis=1)
    best = matched(y, best_permutation(y, truth))
    rows = {"mixture": mixture, names[0]: sources_a, names[1]: sources_b}
    rows.update({f"group_{k}": y[:, k] for k in range(y.shape[1])})
    rows["remix"] = np.clip(remix(y, rule), 0, 1)
    rows.update({f"{names[j]}_hat": best[:, j] for j in range(2)})
    return rows


def montage(rows, pad: int = 2) -> np.ndarray:
    """Rows of images, a list of (C, H, W) arrays, tiled into one (R (H + pad), C (W + pad)) picture
    on a mid-grey background (so black images still show their frames)."""
    c = max(len(r) for r in rows)
    h, w = rows[0].shape[1:]
    out = np.full((len(rows) * (h + pad) + pad, c * (w + pad) + pad), 0.5, np.float32)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            out[y:y + h, x:x + w] = np.clip(img, 0, 1)
    return out


def _save_montage(path, rows: list, labels: list, title: str, cell: float = 0.55) -> Path:
    """One image of labelled rows (one axes: far faster to draw than a grid of subplots)."""
    plt = pyplot()
    picture = montage(rows)
    c = max(len(r) for r in rows)
    fig = plt.figure(figsize=(cell * c + 1.7, cell * len(rows) + 0.5))
    ax = fig.add_axes([1.6 / (cell * c + 1.7), 0.02, 1 - 1.65 / (cell * c + 1.7), 0.9])
    ax.imshow(picture, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    h = rows[0].shape[1] + 2
    ax.set_yticks([2 + h * i + h / 2 - 1 for i in range(len(rows))], labels, fontsize=7)
    ax.set_xticks([])
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def save_blind_grid(path, rows: dict, title: str = "") -> Path:
    """One row per entry of ``rows`` ((C, 28, 28) images each), labelled by its key."""
    return _save_montage(path, list(rows.values()), [k.replace("_", " ") for k in rows], title)


def save_latent_traversal(path, model: BlindSeparationVAE, mixture, n_steps: int = 9, n_dims: int = 6,
                          title: str = "") -> Path:
    """What a latent group encodes: the shared decoder along each of the ``n_dims``
    most used latent dimensions (largest KL), from -2.5 to 2.5, the others held at the
    mean code of group 0 on ``mixture``; and decodes of prior samples."""
    model.separate(mixture)                     # fills mu, logvar (posterior means)
    mu, logvar = model.mu, model.logvar
    kl = (-0.5 * (1 + logvar - mu ** 2 - np.exp(logvar))).mean(axis=(0, 1))
    dims = np.argsort(kl)[::-1][:n_dims]
    base = mu[:, 0].mean(axis=0)
    steps = np.linspace(-2.5, 2.5, n_steps)
    codes = np.repeat(base[None, None], len(dims), 0).repeat(n_steps, 1)
    for r, d in enumerate(dims):
        codes[r, :, d] = steps
    trav = model.decode(codes)
    prior = model.decode(np.random.default_rng(0).standard_normal((2, n_steps, model.latent_dim)))
    labels = [f"z[{d}] ({kl[d]:.1f} nats)" for d in dims] + ["prior sample", "prior sample"]
    return _save_montage(path, list(trav) + list(prior), labels, title)


# ----------------------------------------------------------------------------- the run

def format_metrics(metrics: dict, names) -> str:
    lines = [f"{'':22s}{'MSE':>10s}{'PSNR (dB)':>11s}{'SSIM':>8s}"]
    for prefix, label in (("", "decoded"), ("masked_", "masked")):
        for src in (*names, "mean"):
            k = prefix + src
            lines.append(f"{label + ' ' + src:22s}{metrics[k + '_mse']:10.5f}{metrics[k + '_psnr']:11.2f}"
                         f"{metrics[k + '_ssim']:8.4f}")
    return "\n".join(lines)


def train(cfg: BlindTrainConfig, resume: bool = False, overwrite: bool = False, log=print) -> dict:
    """Train on mixtures only, display every ``cfg.display_every`` epochs, score and save.

    ``cfg.out`` None: a new folder (:func:`default_out`). A new run refuses an ``out``
    folder that holds files unless ``overwrite``; ``resume`` continues the run there
    with the same settings (:func:`npvae.fileguard.prepare_run_dir`).
    """
    if resume and not cfg.out:
        raise ValueError("--resume needs --out RUN_DIR (the run to continue)")
    run_dir = prepare_run_dir(cfg.out, resume=resume, overwrite=overwrite) if cfg.out else default_out(cfg)
    cfg = dataclasses.replace(cfg, out=str(run_dir))
    run_dir.mkdir(parents=True, exist_ok=True)
    names = SOURCE_NAMES[cfg.task]
    train_data, scoring = load_blind_data(cfg.task, cfg.data_dir, cfg.rule, cfg.seed, cfg.train_limit,
                                          cfg.eval_limit)
    model = BlindSeparationVAE(cfg.groups, cfg.latent_dim, cfg.hidden, rng=np.random.default_rng([cfg.seed, 0]))
    objective = BlindObjective(model, cfg.loss_config())
    optimizer = Adam(model, lr=cfg.lr)
    config = {**dataclasses.asdict(cfg), "mode": "blind", "backend": kernels.backend(),
              "npvae_version": __version__}
    trainer = Trainer(model, optimizer, np.random.default_rng([cfg.seed, 1]), run_dir, config=config,
                      display_every=cfg.display_every, progress=cfg.progress, log=log)
    if resume:
        if trainer.resume():
            log(f"resumed from {trainer.checkpoint_path} after epoch {trainer.epoch}")
        else:
            log(f"no checkpoint in {run_dir}; starting afresh")
    atomic_write_text(run_dir / "config.json", json.dumps(config, indent=2, default=str))
    log(f"BlindSeparationVAE (K={cfg.groups}): {model.num_parameters():,} parameters, backend "
        f"{kernels.backend()}, {len(train_data):,} training mixtures (no sources), run directory {run_dir}")

    val = scoring.validation_set()
    shown = tuple(a[:8] for a in val)

    def step(mixtures, epoch):
        return objective.terms(mixtures, epoch, rng=trainer.rng)

    def validate():
        return {**validation_terms(objective, *val, epoch=trainer.epoch), "beta": objective.kl_weight(trainer.epoch)}

    def on_display(epoch, history):
        path = save_blind_grid(run_dir / "figures" / f"epoch_{epoch:03d}.png",
                               example_rows(model, *shown, cfg.rule, names),
                               title=f"blind VAE K={cfg.groups}, epoch {epoch} (validation mixtures)")
        save_loss_curves(run_dir / "loss_curves.png", history)
        log(f"           figure: {path}")

    start = time.perf_counter()
    trainer.fit(cfg.epochs, batches=lambda rng: train_data.batches(rng, cfg.batch_size),
                n_batches=train_data.n_batches(cfg.batch_size), step=step, validate=validate,
                on_display=on_display)
    train_seconds = time.perf_counter() - start

    mixture, src_a, src_b = scoring.evaluation_set()
    metrics = score(model, mixture, src_a, src_b, cfg.rule, names)
    floor = separation_report(mixture, mixture, src_a, src_b)
    metrics["mixture_as_estimate_mean_psnr"] = floor["mean_psnr"]
    metrics["mixture_as_estimate_mean_ssim"] = floor["mean_ssim"]
    metrics["n_eval_pairs"] = int(len(mixture))
    metrics["train_seconds_this_session"] = float(train_seconds)
    metrics["train_seconds_total"] = float(sum(trainer.history.get("seconds", [])))
    log(f"test metrics on {len(mixture):,} fixed evaluation pairs, best permutation per mixture:\n"
        f"{format_metrics(metrics, names)}")
    log(f"(mixture as the estimate: mean PSNR {metrics['mixture_as_estimate_mean_psnr']:.2f} dB; "
        f"group agreement {metrics['group_agreement']:.3f})")

    k = min(cfg.n_examples, len(mixture))
    rows = example_rows(model, mixture[:k], src_a[:k], src_b[:k], cfg.rule, names)
    save_blind_grid(run_dir / "grid.png", {r: v[:8] for r, v in rows.items()},
                    title=f"blind VAE K={cfg.groups} on test pairs: mean PSNR {metrics['mean_psnr']:.1f} dB "
                          f"(best permutation)")
    save_loss_curves(run_dir / "loss_curves.png", trainer.history)
    save_latent_traversal(run_dir / "latent_groups.png", model, mixture[:500],
                          title="shared decoder along the most used latent dimensions")
    atomic_write_text(run_dir / "history.json", json.dumps(trainer.history, indent=1))
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2))
    save_model(run_dir / MODEL_FILE, model, config)
    save_results(run_dir / RESULTS_FILE, RESULTS_KIND, model, config, trainer.history, metrics,
                 {key: np.ascontiguousarray(v, dtype=np.float32) for key, v in rows.items()})
    log(f"wrote {run_dir / MODEL_FILE}, {run_dir / RESULTS_FILE}, {run_dir / 'grid.png'}, "
        f"{run_dir / 'loss_curves.png'}, {run_dir / 'latent_groups.png'}")
    return {"metrics": metrics, "run_dir": run_dir, "history": trainer.history}


__all__ = ["BlindTrainConfig", "train", "score", "montage", "save_blind_grid", "save_latent_traversal"]

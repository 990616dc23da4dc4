"""Images, blind: train on mixtures alone, score with the best permutation.

``npvae train blind-mnist`` runs :class:`BlindMnistTask` through the engine
(:func:`npvae.engine.train`). The training step sees only batches of
:class:`npvae.data.blind.MixtureOnlyData` (mixtures); validation and test sources are
used to score the model (per-mixture Hungarian matching on MSE), never to train or
select it. Besides the engine's records (``metrics.json``: permutation-invariant MSE /
PSNR / SSIM per source on the test pairs; ``results.h5`` of kind ``blind_results``) the
run folder gets ``grid.png``, ``latent_groups.png`` and a grid every
``display_every`` epochs in ``figures/``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...data.blind import SOURCE_NAMES, TASKS, load_blind_data
from ...engine.task import Shown, Task
from ...files.model_file import MODEL_FILE, RESULTS_FILE, save_model, save_results
from ...metrics.image import format_report, separation_report
from ...metrics.permutation import best_permutation, matched, permutation_report
from ...models.blind import BlindSeparationVAE
from ...inputs import check_settings
from ..blind_objective import RECON, BlindConfig, BlindObjective, consistent_sources, remix
from ...plotting import pyplot, save_loss_curves

RESULTS_KIND = "blind_results"


@dataclass
class BlindMnistConfig(BlindConfig):
    """Settings of a blind images run (each a flag of ``npvae train blind-mnist``).

    pair : the pair of image sets mixed ("mnist-fashion" or "mnist-mnist"). rule : how
    they mix ("average" or the clipped "sum"). groups : K latent groups (sources
    assumed), latent_dim : each group's code size, hidden : the encoder's widths (the
    decoder mirrors them). loss : "l1" (Laplace) or "mse" (Gaussian) on the mixture.
    n_examples : test pairs kept in results.h5.
    """
    pair: str = "mnist-fashion"
    rule: str = "average"
    n_examples: int = 16
    epochs: int = 60
    batch_size: int = 128
    kl_warmup: float = 5.0

    def __post_init__(self):
        super().__post_init__()
        check_settings(self, counts=("n_examples",), choices={"pair": sorted(TASKS), "rule": ("average", "sum")})
        if not 2 <= self.groups <= 8:
            raise ValueError(f"--groups must be between 2 and 8 (each of the two mixed images needs a group of "
                             f"its own), got {self.groups}")

    def mixing_rule(self) -> str:
        return self.rule


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


def validation_terms(objective: BlindObjective, mixture, sources_a, sources_b, beta: float) -> dict:
    """Loss terms (posterior mean) on the validation mixtures, plus the permutation-invariant
    mean PSNR of the decoded groups (a score for the curves, not used for training)."""
    sums, n, ys = {}, len(mixture), []
    for i in range(0, n, 500):
        sl = slice(i, i + 500)
        terms = objective.terms(mixture[sl], beta=beta, sample=False, backward=False)
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
    return format_report(metrics, [(f"{label} {src}", prefix + src) for prefix, label in
                                   (("", "decoded"), ("masked_", "masked")) for src in (*names, "mean")])


class BlindMnistTask(Task):
    """Blind images: K latent groups through one shared decoder must remix to the mixture."""
    name = "blind-mnist"
    resumable = frozenset({"n_examples"})   # what is shown and kept as examples, not what is learnt
    renamed_flags = {"--task": "--pair"}   # the image pair was once --task, another word for the training task
    Config = BlindMnistConfig
    summary = "Images from mixtures alone: K latent groups that remix to the mixture"
    figures = ("grid.png", "latent_groups.png")
    help = {"pair": "which image sets are mixed", "rule": "mixing rule", "groups": "K latent groups decoded by one "
            "shared decoder", "latent_dim": "size of each group's code", "hidden": "encoder widths, e.g. 512 256",
            "loss": "reconstruction loss on the mixture: l1 (Laplace) or mse (Gaussian)",
            "n_examples": "test pairs kept as examples in results.h5",
            "train_limit": "training images per set (quick runs)", "eval_limit": "test pairs scored (default 10000)",
            "data_dir": "folder holding mnist/ and fashion-mnist/ (else $NPVAE_DATA)"}
    choices = {"pair": tuple(sorted(TASKS)), "rule": ("average", "sum"), "loss": RECON}

    @classmethod
    def run_prefix(cls, cfg) -> str:
        return f"blind-{cfg.pair}-{cfg.rule}-K{cfg.groups}"

    @classmethod
    def planned_model(cls, cfg):
        return ({"type": "BlindSeparationVAE", "n_groups": cfg.groups, "latent_dim": cfg.latent_dim,
                 "hidden": list(cfg.hidden)}, (28, 28), "--groups, --latent-dim, --hidden")

    def setup(self, init_rng, noise_rng, saved_record):
        cfg = self.cfg
        self.names = SOURCE_NAMES[cfg.pair]
        self.train_data, self.scoring = load_blind_data(cfg.pair, cfg.data_dir, cfg.rule, cfg.seed, cfg.train_limit,
                                                        cfg.eval_limit)
        self.model = BlindSeparationVAE(cfg.groups, cfg.latent_dim, cfg.hidden, rng=init_rng)
        self.objective = BlindObjective(self.model, cfg.loss_config())
        self.noise = noise_rng
        self.val = self.scoring.validation_set()
        self.shown = tuple(a[:8] for a in self.val)

    def record(self) -> dict:
        return {"mode": "blind"}

    def describe(self) -> str:
        return (f"BlindSeparationVAE (K={self.cfg.groups}): {self.model.num_parameters():,} parameters, "
                f"{len(self.train_data):,} training mixtures (no sources)")

    def step(self, mixtures, epoch, beta):
        return self.objective.terms(mixtures, beta=beta, rng=self.noise)

    def validate(self, epoch, beta):
        return validation_terms(self.objective, *self.val, beta)

    def display(self, epoch, history):
        path = save_blind_grid(self.run_dir / "figures" / f"epoch_{epoch:03d}.png",
                               example_rows(self.model, *self.shown, self.cfg.rule, self.names),
                               title=f"blind VAE K={self.cfg.groups}, epoch {epoch} (validation mixtures)")
        self.log(f"           figure: {path}")
        return Shown(figures={"validation mixtures": path})

    def evaluate(self, history) -> dict:
        cfg = self.cfg
        mixture, src_a, src_b = self.eval_set = self.scoring.evaluation_set()
        metrics = score(self.model, mixture, src_a, src_b, cfg.rule, self.names)
        floor = separation_report(mixture, mixture, src_a, src_b)
        metrics["mixture_as_estimate_mean_psnr"] = floor["mean_psnr"]
        metrics["mixture_as_estimate_mean_ssim"] = floor["mean_ssim"]
        metrics["n_eval_pairs"] = int(len(mixture))
        self.log(f"test metrics on {len(mixture):,} fixed evaluation pairs, best permutation per mixture:\n"
                 f"{format_metrics(metrics, self.names)}")
        self.log(f"(mixture as the estimate: mean PSNR {metrics['mixture_as_estimate_mean_psnr']:.2f} dB; "
                 f"group agreement {metrics['group_agreement']:.3f})")
        return metrics

    def save(self, config, history, metrics):
        cfg, run_dir = self.cfg, self.run_dir
        mixture, src_a, src_b = self.eval_set
        k = min(cfg.n_examples, len(mixture))
        rows = example_rows(self.model, mixture[:k], src_a[:k], src_b[:k], cfg.rule, self.names)
        save_blind_grid(run_dir / "grid.png", {r: v[:8] for r, v in rows.items()},
                        title=f"blind VAE K={cfg.groups} on test pairs: mean PSNR {metrics['mean_psnr']:.1f} dB "
                              f"(best permutation)")
        save_latent_traversal(run_dir / "latent_groups.png", self.model, mixture[:500],
                              title="shared decoder along the most used latent dimensions")
        save_model(run_dir / MODEL_FILE, self.model, config)
        save_results(run_dir / RESULTS_FILE, RESULTS_KIND, self.model, config, history, metrics,
                     {key: np.ascontiguousarray(v, dtype=np.float32) for key, v in rows.items()})


__all__ = ["BlindMnistConfig", "BlindMnistTask", "score", "montage", "save_blind_grid", "save_latent_traversal"]

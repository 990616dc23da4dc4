"""Images as a training task: MNIST digit + Fashion-MNIST item mixtures in, both images out.

``npvae train mnist`` (and ``python scripts/train_mnist.py``) runs :class:`MnistTask`
through the engine (:func:`npvae.engine.train`). Besides the engine's records the run
folder gets ``grid.png`` (evaluation pairs, the model's estimates) and a grid of
validation pairs in ``figures/epoch_XXX.png`` every ``display_every`` epochs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...data.mixtures import MixtureData, load_mixture_data
from ...data.mnist import find_files, load_images
from ...engine.config import RunConfig
from ...engine.task import Shown, Task
from ...files.model_file import MODEL_FILE, RESULTS_FILE, save_model, save_results
from ...metrics.image import format_report, psnr, separation_report
from ...models.mnist import MODELS, OUTPUTS, RULES, build_model
from ...models.options import DOWNS, NORMS
from ...plotting import GRID_ROWS, save_grid
from ...inputs import check_settings
from .objective import RECON_LOSSES, SeparationObjective

MODEL_DEFAULTS = {  # per-model architecture defaults (the flags override them)
    "dense": {"hidden": (512, 256), "output": "sources"},
    "conv": {"channels": (32, 64), "hidden": 256, "output": "sources"},
    "unet": {"channels": (16, 32, 64), "output": "split", "blocks": 1},
    "vae": {"channels": (24, 48, 96), "output": "sources", "blocks": 1},
}
# Default epochs per model: about 10 minutes on 2 cores for dense and conv, 20 for the U-Net.
DEFAULT_EPOCHS = {"dense": 50, "conv": 15, "unet": 10, "vae": 10}
# How many numbers --channels / --hidden take, per model.
N_CHANNELS = {"conv": 2, "unet": 3, "vae": 3}


@dataclass
class MnistConfig(RunConfig):
    """Settings of an image run (each a flag of ``npvae train mnist``).

    model : "dense", "conv", "unet" or "vae" (a latent map, no skips). hidden, channels,
    output, blocks : architecture (None: the model's default, :data:`MODEL_DEFAULTS`);
    blocks (unet and vae) is the number of 3x3 convolutions per level; channels of the
    unet take 2 to 5 levels. norm, down, dropout, residual : the unet's options
    (:class:`~npvae.models.mnist.UNetSeparationVAE`): a BatchNorm or GroupNorm after
    every convolution, max or average pooling instead of strided convolutions, dropout
    in the decoder, residual levels; the vae model takes norm too. latent_dim : the
    latent's size (dense, conv, unet) or channels of its 7x7 map (vae). rule : how the two images mix. loss, mix_weight,
    sample : the objective (:mod:`.objective`); sample False takes z = mu in training
    too. epochs : None for the model's default (:data:`DEFAULT_EPOCHS`). n_examples :
    evaluation pairs kept in results.h5. show : open the figures on screen too.
    """
    model: str = "dense"
    latent_dim: int = 32
    hidden: tuple | None = None
    channels: tuple | None = None
    output: str | None = None
    blocks: int | None = None
    norm: str = "none"
    down: str = "stride"
    dropout: float = 0.0
    residual: bool = False
    rule: str = "average"
    loss: str = "bce"
    mix_weight: float = 1.0
    sample: bool = True
    n_examples: int = 16
    show: bool = False
    epochs: int | None = None
    batch_size: int = 128
    kl_warmup: float = 5.0

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.model, str) or self.model not in MODELS:
            raise ValueError(f"--model must be one of {', '.join(MODELS)}, got {self.model!r}")
        check_settings(self, counts=("n_examples",), positive_int=("latent_dim", "hidden", "channels", "blocks"),
                       nonneg=("mix_weight", "dropout"),
                       choices={"rule": RULES, "loss": RECON_LOSSES, "output": OUTPUTS, "norm": NORMS, "down": DOWNS},
                       optional=("hidden", "channels", "output", "blocks"))
        if self.norm != "none" and self.model not in ("unet", "vae"):
            raise ValueError(f"--norm is an option of the unet and vae models; the {self.model} model has none: "
                             "drop --norm or use --model unet or vae")
        unet_options = {"down": "stride", "dropout": 0.0, "residual": False}
        given = [k for k, v in unet_options.items() if getattr(self, k) != v]
        if given and self.model != "unet":
            raise ValueError(f"--{given[0]} is an option of the unet model; the {self.model} model has none: drop "
                             f"--{given[0]} or use --model unet")
        if self.dropout >= 1:
            raise ValueError(f"--dropout is the probability of zeroing a decoder feature, below 1 (0: none), got "
                             f"{self.dropout!r}")
        if self.residual and (self.blocks or 1) < 2:
            raise ValueError("--residual adds each level's first convolution to its last: it needs --blocks 2 or "
                             "more")
        if self.blocks is not None and self.model not in ("unet", "vae"):
            raise ValueError(f"--blocks (3x3 convolutions per level) is a setting of the unet and vae models; the "
                             f"{self.model} model has none: drop --blocks or use --model unet")
        for key in ("hidden", "channels"):
            value = getattr(self, key)
            if value is not None:
                setattr(self, key, tuple(int(v) for v in (value if isinstance(value, (list, tuple)) else [value])))
        if self.channels is not None:
            want = N_CHANNELS.get(self.model)
            if self.model == "vae" and len(self.channels) == 2:    # a 14x14 latent map
                want = 2
            if self.model == "unet" and 2 <= len(self.channels) <= 5:   # levels of 28, 14, 7, 3, 1 pixels
                want = len(self.channels)
            if want is None:
                raise ValueError(f"--channels is a setting of the conv, unet and vae models; the {self.model} model has "
                                 "none: drop --channels or use --hidden")
            if self.model == "unet" and len(self.channels) != want:
                raise ValueError(f"--channels takes 2 to 5 numbers for the unet model (one per level of 28, 14, 7, 3 "
                                 f"and 1 pixels, e.g. 16 32 64), got {len(self.channels)}")
            if len(self.channels) != want:
                raise ValueError(f"--channels takes {want} numbers for the {self.model} model (one per level, e.g. "
                                 f"{' '.join(map(str, MODEL_DEFAULTS[self.model]['channels']))}), got "
                                 f"{len(self.channels)}: {' '.join(map(str, self.channels))}")
        if self.hidden is not None and self.model in ("unet", "vae"):
            raise ValueError(f"--hidden is a setting of the dense and conv models; the {self.model} model has none: "
                             "drop --hidden")
        if self.hidden is not None and self.model == "conv" and len(self.hidden) != 1:
            raise ValueError(f"--hidden takes one number for the conv model, got {len(self.hidden)}")

    def model_kwargs(self) -> dict:
        kw = dict(MODEL_DEFAULTS[self.model])
        for key in ("hidden", "channels", "output", "blocks"):
            value = getattr(self, key)
            if value is not None and key in kw:
                kw[key] = value
        if self.model == "conv" and isinstance(kw.get("hidden"), (list, tuple)):
            kw["hidden"] = int(kw["hidden"][0])
        if self.model == "unet":
            kw.update(norm=self.norm, down=self.down, dropout=self.dropout, residual=self.residual)
        if self.model == "vae" and self.norm != "none":
            kw.update(norm=self.norm)
        return {**kw, "latent_dim": self.latent_dim, "rule": self.rule}


def load_data(cfg: MnistConfig) -> MixtureData:
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


def data_folders(data_dir=None) -> dict:
    """The folders the two datasets are read from (for the run's record)."""
    out = {}
    for name in ("mnist", "fashion-mnist"):
        found = find_files(name, "train", data_dir)
        out[name] = str(found[0].parent.resolve()) if found else None
    return out


# ----------------------------------------------------------------------------- scoring

def evaluate(model, mixture, digit, fashion, batch_size: int = 500) -> dict:
    """Per-source MSE / PSNR (dB) / SSIM of ``model.separate`` on the given pairs."""
    d_hat, f_hat, _ = model.separate(mixture, batch_size=batch_size)
    return separation_report(d_hat, f_hat, digit, fashion)


def prior_mean_scores(model, mixture, digit, fashion) -> dict:
    """What the latent carries: the scores of a copy of ``model`` that decodes the prior's
    mean (z = 0) for every mixture, as ``prior_mean_*`` (mean PSNR/SSIM, dB and 0..1)."""
    import copy

    from ...models.ablation import zero_latent_mean
    ablated = zero_latent_mean(copy.deepcopy(model))
    report = evaluate(ablated, mixture, digit, fashion)
    return {f"prior_mean_{k}": v for k, v in report.items() if k.startswith("mean_")}


def latent_usage(model, mixture, batch_size: int = 500, active_nats: float = 0.01) -> dict:
    """How much the posterior says about the mixtures: the mean KL to the prior per pair
    (``kl_nats``, nats), the latent's size, and how many of its dimensions carry more than
    ``active_nats`` on average (``active_latents``; a collapsed dimension carries ~0)."""
    total = None
    for i in range(0, len(mixture), batch_size):
        model.forward(mixture[i:i + batch_size], sample=False)
        mu, logvar = model.mu.astype(np.float64), model.logvar.astype(np.float64)
        kl = 0.5 * (mu ** 2 + np.exp(logvar) - 1 - logvar)            # (n, ...) per dimension
        part = kl.sum(axis=0)
        total = part if total is None else total + part
    per_dim = total / len(mixture)
    return {"kl_nats": float(per_dim.sum()), "latent_size": int(per_dim.size),
            "active_latents": int(np.sum(per_dim > active_nats))}


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


def example_images(model, mixture, digit, fashion) -> dict:
    """The grid rows for a few pairs: inputs, truths and the model's estimates."""
    d_hat, f_hat, m_hat = model.separate(mixture)
    return {"mixture": mixture, "digit": digit, "fashion": fashion, "digit_hat": d_hat, "fashion_hat": f_hat,
            "mixture_hat": m_hat}


def format_metrics(metrics: dict) -> str:
    return format_report(metrics, [(src, src) for src in ("digit", "fashion", "mean")])


# ----------------------------------------------------------------------------- the task

class MnistTask(Task):
    """Supervised images: the model sees a mixture and learns both sources."""
    name = "mnist"
    resumable = frozenset({"show", "n_examples"})   # what is shown and kept as examples, not what is learnt
    Config = MnistConfig
    summary = "Images: separate MNIST digit + Fashion-MNIST item mixtures"
    figures = ("grid.png",)
    presets = {
        "default": {},
        # a U-Net VAE with 1.5x the channels (24-48-96) and two 3x3 convolutions per level
        # (786k parameters), a lighter KL (beta 0.1), 24 epochs with a cosine learning-rate tail
        "best": {"model": "unet", "channels": (24, 48, 96), "blocks": 2, "beta": 0.1, "epochs": 24,
                 "lr_schedule": "cosine"},
        # the best network as a deterministic U-Net (no sampling, no KL term), 4/3 the channels
        # (32-64-128, 1.19M parameters), 18 epochs: about 65 minutes on 2 cores; the shipped
        # mnist-unet is this recipe with --epochs 30 (about 2 hours 10 minutes)
        "unet": {"model": "unet", "channels": (32, 64, 128), "blocks": 2, "beta": 0.0, "sample": False,
                 "epochs": 18, "lr_schedule": "cosine"},
        # the anchor's design: a deterministic U-Net of four levels (32-64-128-256 channels, 28 to
        # 3 pixels), two 3x3 convolutions a level each followed by BatchNorm, max pooling,
        # transposed convolutions up, the latent at the bottleneck with the skips around it
        "anchor": {"model": "unet", "channels": (32, 64, 128, 256), "blocks": 2, "norm": "batch", "down": "max",
                   "beta": 0.0, "sample": False, "epochs": 18, "lr_schedule": "cosine"},
        # the plain dense VAE with a lighter KL (beta 0.1), a 64-dim latent, 100 epochs, cosine tail
        "dense-best": {"model": "dense", "beta": 0.1, "latent_dim": 64, "epochs": 100, "lr_schedule": "cosine"},
        # a true VAE: a 14x14x8 latent map (1568 numbers) and no path around it, a light KL
        "vae": {"model": "vae", "channels": (32, 64), "latent_dim": 8, "beta": 0.01, "epochs": 12,
                "lr_schedule": "cosine"},
        # the true VAE with a latent no larger than the mixture: a 14x14x4 map (784 numbers);
        # at 14x14 the map's resolution bought 2.2 dB and its channels nothing (--ablate vae).
        # The vae network but for its latent's channels: 16 epochs are under 2 hours on 2 cores
        # if an epoch takes what one of the shipped mnist-vae's did (4758 s for 12)
        "compact-vae": {"model": "vae", "channels": (32, 64), "latent_dim": 4, "beta": 0.01, "epochs": 16,
                        "lr_schedule": "cosine"},
        # the compact VAE with a BatchNorm after every convolution of its encoder and decoder,
        # 30 epochs: 1.9 hours on one thread of a 2-core AMD EPYC (the shipped mnist-vae)
        "bn-vae": {"model": "vae", "channels": (32, 64), "latent_dim": 4, "beta": 0.01, "norm": "batch",
                   "epochs": 30, "lr_schedule": "cosine"},
    }
    help = {
        "model": "dense VAE, convolutional VAE, U-Net VAE with skips and a mask output, or a "
                 "convolutional VAE with a 7x7 latent map and no skips (vae)",
        "latent_dim": "size of the Gaussian latent (vae: channels of its 7x7 map)",
        "hidden": "hidden widths: 512 256 (dense) or 256 (conv); default per model",
        "channels": "conv channels: 32 64 (conv), 16 32 64 (unet: 2 to 5 levels) or 24 48 96 (vae: a 7x7 latent "
                    "map; two numbers, a 14x14 one); default per model",
        "blocks": "3x3 convolutions per level, unet and vae (default 1)",
        "norm": "unet and vae: a BatchNorm (batch) or GroupNorm (group) after every convolution, before its "
                "activation",
        "down": "unet: halve the maps by strided convolutions (stride), or by max or average pooling before a "
                "level's convolutions (max, avg)",
        "dropout": "unet: probability of zeroing a decoder feature in training (0: no dropout)",
        "residual": "unet: each level adds its first convolution's output to its last one's (needs --blocks 2)",
        "output": "decode two images (sources) or how the mixture splits (split); default per model",
        "rule": "mixing rule of the two images",
        "loss": "reconstruction loss",
        "mix_weight": "weight of the reconstructed mixture's term",
        "sample": "sample the latent in training (--no-sample with --beta 0: a plain autoencoder)",
        "n_examples": "evaluation pairs kept as examples in results.h5",
        "show": "also open the figures on screen",
        "epochs": "training epochs (default 50 dense, 15 conv, 10 unet, 10 vae)",
        "batch_size": "pairs per batch",
        "train_limit": "training images per set (quick runs)",
        "eval_limit": "evaluation pairs (default 10000)",
        "data_dir": "folder holding mnist/ and fashion-mnist/ (else $NPVAE_DATA)",
    }
    choices = {"model": tuple(MODELS), "output": OUTPUTS, "rule": RULES, "loss": RECON_LOSSES, "norm": NORMS,
               "down": DOWNS}

    @classmethod
    def finalize(cls, cfg):
        if cfg.epochs is None:
            import dataclasses
            cfg = dataclasses.replace(cfg, epochs=DEFAULT_EPOCHS[cfg.model])
        return cfg

    @classmethod
    def run_prefix(cls, cfg) -> str:
        return f"mnist-{cfg.model}"

    @classmethod
    def planned_model(cls, cfg):
        spec = {"type": MODELS[cfg.model].__name__, **cfg.model_kwargs()}
        if spec.get("norm", "none") != "none":
            spec["norm_bias"] = False       # the builder's default (a spec without it reads as an older model's)
        return (spec, (28, 28),
                "--hidden, --latent-dim" if cfg.model == "dense" else "--channels, --hidden, --blocks, --latent-dim")

    def setup(self, init_rng, noise_rng, saved_record):
        cfg = self.cfg
        self.model = build_model(cfg.model, rng=init_rng, **cfg.model_kwargs())
        self.data = self.train_data = load_data(cfg)
        self.folders = data_folders(cfg.data_dir)
        self.log("data: " + ", ".join(f"{k} from {v}" for k, v in self.folders.items()))
        # the latent's noise continues with the run (and its checkpoints); each MPI rank draws its own share
        self.model.rng = noise_rng
        self.objective = SeparationObjective(self.model, cfg.loss, cfg.mix_weight)
        self.val = self.data.validation_set()
        self.shown = tuple(a[:8] for a in self.val)

    def record(self) -> dict:
        return {"data_folder": self.folders}

    def describe(self) -> str:
        return (f"{super().describe()}, {self.data.n_train:,} training pairs an epoch")

    def step(self, batch, epoch, beta):
        mixture, digit, fashion = batch
        return self.objective.terms(mixture, digit, fashion, beta=beta, sample=self.cfg.sample)

    def validate(self, epoch, beta):
        return validation_terms(self.objective, *self.val, beta=beta)

    def display(self, epoch, history):
        path = save_grid(self.run_dir / "figures" / f"epoch_{epoch:03d}.png", example_images(self.model, *self.shown),
                         title=f"{self.cfg.model} VAE, epoch {epoch} (validation pairs)", show=self.cfg.show)
        self.log(f"           figure: {path}")
        return Shown(figures={"validation pairs": path})

    def evaluate(self, history) -> dict:
        mixture, digit, fashion = self.eval_set = self.data.evaluation_set()
        metrics = evaluate(self.model, mixture, digit, fashion)
        baseline = separation_report(mixture, mixture, digit, fashion)
        metrics.update({f"mixture_as_estimate_{k}": v for k, v in baseline.items() if k.startswith("mean_")})
        metrics.update(prior_mean_scores(self.model, mixture, digit, fashion))
        metrics.update(latent_usage(self.model, mixture))
        metrics["n_eval_pairs"] = int(len(mixture))
        self.log(f"test metrics on {len(mixture):,} fixed evaluation pairs:\n{format_metrics(metrics)}")
        self.log(f"(mixture as the estimate: mean PSNR {metrics['mixture_as_estimate_mean_psnr']:.2f} dB; "
                 f"latent at the prior mean: {metrics['prior_mean_mean_psnr']:.2f} dB)")
        self.log(f"latent: {metrics['kl_nats']:.1f} nats a pair, {metrics['active_latents']} of "
                 f"{metrics['latent_size']} dimensions above 0.01 nats")
        return metrics

    def model_kind(self) -> str:
        """What the run trained, for titles: "unet VAE", or "unet (deterministic)" when it
        neither samples its latent nor weighs a KL term (a plain autoencoder)."""
        deterministic = not self.cfg.sample and self.cfg.beta == 0
        return f"{self.cfg.model} (deterministic)" if deterministic else f"{self.cfg.model} VAE"

    def save(self, config, history, metrics):
        mixture, digit, fashion = self.eval_set
        k = min(self.cfg.n_examples, len(mixture))
        examples = example_images(self.model, mixture[:k], digit[:k], fashion[:k])
        save_grid(self.run_dir / "grid.png", {r: examples[r][:8] for r in GRID_ROWS},
                  title=f"{self.model_kind()} on evaluation pairs: mean PSNR {metrics['mean_psnr']:.1f} dB")
        save_model(self.run_dir / MODEL_FILE, self.model, config)
        save_results(self.run_dir / RESULTS_FILE, "mnist_results", self.model, config, history, metrics,
                     {k: v.astype(np.float32) for k, v in examples.items()})


__all__ = ["MnistConfig", "MnistTask", "MODEL_DEFAULTS", "DEFAULT_EPOCHS", "evaluate", "prior_mean_scores", "latent_usage",
           "validation_terms",
           "example_images", "format_metrics", "load_data", "data_folders"]

"""Music, blind: voice and accompaniment from MIR-1K mixtures alone.

The blind images model (:class:`npvae.models.blind.BlindSeparationVAE`) on
spectrogram patches instead of images:

1. Each training clip's mixture (nothing else is read) becomes its STFT magnitude
   ``|X|`` (the network's 512 bins: Nyquist dropped), divided by the training
   mixtures' mean magnitude, cut into patches of ``frames`` frames (hop
   ``frames / 2``).
2. The encoder sees ``log1p`` of a patch; K latent groups go through one shared
   decoder with a softplus output, K non-negative magnitude patches; the loss asks
   that they add up to the mixture's patch (rule ``"additive"``), plus the KL of
   every group.
3. Separation: the K patches become masks ``y_k / sum_j y_j`` that sum to one over
   the groups, applied to the complex mixture STFT (mixture phase), ``istft`` back.
4. Scoring: no group is labelled, so for each clip the groups are assigned to voice
   and accompaniment by the least MSE of their magnitudes (Hungarian), then BSS Eval
   v3 gives SDR/SIR/SAR/NSDR as for the supervised model. Also reported: one fixed
   assignment for all clips (the groups' majority roles), which is what a user who
   labels the groups once would get.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...audio.datasets import load_tracks
from ...audio.stft import STFTConfig, stft
from ...separation.blind_separator import BlindMusicSeparator, magnitudes, patches
from ...data.blind import MixtureOnlyData
from ...engine.task import Shown, Task
from ...files.model_file import MODEL_FILE, RESULTS_FILE, save_model, save_results
from ...metrics.audio import gnsdr, separation_scores, si_sdr, weighted_mean
from ...metrics.permutation import best_permutation
from ...models.blind import BlindSeparationVAE
from ...inputs import check_settings
from ..blind_objective import RECON, BlindConfig, BlindObjective
from ...plotting import pyplot

SOURCES = ("vocals", "accompaniment")
RESULTS_KIND = "blind_results"


@dataclass
class BlindMusicConfig(BlindConfig):
    """Settings of a blind music run (each a flag of ``npvae train blind-music``).

    dataset : "mir1k", "irmas" or "stems". groups : K latent groups (at least 2),
    latent_dim : each group's code size, hidden : the encoder's widths. frames : STFT
    frames per patch. loss : "l1" or "mse" on the mixture's magnitudes. train_limit,
    eval_limit : the first N training / validation clips.
    """
    dataset: str = "mir1k"
    eval_limit: int | None = 24
    frames: int = 8
    latent_dim: int = 32
    kl_warmup: float = 2.0
    epochs: int = 20
    batch_size: int = 64
    clip_norm: float = 5.0
    display_every: int = 2

    def __post_init__(self):
        super().__post_init__()
        check_settings(self, positive_int=("frames",), choices={"dataset": ("mir1k", "irmas", "stems")})
        if self.groups < 2:
            raise ValueError(f"--groups must be at least 2 (voice and accompaniment), got {self.groups}")

    def mixing_rule(self) -> str:
        return "additive"      # magnitudes of the sources add up (about) to the mixture's


# ----------------------------------------------------------------------------- features

def training_mixtures(tracks, stft_cfg: STFTConfig, frames: int) -> tuple[MixtureOnlyData, float]:
    """The training patches of the tracks' **mixtures** and the scale they were divided by."""
    mags = [magnitudes(t.mixture(), stft_cfg)[1] for t in tracks]
    scale = float(np.mean(np.concatenate([m.ravel() for m in mags])))
    data = np.concatenate([patches(m / scale, frames, max(1, frames // 2)) for m in mags])
    return MixtureOnlyData(data, upper=None), scale


# ----------------------------------------------------------------------------- scoring

def assign_groups(sep: BlindMusicSeparator, track) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Waveforms (K, n), masked magnitudes (K, F, T) and the best assignment (2,) of groups
    to [vocals, accompaniment] for one clip (least MSE of magnitudes, Hungarian)."""
    waves, mags = sep.estimates(track.mixture())
    truth = np.abs(stft(track.sources(), sep.stft_cfg))
    idx = best_permutation(mags[None], truth[None])[0]
    return waves, mags, idx


def evaluate(sep: BlindMusicSeparator, tracks, log=None) -> dict:
    """BSS Eval per clip with the per-clip best assignment (``best_``) and with one fixed
    assignment for all clips (``fixed_``: each source takes the group it was assigned
    most often). Returns per-clip arrays and length-weighted summaries."""
    per = {"names": [], "seconds": [], "assign": [], "waves": []}
    for tr in tracks:
        waves, _, idx = assign_groups(sep, tr)
        per["names"].append(tr.name)
        per["seconds"].append(tr.duration)
        per["assign"].append(idx)
        per["waves"].append(waves)
    assign = np.asarray(per["assign"])
    k = sep.model.n_groups
    fixed = np.array([np.bincount(assign[:, j], minlength=k).argmax() for j in range(2)])
    if fixed[0] == fixed[1]:                                   # one group won both roles: take the runner-up
        counts = np.bincount(assign[:, 1], minlength=k)
        counts[fixed[0]] = -1
        fixed[1] = counts.argmax()
    out = {"clip_names": per["names"], "clip_seconds": np.asarray(per["seconds"]), "assignment": assign,
           "fixed_assignment": fixed}
    for label, choose in (("best", lambda i: assign[i]), ("fixed", lambda i: fixed)):
        rows = {}
        for i, tr in enumerate(tracks):
            ests = per["waves"][i][choose(i)]
            if not np.all(np.any(ests, axis=1)):
                ests = ests + 1e-9                            # a silent group: SDR defined, and very low
            s = separation_scores(tr.sources(), ests, tr.mixture())
            s["si_sdr"] = si_sdr(tr.sources(), ests)
            for key in ("sdr", "sir", "sar", "nsdr", "si_sdr"):
                rows.setdefault(key, []).append(np.asarray(s[key], np.float64))
            if log:
                log(f"  {label:5s} {tr.name:20s} NSDR vocals {s['nsdr'][0]:6.2f}  accompaniment {s['nsdr'][1]:6.2f}")
        w = out["clip_seconds"]
        for key, v in rows.items():
            v = np.stack(v)
            out[f"{label}_{key}"] = v
            for j, src in enumerate(SOURCES):
                name = "gnsdr" if key == "nsdr" else ("mean_si_sdr" if key == "si_sdr" else f"g{key}")
                value = gnsdr(v[:, j], w) if key == "nsdr" else (float(np.mean(v[:, j])) if key == "si_sdr"
                                                                   else weighted_mean(v[:, j], w))
                out[f"{label}_{src}_{name}"] = float(value)
    return out


def quick_validation(sep: BlindMusicSeparator, tracks) -> dict:
    """Per-epoch check: mean SI-SDR improvement (dB) of each source, per-clip assignment."""
    imp = []
    for tr in tracks:
        waves, _, idx = assign_groups(sep, tr)
        refs, mix = tr.sources(), tr.mixture()
        imp.append(si_sdr(refs, waves[idx] + 1e-9) - si_sdr(refs, np.stack([mix, mix])))
    imp = np.asarray(imp)
    return {"vocals_si_sdri": float(imp[:, 0].mean()), "accompaniment_si_sdri": float(imp[:, 1].mean())}


# ----------------------------------------------------------------------------- pictures

def example(sep: BlindMusicSeparator, track, seconds: float = 4.0, waves: bool = False) -> dict:
    """Magnitudes (dB-ready) of one clip: mixture, true sources, every group (masked);
    with ``waves`` also the waveforms ``mixture``, ``vocals``, ``accompaniment`` and
    ``group_<k>`` (n,)."""
    n = min(track.n_samples, int(seconds * track.sr))
    clip = dataclasses.replace(track, voice=track.voice[:n], accompaniment=track.accompaniment[:n])
    group_waves, mags, idx = assign_groups(sep, clip)
    truth = np.abs(stft(clip.sources(), sep.stft_cfg))
    ex = {"mixture_mag": np.abs(stft(clip.mixture(), sep.stft_cfg)), "vocals_mag": truth[0],
          "accompaniment_mag": truth[1]}
    ex.update({f"group_{k}_mag": mags[k] for k in range(len(mags))})
    ex = {k: v.astype(np.float32) for k, v in ex.items()}
    ex["assignment"] = idx.astype(np.int64)
    if waves:
        ex.update({"mixture": clip.mixture(), "vocals": clip.voice, "accompaniment": clip.accompaniment})
        ex.update({f"group_{k}": w for k, w in enumerate(group_waves)})
    return ex


def plot_example(ex: dict, path, stft_cfg: STFTConfig, title: str = "") -> Path:
    """Spectrograms (dB) of the mixture, the true sources and every group."""
    plt = pyplot()
    keys = [k for k in ex if k.endswith("_mag")]
    idx = ex["assignment"]
    fig, axes = plt.subplots(1, len(keys), figsize=(2.8 * len(keys), 2.9), sharey=True)
    ref = float(ex["mixture_mag"].max()) or 1.0
    t = ex["mixture_mag"].shape[1] * stft_cfg.hop / stft_cfg.sample_rate
    for ax, key in zip(axes, keys):
        db = 20 * np.log10(np.maximum(ex[key], 1e-5 * ref) / ref)
        ax.imshow(db, origin="lower", aspect="auto", vmin=-80, vmax=0, cmap="magma",
                  extent=[0, t, 0, stft_cfg.sample_rate / 2000])
        label = key[:-4].replace("_", " ")
        if key.startswith("group_"):
            k = int(key.split("_")[1])
            role = [SOURCES[j] for j in range(2) if idx[j] == k]
            label += f" (-> {role[0]})" if role else " (unassigned)"
        ax.set_title(label, fontsize=8)
        ax.set_xlabel("s", fontsize=7)
        ax.tick_params(labelsize=6)
    axes[0].set_ylabel("kHz", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- the run

def format_table(m: dict) -> str:
    head = f"{'assignment':28s} {'source':14s} {'GNSDR':>7s} {'GSIR':>7s} {'GSAR':>7s} {'SI-SDR':>7s}"
    lines = [head, "-" * len(head)]
    for label, text in (("best", "best per clip"), ("fixed", "one for all clips")):
        for src in SOURCES:
            p = f"{label}_{src}_"
            lines.append(f"{text:28s} {src:14s} {m[p + 'gnsdr']:7.2f} {m[p + 'gsir']:7.2f} {m[p + 'gsar']:7.2f} "
                         f"{m[p + 'mean_si_sdr']:7.2f}")
    return "\n".join(lines) + "\n(dB; G* = length-weighted means over clips)"


class BlindMusicTask(Task):
    """Blind music: K groups of magnitude patches that must add up to the mixture's."""
    name = "blind-music"
    Config = BlindMusicConfig
    summary = "Music from mixtures alone: K groups of magnitudes that add up to the mixture"
    figures = ("example.png",)
    help = {"dataset": "mir1k, irmas or a folder of stems (see --data-dir)", "groups": "K latent groups (>= 2)",
            "latent_dim": "size of each group's code", "hidden": "encoder widths, e.g. 512 256",
            "frames": "STFT frames per patch", "loss": "reconstruction loss on the mixture's magnitudes",
            "train_limit": "the first N training clips only (quick runs)",
            "eval_limit": "validation clips scored (the first N)",
            "data_dir": "data root (holds MIR-1K/ or IRMAS-TrainingData/), or the stems folder (else $NPVAE_DATA)"}
    choices = {"dataset": ("mir1k", "irmas", "stems"), "loss": RECON}

    @classmethod
    def run_prefix(cls, cfg) -> str:
        return f"blind-music-{cfg.dataset}-K{cfg.groups}"

    @classmethod
    def planned_model(cls, cfg):
        shape = (STFTConfig.for_dataset(cfg.dataset).n_freq - 1, cfg.frames)
        return ({"type": "BlindSeparationVAE", "n_groups": cfg.groups, "latent_dim": cfg.latent_dim,
                 "hidden": list(cfg.hidden), "out_bias": -4.0, "shape": list(shape), "output": "softplus",
                 "log_input": True}, shape,
                "--groups, --latent-dim, --hidden, --frames")

    def setup(self, init_rng, noise_rng, saved_record):
        cfg = self.cfg
        self.stft_cfg = stft_cfg = STFTConfig.for_dataset(cfg.dataset)
        train_tracks = load_tracks(cfg.dataset, "train", cfg.data_dir)[:cfg.train_limit]
        self.val_tracks = load_tracks(cfg.dataset, "validation", cfg.data_dir)[:cfg.eval_limit]
        if not self.val_tracks:
            raise ValueError("blind-music scores on validation clips and found none: raise --eval-limit or check "
                             "the dataset's validation split")
        self.train_data, self.scale = training_mixtures(train_tracks, stft_cfg, cfg.frames)
        if saved_record is not None and "mag_scale" in saved_record:     # the scale the run was trained with
            self.scale = float(saved_record["mag_scale"])
        del train_tracks                                  # from here on, training has mixture patches only
        self.model = BlindSeparationVAE(cfg.groups, cfg.latent_dim, cfg.hidden, out_bias=-4.0,
                                        shape=(stft_cfg.n_freq - 1, cfg.frames), output="softplus", log_input=True,
                                        rng=init_rng)
        self.sep = BlindMusicSeparator(self.model, stft_cfg, self.scale)
        self.objective = BlindObjective(self.model, cfg.loss_config())
        self.noise = noise_rng
        self.val_patches = np.concatenate([patches(magnitudes(t.mixture(), stft_cfg)[1] / self.scale, cfg.frames,
                                                   cfg.frames) for t in self.val_tracks])
        self.quick_tracks = self.val_tracks[:8]

    def record(self) -> dict:
        return {"mode": "blind_music", "mag_scale": self.scale,
                **{f"stft_{k}": v for k, v in dataclasses.asdict(self.stft_cfg).items()}}

    def describe(self) -> str:
        return (f"BlindSeparationVAE (K={self.cfg.groups}) on {self.cfg.frames}-frame patches: "
                f"{self.model.num_parameters():,} parameters, {len(self.train_data):,} training patches of mixtures "
                f"(no sources), {len(self.val_tracks)} validation clips")

    def step(self, batch, epoch, beta):
        return self.objective.terms(batch, beta=beta, rng=self.noise)

    def validate(self, epoch, beta):
        sums = {}
        for i in range(0, len(self.val_patches), 256):
            b = self.val_patches[i:i + 256]
            for k, v in self.objective.terms(b, beta=beta, sample=False, backward=False).items():
                sums[k] = sums.get(k, 0.0) + v * len(b)
        out = {k: v / len(self.val_patches) for k, v in sums.items()}
        out.update(quick_validation(self.sep, self.quick_tracks))
        return out

    def display(self, epoch, history):
        track = self.val_tracks[0]
        ex = example(self.sep, track, waves=True)
        path = plot_example(ex, self.run_dir / "figures" / f"epoch_{epoch:03d}.png",
                            self.stft_cfg, f"blind K={self.cfg.groups}, {track.name}, epoch {epoch}")
        role = {int(g): src for g, src in zip(ex["assignment"], SOURCES)}
        return Shown(figures={f"{track.name} (validation)": path},
                     audio={f"group {k}" + (f" (as {role[k]})" if k in role else ""): ex[f"group_{k}"]
                            for k in range(self.cfg.groups)},
                     references={"mixture": ex["mixture"], "true vocals": ex["vocals"],
                                 "true accompaniment": ex["accompaniment"]},
                     sample_rate=self.stft_cfg.sample_rate)

    def evaluate(self, history) -> dict:
        self.log(f"scoring {len(self.val_tracks)} validation clips (BSS Eval v3)...")
        self.scores = scores = evaluate(self.sep, self.val_tracks)
        metrics = {k: v for k, v in scores.items() if isinstance(v, float)}
        metrics["fixed_assignment_vocals"] = int(scores["fixed_assignment"][0])
        metrics["fixed_assignment_accompaniment"] = int(scores["fixed_assignment"][1])
        metrics["clips_vocals_in_group_0"] = int(np.sum(scores["assignment"][:, 0] == 0))
        metrics["n_clips"] = len(self.val_tracks)
        self.log(format_table(metrics))
        return metrics

    def save(self, config, history, metrics):
        ex = example(self.sep, self.val_tracks[0])
        plot_example(ex, self.run_dir / "example.png", self.stft_cfg,
                     f"blind K={self.cfg.groups}, {self.val_tracks[0].name}")
        per_clip = {k: v for k, v in self.scores.items() if isinstance(v, np.ndarray)}
        save_model(self.run_dir / MODEL_FILE, self.model, config)
        save_results(self.run_dir / RESULTS_FILE, RESULTS_KIND, self.model, config, history, metrics,
                     {**ex, **{f"per_clip_{k}": v for k, v in per_clip.items()}})


__all__ = ["BlindMusicConfig", "BlindMusicTask", "BlindMusicSeparator", "evaluate", "patches", "training_mixtures"]

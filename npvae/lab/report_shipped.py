"""Report sections on the shipped models and on the systems that lead each task.

:func:`shipped_section` reads what every shipped model file records (``npvae.pretrained``:
the command, commit and seed that trained it, the training time and the scores
measured on the whole test set when it was shipped) and sets them against the project's
marks. :func:`published_section` lists published results of the systems that lead each
task, each with its source: these are the only numbers in the report that no npvae
command measured, and the section says so.
"""
from __future__ import annotations

import math

from .. import pretrained

from .document import Doc

# (task, score key, what it measures, mark in dB): the project's targets for the best models.
# "mnist-vae" is a shipped mnist-vae* model whose latent has at most LATENT_LIMIT numbers.
LATENT_LIMIT = 784
MSE_MARK = 3.0e-4
MARKS = [
    ("mnist", "mean_psnr", "Part I, best model: mean PSNR per source", 35.5),
    ("mnist", "mse_psnr", f"Part I, best model: MSE over both outputs at most {MSE_MARK:.1e}, as a PSNR",
     round(10 * math.log10(1 / MSE_MARK), 2)),
    ("mnist-dense", "mean_psnr", "Part I, plain dense VAE: mean PSNR per source", 21.0),
    ("mnist-vae", "mean_psnr", f"Part I, VAE with no path around its latent and at most {LATENT_LIMIT} latent "
                               "numbers: mean PSNR per source", 28.0),
    ("mnist-vae", "prior_mean_loss", "Part I, that VAE: what it loses with the latent at the prior mean", 5.0),
    ("music", "vocals_gnsdr", "Part II, voice GNSDR (unseen MIR-1K singers)", 10.5),
    ("music", "accompaniment_gnsdr", "Part II, accompaniment GNSDR", 10.0),
]

# Published results, not measured here: (task, system, figure, source).
PUBLISHED = [
    ("Part I (MNIST digit + Fashion-MNIST item, averaged)", "U-Net trained on this task",
     "MSE 3.0e-4 over both outputs (about 35.2 dB)",
     "the reference quoted in the project's brief; not checked against a primary source"),
    ("MIR-1K, voice GNSDR", "deep recurrent networks, discriminative training", "7.45 dB",
     "P.-S. Huang, M. Kim, M. Hasegawa-Johnson, P. Smaragdis, \"Singing-voice separation from monaural "
     "recordings using deep recurrent neural networks\", ISMIR 2014"),
    ("MIR-1K, voice GNSDR", "stacked hourglass networks", "about 10.5 dB",
     "S. Park, T. Kim, K. Lee, N. Kwak, \"Music source separation using stacked hourglass networks\", "
     "ISMIR 2018 (arXiv:1805.08559)"),
    ("MUSDB18, mean SDR over 4 stems", "Open-Unmix", "5.3 dB", "Demucs README, \"Comparison of accuracy\" "
     "(github.com/facebookresearch/demucs)"),
    ("MUSDB18, mean SDR over 4 stems", "Spleeter (25k extra songs)", "5.9 dB", "same table"),
    ("MUSDB18, mean SDR over 4 stems", "Demucs v2", "6.3 dB", "same table"),
    ("MUSDB18, mean SDR over 4 stems", "Hybrid Demucs (v3)", "7.7 dB", "same table"),
    ("MUSDB18, mean SDR over 4 stems", "Hybrid Transformer Demucs, fine-tuned (v4, 800 extra songs)", "9.0 dB",
     "same table"),
]


def latent_numbers(name: str) -> int:
    """How many numbers the latent of shipped Part I model ``name`` has (a latent map's
    channels times its pixels)."""
    from .. import load_model
    model = load_model(name)
    return model.latent_dim * getattr(model, "latent_side", 1) ** 2


def mark_score(info: dict, key: str) -> float | None:
    """Score ``key`` of a shipped model's record, in dB: a recorded score, or
    ``prior_mean_loss`` (the mean PSNR lost with the latent at the prior mean) or
    ``mse_psnr`` (the MSE over both outputs as a PSNR, 10 log10(1 / MSE))."""
    scores = info.get("scores", {})
    if key == "prior_mean_loss":
        prior = info.get("scores_latent_at_prior_mean", {})
        return scores["mean_psnr"] - prior["mean_psnr"] if "mean_psnr" in prior else None
    if key == "mse_psnr":
        return 10 * math.log10(1 / scores["mean_mse"]) if scores.get("mean_mse", 0) > 0 else None
    return scores.get(key)


def _best_for(task: str, key: str, infos: dict) -> tuple[str, float] | None:
    """The shipped model of ``task`` with the highest score ``key`` (:func:`mark_score`);
    "mnist-dense" means the shipped models of that name only, "mnist-vae" those of that
    name whose latent has at most ``LATENT_LIMIT`` numbers."""
    if task in ("mnist-dense", "mnist-vae"):
        names = [n for n, i in infos.items() if i["task"] == "mnist" and n.startswith(task)]
        if task == "mnist-vae":
            names = [n for n in names if latent_numbers(n) <= LATENT_LIMIT]
    else:
        names = [n for n, i in infos.items() if i["task"] == task]

    def score(info):
        return mark_score(info, key)
    scored = [(n, float(score(infos[n]))) for n in names if score(infos[n]) is not None]
    return max(scored, key=lambda t: t[1]) if scored else None


def mark_rows(infos: dict) -> list[dict]:
    """Every mark of ``MARKS`` against the shipped models ``infos`` ({name: info}):
    dicts with task, key, what, target (dB), value (dB of the best shipped model, None
    when the task has none) and name (that model)."""
    out = []
    for task, key, what, mark in MARKS:
        found = _best_for(task, key, infos)
        name, value = found if found is not None else (None, None)
        out.append({"task": task, "key": key, "what": what, "target": mark, "value": value, "name": name})
    return out


def missed_marks(infos: dict) -> list[dict]:
    """The rows of :func:`mark_rows` whose mark no shipped model meets."""
    return [m for m in mark_rows(infos) if m["value"] is None or m["value"] < m["target"]]


def shipped_section(doc: Doc) -> dict:
    """Append the shipped-models section to ``doc``; returns ``{name: info}`` as read."""
    infos = {name: pretrained.info(name) for name in pretrained.list_models()}
    doc.h2("Shipped models, and how far from the marks")
    doc.p("These models ship with the package (npvae/pretrained/*.h5) and load with npvae.load_model(name). "
          "Each file records the command, commit and seed that trained it, its training time and the scores "
          "npvae ship measured on the whole test set (Part I: the 10,000 fixed test pairs; Part II: "
          "the 24 MIR-1K validation clips, singers never seen in training). The numbers below are read from "
          "those files. 'Latent at the prior mean' is the same model with the posterior mean set to 0 for "
          "every input: what the decoder does without the latent.")
    rows = []
    for name, i in infos.items():
        s, z = i["scores"], i.get("scores_latent_at_prior_mean", {})
        if i["task"] == "mnist":
            score = (f"mean PSNR {s['mean_psnr']:.2f} dB (digit {s['digit_psnr']:.2f}, fashion "
                     f"{s['fashion_psnr']:.2f}; MSE over both outputs {s['mean_mse']:.5f})")
            latent = f"{z['mean_psnr']:.2f} dB" if "mean_psnr" in z else "-"
        else:
            score = (f"vocals GNSDR {s['vocals_gnsdr']:.2f} dB, accompaniment {s['accompaniment_gnsdr']:.2f} dB "
                     f"(GSIR {s['vocals_gsir']:.2f} / {s['accompaniment_gsir']:.2f})")
            latent = (f"{z['vocals_gnsdr']:.2f} / {z['accompaniment_gnsdr']:.2f} dB"
                      if "vocals_gnsdr" in z else "-")
        rows.append([name, f"`{i['command']}` (commit {i['commit']}, seed {i['seed']})",
                     f"{i['train_seconds']:.0f}", score, latent])
    doc.table(["name", "made by", "training time (s)", "score on the whole test set", "latent at the prior mean"],
              rows)
    rows = []
    for mark in mark_rows(infos):
        if mark["value"] is None:
            rows.append([mark["what"], f">= {mark['target']:g} dB", "no shipped model", "-"])
            continue
        gap = mark["value"] - mark["target"]
        rows.append([mark["what"], f">= {mark['target']:g} dB", f"{mark['value']:.2f} dB ({mark['name']})",
                     f"met ({gap:+.2f} dB)" if gap >= 0 else f"{-gap:.2f} dB short"])
    doc.table(["mark", "target", "best shipped model", "gap"], rows)
    missed = missed_marks(infos)
    if missed:
        doc.p("Marks missed: " + "; ".join(
            f"{m['what']}, " + (f"{m['target'] - m['value']:.2f} dB short ({m['name']})" if m["value"] is not None
                                else "no shipped model") for m in missed)
              + ". The next section says what was tried toward each and what limits it.")
    return infos


def published_section(doc: Doc):
    """Append the table of published results of the systems that lead each task."""
    doc.h2("What outperforms VAEs here: published results")
    doc.p("Not measured by npvae: published figures of the systems that lead each task, with their sources, "
          "to place the measured numbers above. Our 24 MIR-1K validation clips are a subset of the usual "
          "825-clip test set, so the MIR-1K comparison is indicative; MUSDB18 (four stems, 44.1 kHz stereo, "
          "SDR by museval) is not comparable with MIR-1K's two-source GNSDR, and npvae has not been trained or "
          "scored on it.")
    doc.table(["task and metric", "system", "published figure", "source"], [list(r) for r in PUBLISHED])


__all__ = ["MARKS", "PUBLISHED", "LATENT_LIMIT", "latent_numbers", "mark_score", "mark_rows", "missed_marks", "published_section", "shipped_section"]

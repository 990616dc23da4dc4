"""The assignment's report, built from results files only: ``report.md``, ``report.pdf``
and ``report.html``.

:func:`build_report` (``npvae report``) takes run directories of four kinds, recognised
by their files:

* a loss study (``study.h5``, from ``npvae study``);
* a Part I run (``results.h5`` of kind ``mnist_results``, from ``npvae train mnist``);
* a Part II run (``results.h5`` of kind ``music_results`` and the ``eval_*.h5`` files of
  ``npvae evaluate``);
* a blind run (``results.h5`` of kind ``blind_results``, from ``npvae train blind-mnist``
  or ``npvae train blind-music``; the section is in :mod:`.blind_report`).

Every report also has the shipped models' recorded scores against the project's marks
and the published results of the systems that lead each task (:mod:`.report_shipped`).

Every number in the report is read from those files; the text around the numbers is
fixed, and comparative sentences are chosen by comparing the numbers. The report is one
:class:`~.document.Doc` written three ways: Markdown (what ``--update`` and
:func:`retypeset` read back), a PDF typeset with ReportLab (:mod:`.doc_pdf`) and an HTML
page with audio players for the Part II examples (:mod:`.doc_html`).
"""
from __future__ import annotations

import datetime
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..files import h5mat
from ..audio.io import write_audio
from ..audio.stft import STFTConfig
from ..errors import OutputError
from ..files.guard import check_writable_dir
from ..files.model_file import RESULTS_FILE
from ..plotting import plot_example, plot_history, save_grid, save_loss_curves

from . import report_sources
from .blind_report import blind_section, read_blind_run, uses_shipped
from .document import Doc
from .report_marks import MARKS_TITLE, marks_section
from .report_shipped import published_section, shipped_section
from .report_update import merge_reports
from .study_table import (COLUMNS, CURVES_FILE, PRIMARY, STUDY_FILE, best, cells, columns, is_ablation,
                          is_sweep, read_study, table_rows, verdict)

APPROACH = [
    "npvae implements every piece in NumPy: each layer keeps what its backward pass needs and fills the "
    "gradients of its named parameters; Adam walks those parameters. The element-wise kernels (bias + "
    "activation, the Adam update, the reparameterisation, the KL term, BCE from logits) have Numba and NumPy "
    "versions that are tested against each other; matrix products stay on BLAS. Every layer, loss and the full "
    "VAE objective pass finite-difference gradient checks.",
    "Part I (images): the encoder sees only the mixture of an MNIST digit and a Fashion-MNIST item; a Gaussian "
    "latent is sampled with the reparameterisation trick z = mu + exp(0.5 logvar) eps in training and taken at "
    "its mean to separate; the decoder returns both sources, and the reconstructed mixture (the mixing rule "
    "applied to the two estimates) enters the loss: rec(digit) + rec(fashion) + rec(mixture) + beta KL. The dense "
    "VAE is the assignment's plain model; the U-Net variant adds skip connections from the encoder and an output "
    "that shares the mixture's intensity between the sources.",
    "Part II (music): the network sees the log-compressed STFT magnitude of the mixture (16 kHz, Hann window, "
    "1024-point FFT, hop 256), standardised per frequency; a small convolutional U-Net with a Gaussian latent at "
    "its bottleneck returns one soft mask per source; the estimates are the masks times the mixture's complex "
    "STFT (the mixture's phase), returned to audio by the inverse STFT. Separation is scored with BSS Eval v3 "
    "(SDR, SIR, SAR; GNSDR = length-weighted normalised SDR) and SI-SDR.",
    "Baselines on the same test sets: supervised NMF (one dictionary per source learned on the training data "
    "with multiplicative updates, activations fitted on the mixture with the dictionaries fixed, soft masks "
    "from the two parts), a deterministic autoencoder and U-Net (the same networks with beta = 0 and no latent "
    "sampling), and for audio the ideal ratio mask (an oracle that knows the sources: the ceiling of masking "
    "methods) and the unprocessed mixture (the floor).",
]


# ----------------------------------------------------------------------------- reading runs

def _param_count(params: dict) -> int:
    return int(sum(np.size(v) if not isinstance(v, dict) else _param_count(v) for v in params.values()))


def classify(run_dir) -> str | None:
    """"study", "mnist", "music", "blind" or None for a directory holding none of their files."""
    d = Path(run_dir)
    if (d / STUDY_FILE).exists():
        return "study"
    if (d / RESULTS_FILE).exists():
        kind = h5mat.file_kind(d / RESULTS_FILE)[0]
        return {"mnist_results": "mnist", "music_results": "music", "blind_results": "blind"}.get(kind)
    return None


def read_mnist_run(run_dir) -> dict:
    t = h5mat.read_tree(Path(run_dir) / RESULTS_FILE, expected_kind="mnist_results")
    return {"dir": Path(run_dir), "config": t["config"], "metrics": t["metrics"], "history": t["history"],
            "examples": t["examples"], "params": _param_count(t["model"]["params"])}


def read_music_run(run_dir) -> dict:
    """A Part II run: its config, history, metrics and evaluations (``eval_*.h5``). A
    results.h5 that ``npvae evaluate --results`` wrote (its config has no ``epochs``) is
    an evaluation with no training record: ``"evaluation_only"`` is then True, and the
    file is the run's first evaluation."""
    d = Path(run_dir)
    t = h5mat.read_tree(d / RESULTS_FILE, expected_kind="music_results")
    evaluation_only = "epochs" not in t["config"]
    evals = []
    for path in ([d / RESULTS_FILE] if evaluation_only else []) + sorted(d.glob("eval_*.h5")):
        e = t if path.name == RESULTS_FILE else h5mat.read_tree(path, expected_kind="music_results")
        evals.append({"path": path, "config": e["config"], "metrics": e["metrics"], "examples": e["examples"]})
    return {"dir": d, "config": t["config"], "history": {} if evaluation_only else t["history"],
            "metrics": {} if evaluation_only else t.get("metrics", {}),
            "params": _param_count(t["model"]["params"]), "evals": evals, "evaluation_only": evaluation_only}


# ----------------------------------------------------------------------------- sections

def _f(x, fmt=".2f"):
    return format(float(x), fmt)


def _mnist_section(doc: Doc, runs: list[dict], figs: Path):
    doc.h2("Part I: separation results (full training runs)")
    header = ["run", "model", "params", "loss", "beta", "epochs", "digit PSNR / SSIM", "fashion PSNR / SSIM",
              "mean PSNR (dB)", "train time (s)"]
    rows = []
    for r in runs:
        c, m = r["config"], r["metrics"]
        rows.append([r["dir"].name, c["model"], f"{r['params']:,}", c["loss"], _f(c["beta"], "g"),
                     str(int(c["epochs"])), f"{_f(m['digit_psnr'])} / {_f(m['digit_ssim'], '.3f')}",
                     f"{_f(m['fashion_psnr'])} / {_f(m['fashion_ssim'], '.3f')}", _f(m["mean_psnr"]),
                     _f(m["train_seconds_total"], ".0f")])
    floor = runs[0]["metrics"]
    doc.table(header, rows)
    doc.p(f"Metrics on {int(floor['n_eval_pairs']):,} fixed test pairs (the same for every run). Taking the "
          f"mixture itself as both estimates gives a mean PSNR of {_f(floor['mixture_as_estimate_mean_psnr'])} dB "
          f"and SSIM {_f(floor['mixture_as_estimate_mean_ssim'], '.3f')}: the floor.")
    for r in runs:
        name = r["dir"].name
        grid = save_grid(figs / f"{name}_grid.png", {k: np.asarray(v)[:8] for k, v in r["examples"].items()},
                         title=f"{r['config']['model']} VAE on test pairs")
        doc.image(grid, f"{name}: rows are the mixture, the true and estimated digit, the true and estimated "
                        f"fashion item, and the reconstructed mixture (test pairs).")
        curves = save_loss_curves(figs / f"{name}_loss_curves.png", r["history"])
        doc.image(curves, f"{name}: loss terms per epoch on training (solid) and validation (dashed) data, "
                          f"and the validation PSNR.")


def _music_section(doc: Doc, runs: list[dict], figs: Path, audio: bool = True):
    doc.h2("Part II: separation results (full training runs)")
    labels = {"model": "VAE", "oracle": "ideal ratio mask (ceiling)", "mixture": "unprocessed mixture (floor)"}
    for r in runs:
        c = r["config"]
        name = r["dir"].name
        if r.get("evaluation_only"):
            doc.p(f"Evaluation {name}: model {c.get('model', 'unknown')} ({r['params']:,} parameters) scored by "
                  f"`npvae evaluate`; the folder holds no training record (no epochs, loss or curves).")
        else:
            doc.p(f"Run {name}: {r['params']:,} parameters, {int(c['epochs'])} epochs, loss {c['loss']} "
                  f"(compression {c.get('loss_compression', 'none')}), beta {_f(c['beta'], 'g')}, "
                  f"dataset {c['dataset']}.")
        for e in r["evals"]:
            m, ec = e["metrics"], e["config"]
            seconds = np.atleast_1d(m["clip_seconds"])
            rows = []
            for sysname in ("model", "oracle", "mixture"):
                for src in ("vocals", "accompaniment"):
                    p = f"{sysname}_{src}_"
                    if p + "gnsdr" in m:
                        lab = labels[sysname] + (" + Wiener" if sysname == "model" and ec.get("wiener") else "") + (
                            f", masks of {int(ec['shifts'])} shifts" if sysname == "model"
                            and int(ec.get("shifts", 1)) > 1 else "")
                        rows.append([lab, src, _f(m[p + "gnsdr"]), _f(m[p + "gsir"]), _f(m[p + "gsar"]),
                                     _f(m[p + "mean_si_sdr"])])
            doc.p(f"{e['path'].name}: {ec.get('dataset')} {ec.get('split')} split"
                  + (f" of the data set labelled {ec['label']}" if ec.get("label") else "") + f", {len(seconds)} clips, "
                  f"{_f(seconds.sum(), '.0f')} s of audio (dB; G* = length-weighted means over clips).")
            doc.table(["system", "source", "GNSDR", "GSIR", "GSAR", "SI-SDR"], rows)
        if r["evals"]:
            e = r["evals"][0]
            cfg = STFTConfig(int(e["config"]["sample_rate"]), int(e["config"]["n_fft"]), int(e["config"]["hop"]),
                             str(e["config"]["window"]))
            ex = dict(e["examples"]["clip0"])
            fig = plot_example(ex, figs / f"{name}_example.png", cfg, f"{ex.get('name', '')}")
            doc.image(fig, f"{name}: magnitude spectrograms (dB) of a test clip: the mixture, the true and "
                           f"estimated vocals, the true and estimated accompaniment.")
            clips, gain = example_audio(ex, figs.parent / "audio", name, cfg.sample_rate) if audio else ([], 1.0)
            if clips:
                doc.audio(clips, f"{name}: the clip of the spectrograms above, {e['path'].name}'s example"
                          + (f", every waveform scaled by {gain:.2f} to fit 16-bit PCM" if gain != 1 else ""))
        if r["history"].get("epoch") is not None and np.size(r["history"]["epoch"]):
            hist = {k: np.atleast_1d(v).tolist() for k, v in r["history"].items()}
            doc.image(plot_history(hist, figs / f"{name}_loss_curves.png"),
                      f"{name}: training and validation loss terms, latent KL and validation SI-SDR improvement "
                      f"per epoch.")


AUDIO_CLIPS = (("mixture", "mixture"), ("vocals_hat", "separated vocals"), ("vocals", "true vocals"),
               ("accompaniment_hat", "separated accompaniment"), ("accompaniment", "true accompaniment"))


def example_audio(example: dict, folder: Path, name: str, sample_rate: int) -> tuple[list, float]:
    """Write the waveforms of a Part II example (an evaluation's ``/examples/clip0``:
    mixture, true and separated sources, float samples) as 16-bit WAV files
    ``folder``/``name``_KEY.wav. All are scaled by one gain (1, or what brings the
    loudest to 0.99) so their levels compare. Returns ([(label, path)], gain); no clips
    for an example without waveforms."""
    waves = {key: np.asarray(example[key], np.float64) for key, _ in AUDIO_CLIPS if key in example}
    if len(waves) != len(AUDIO_CLIPS):
        return [], 1.0
    peak = max(float(np.max(np.abs(w))) for w in waves.values())
    gain = 0.99 / peak if peak > 0.99 else 1.0
    folder.mkdir(exist_ok=True)
    return [(label, write_audio(folder / f"{name}_{key}.wav", waves[key] * gain, sample_rate, "PCM_16"))
            for key, label in AUDIO_CLIPS], gain


def _ablation_section(doc: Doc, study: dict, study_dir: Path, figs: Path):
    task = study["task"]
    preset = study["study"].split(" ", 1)[1]
    part = "Part I (images)" if task == "mnist" else "Part II (music)"
    what = "Sweep" if is_sweep(study) else "Ablation"
    doc.h2(f"{what} of --preset {preset}, {part}: {study_dir.name}")
    unit = "test pairs" if task == "mnist" else "test clips"
    from .studies import ABLATION_BUDGETS
    settings = ABLATION_BUDGETS[task].get(study.get("budget"), {}).get("common", {})
    shown = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in settings.items())
    how = ("at every point of a grid of settings (each row names its point)" if is_sweep(study) else
           "then the same recipe with one of its settings put back to the default, one at a time")
    doc.p(f"The recipe of `npvae train {task} --preset {preset}`, {how}; every configuration trains with the same seed "
          f"({study.get('seed', 0)}), data and "
          f"budget ('{study.get('budget')}'{': ' + shown if shown else ''}; shorter than the preset's own), each "
          f"in its own process, and is scored on the same {study.get('n_eval')} {unit}.")
    doc.table(*table_rows(study))
    doc.p("Verdict: " + verdict(study))
    if (study_dir / CURVES_FILE).exists():
        dest = figs / f"{study_dir.name}_validation_curves.png"
        shutil.copyfile(study_dir / CURVES_FILE, dest)
        doc.image(dest, f"{study_dir.name}: validation metric per epoch of every configuration.")


def _study_section(doc: Doc, study: dict, study_dir: Path, figs: Path):
    if is_ablation(study) or is_sweep(study):
        return _ablation_section(doc, study, study_dir, figs)
    task = study["task"]
    cols = columns(study)
    part = "Part I (images)" if task == "mnist" else "Part II (music)"
    doc.h2(f"Loss study, {part}: {study_dir.name}")
    n = study.get("n_eval")
    unit = "test pairs" if task == "mnist" else "test clips"
    doc.p(f"Every configuration trains the same model with the same seeds, data and budget "
          f"('{study.get('budget')}'), each in its own process, and is scored on the same {n} {unit}. "
          f"Training time is the sum of the epochs' wall times.")
    if task == "music":
        doc.p("The test clips are the dataset's validation split (singers absent from the training split), "
              "the same clips the per-epoch validation curves score. Nothing is selected on them: every "
              "configuration keeps its last epoch, with a fixed learning-rate schedule; the NMF dictionaries "
              "are learned on the training clips only.")
    rows = [[r["label"], r["group"]] + cells(r, cols) for r in study["rows"] if r["group"] == "loss"]
    doc.table(["configuration", "group"] + [c[1] for c in cols], rows)
    doc.p("Verdict: " + verdict(study))
    if (study_dir / CURVES_FILE).exists():
        dest = figs / f"{study_dir.name}_validation_curves.png"
        shutil.copyfile(study_dir / CURVES_FILE, dest)
        doc.image(dest, f"{study_dir.name}: validation metric per epoch of every trained configuration.")


def _baseline_section(doc: Doc, study: dict, study_dir: Path):
    task = study["task"]
    cols = COLUMNS[task]
    key, label = PRIMARY[task]
    doc.h2(f"Baselines, {'Part I' if task == 'mnist' else 'Part II'}: {study_dir.name}")
    top = best(study)
    rows = ([[f"best VAE of the loss study: {top['label']}", "loss"] + [_f(top[k], fmt) for k, _, fmt in cols]]
            if top else [])
    rows += [[r["label"], r["group"]] + [_f(r[k], fmt) if k in r else "-" for k, _, fmt in cols]
             for r in study["rows"] if r["group"] == "baseline"]
    doc.table(["system", "group"] + [c[1] for c in cols], rows)


def _discussion(doc: Doc, studies: list[tuple[dict, Path]], mnist_runs, music_runs):
    doc.h2("Discussion: how well do VAEs separate, and what outperforms them")
    for study, sdir in studies:
        task = study["task"]
        key, label = PRIMARY[task]
        top = best(study)
        if top is None:
            continue
        rows = {r["name"]: r for r in study["rows"]}
        base = [r for r in study["rows"] if r["group"] == "baseline" and r["name"] not in ("irm", "mixture")]
        better = [r for r in base if r[key] > top[key]]
        worse = [r for r in base if r[key] <= top[key]]
        what = "images" if task == "mnist" else "music"
        text = f"{what.capitalize()} ({sdir.name}, {label}): the best VAE of the loss study, {top['label']}, reaches {top[key]:.2f} dB"
        if "mixture" in rows:
            text += (f", {top[key] - rows['mixture'][key]:+.2f} dB relative to the unprocessed mixture "
                     f"({rows['mixture'][key]:.2f} dB)")
        if "irm" in rows:
            text += (f" and {rows['irm'][key] - top[key]:.2f} dB below the ideal ratio mask "
                     f"({rows['irm'][key]:.2f} dB)")
        text += ". "
        if better:
            text += "Outperforming it on the same test set: " + "; ".join(
                f"{r['label']} ({r[key]:.2f} dB, {r[key] - top[key]:+.2f} dB)" for r in better) + ". "
        if worse:
            text += "Not better than it: " + "; ".join(f"{r['label']} ({r[key]:.2f} dB)" for r in worse) + ". "
        if "mixture" in rows:
            failed = [r for r in study["rows"] if r["name"] != "mixture" and r[key] < rows["mixture"][key]]
            if failed:
                text += ("Below the unprocessed mixture, i.e. worse than doing nothing (the run did not learn to "
                         "separate; see its log): " + "; ".join(f"{r['label']} ({r[key]:.2f} dB)" for r in failed)
                         + ". ")
        if "bce_beta0" in rows and task == "mnist":
            d = rows["bce_beta0"][key] - top[key] if top["name"] != "bce_beta0" else 0.0
            text += (f"The plain autoencoder (beta 0, no sampling) scores {rows['bce_beta0'][key]:.2f} dB"
                     + (f", {d:+.2f} dB against the best VAE: " if top["name"] != "bce_beta0" else
                        ", the best of the loss study: ")
                     + ("no measurable difference (under 0.1 dB) at this budget." if abs(d) < 0.1 else
                        "the KL term and sampling do not help separation at this budget." if d > 0 else
                        "the KL term and sampling help at this budget.") + " ")
        if "unet_vae" in rows and "unet_det" in rows:
            u, ud = rows["unet_vae"][key], rows["unet_det"][key]
            text += (f"With skip connections, the U-Net VAE scores {u:.2f} dB and the deterministic U-Net "
                     f"{ud:.2f} dB ({ud - u:+.2f} dB).")
        doc.p(text)
    if mnist_runs:
        r = max(mnist_runs, key=lambda r: r["metrics"]["mean_psnr"])
        lo = min(mnist_runs, key=lambda r: r["metrics"]["mean_psnr"])
        if len(mnist_runs) > 1:
            text = (f"Full Part I runs: the best is {r['dir'].name} ({r['config']['model']}, "
                    f"{_f(r['metrics']['mean_psnr'])} dB mean PSNR, KL weight {_f(r['config']['beta'], 'g')}), the "
                    f"weakest {lo['dir'].name} ({lo['config']['model']}, {_f(lo['metrics']['mean_psnr'])} dB). ")
        else:
            text = (f"Full Part I run {r['dir'].name}: {r['config']['model']}, {_f(r['metrics']['mean_psnr'])} dB "
                    f"mean PSNR, KL weight {_f(r['config']['beta'], 'g')}. ")
        doc.p(text + "A bottleneck alone has to code both images in its latent; a decoder that also sees the "
              "mixture through skip connections only has to decide how to share each pixel.")
    for r in music_runs:
        for e in r["evals"][:1]:
            m = e["metrics"]
            text = f"Full Part II run {r['dir'].name}: vocals GNSDR {_f(m['model_vocals_gnsdr'])} dB"
            if "oracle_vocals_gnsdr" in m:             # an evaluation with --no-baselines has no oracle
                text += (f" against {_f(m['oracle_vocals_gnsdr'])} dB for the ideal ratio mask, "
                         f"{_f(m['oracle_vocals_gnsdr'] - m['model_vocals_gnsdr'])} dB of headroom for a better "
                         f"mask estimator with the same mixture phase")
            doc.p(text + ".")


REPORT_FILES = ("report.md", "report.pdf", "report.html", "figures", "audio")
FOLDERS = ("figures", "audio")          # a report's folders of files it links


def shown(path) -> str:
    """``path`` as the report prints it: relative to the current folder."""
    try:
        return os.path.relpath(path)
    except ValueError:          # another drive (Windows)
        return str(path)


def check_report_dir(out, overwrite: bool = False) -> Path:
    """Refuse to replace a report (any of :data:`REPORT_FILES` in ``out``) unless
    ``overwrite``; ``out`` must be a folder that can be written. Raises OutputError."""
    out = Path(out)
    check_writable_dir(out)
    existing = [name for name in REPORT_FILES if (out / name).exists()]
    if existing and not overwrite:
        raise OutputError(f"{out} already holds a report ({', '.join(existing)}); pass --overwrite to "
                          "replace it (its figures and audio folders too), or choose another --out")
    return out


def build_report(run_dirs, out="results/report", command: str | None = None, log=print,
                 overwrite: bool = False, update: bool = False, pilot_dirs=(), audio: bool = True) -> dict:
    """Write ``out``/report.md, report.pdf, report.html, figures/ and (for Part II runs
    whose evaluations hold example waveforms, unless not ``audio``) audio/ from ``run_dirs``.
    A report kept in a repository is built without ``audio``: the example clips are the
    dataset's own music.

    ``pilot_dirs`` are Part I or Part II runs of a recipe with one change at a shorter
    budget: each is a row of the missed-marks section only (no section or figures).

    An existing report there is refused unless ``overwrite`` (:func:`check_report_dir`),
    or brought up to date with ``update``: its sections stay, and those that
    ``run_dirs`` feed are added or replaced (:mod:`.report_update`), its figures too.
    The report is built in a temporary folder inside ``out`` and moved into place once
    whole, so an interrupted build leaves the old report as it was, and a replaced
    report's figures and audio folders hold no stale file. Paths in the report are relative to
    the current folder.
    """
    for d in map(Path, [*run_dirs, *pilot_dirs]):
        if not d.exists():
            raise FileNotFoundError(f"{shown(d)} does not exist: give the folders of studies (npvae study --out) "
                                    "and runs (npvae train --out) that hold study.h5 or results.h5")
        if not d.is_dir():
            raise NotADirectoryError(f"{shown(d)} is a file, not a folder: give the folder that holds it")
    if update:
        out = Path(out)
        check_writable_dir(out)
        if not (out / "report.md").is_file():
            raise OutputError(f"{out} holds no report.md to update; build one first (without --update)")
        try:
            old_text = (out / "report.md").read_text(encoding="utf-8")
            Doc.from_markdown(old_text, out)
        except (ValueError, UnicodeDecodeError) as exc:
            raise OutputError(f"{out / 'report.md'} is not a report that npvae report wrote ({exc}); "
                              "rebuild it from all its runs with --overwrite instead of --update") from None
    else:
        out = check_report_dir(out, overwrite)
    pilots = {"mnist": [], "music": []}
    for d in map(Path, pilot_dirs):
        kind = classify(d)
        if kind not in pilots:
            raise ValueError(f"pilot {d} is not a finished Part I or Part II run (it holds no results.h5 of "
                             "npvae train mnist or music)")
        pilot = read_mnist_run(d) if kind == "mnist" else read_music_run(d)
        if pilot.get("evaluation_only"):
            raise ValueError(f"pilot {d} holds the results of npvae evaluate, not of a training run: give the "
                             "run's own folder")
        pilots[kind].append(pilot)
    studies, mnist_runs, music_runs, blind_runs, skipped = [], [], [], [], []
    for d in map(Path, run_dirs):
        kind = classify(d)
        if kind == "study":
            studies.append((read_study(d), d))
        elif kind == "mnist":
            mnist_runs.append(read_mnist_run(d))
        elif kind == "music":
            music_runs.append(read_music_run(d))
        elif kind == "blind":
            blind_runs.append(read_blind_run(d))
        else:
            skipped.append(d)
            log(f"skipping {d}: no study.h5 or results.h5 in it")
    if not (studies or mnist_runs or music_runs or blind_runs):
        raise ValueError("none of the directories holds results (study.h5 or results.h5)")
    out.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=".report-build-", dir=out))
    try:
        sources = [d for d in run_dirs if Path(d) not in skipped]
        if update:
            for folder in FOLDERS:
                if (out / folder).is_dir():
                    shutil.copytree(out / folder, build / folder)
            old = Doc.from_markdown(old_text, build)
        doc = _compose_report(build, studies, mnist_runs, music_runs, blind_runs, sources, command, pilots,
                              pilot_dirs, audio)
        if update:
            doc = merge_reports(old, doc, f"Built by `npvae report` from results files only and last brought up to "
                                f"date on {datetime.date.today().isoformat()}"
                                + (f" with `{command}`" if command else " by `npvae report --update`")
                                + ". Each section ends with the files it was read from and when.")
        (build / "report.md").write_text(doc.markdown(build))
        doc.pdf(build / "report.pdf", build)
        doc.html(build / "report.html", build)
        n_figs = len(list((build / "figures").glob("*.png")))
        n_audio = len(list((build / "audio").glob("*.wav")))
        for name in ("report.md", "report.pdf", "report.html"):
            os.replace(build / name, out / name)
        for folder in FOLDERS:
            if (out / folder).exists():
                os.rename(out / folder, build / f"{folder}.old")
            if (build / folder).exists():
                os.rename(build / folder, out / folder)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    md, pdf, html, figs = out / "report.md", out / "report.pdf", out / "report.html", out / "figures"
    log(f"wrote {md}, {pdf}, {html} and {n_figs} figures in {figs}"
        + (f", {n_audio} audio clips in {out / 'audio'}" if n_audio else ""))
    return {"markdown": md, "pdf": pdf, "html": html, "figures": figs}


def retypeset(markdown_path, log=print) -> dict:
    """Write report.pdf and report.html beside a ``report.md`` that ``npvae report``
    wrote, from it and the figures and audio files it links (no run folder needed):
    how a report is typeset again when its runs are gone. Raises OutputError for a
    Markdown file it did not write or a linked file that is missing."""
    md = Path(markdown_path)
    if not md.is_file():
        raise OutputError(f"--from-markdown {md}: no such file; give the report.md of a report npvae report wrote")
    folder = md.parent
    check_writable_dir(folder)
    try:
        doc = Doc.from_markdown(md.read_text(encoding="utf-8"), folder)
    except (ValueError, UnicodeDecodeError) as exc:
        raise OutputError(f"{md} is not a report that npvae report wrote ({exc})") from None
    linked = [b[1] for b in doc.blocks if b[0] == "img"] + [p for b in doc.blocks if b[0] == "audio" for _, p in b[1]]
    missing = [shown(p) for p in linked if not p.is_file()]
    if missing:
        raise OutputError(f"{md} links files that are not there: {', '.join(missing)}; restore them (the report's "
                          "figures/ and audio/ folders) or rebuild the report from its runs")
    pdf, html = doc.pdf(folder / "report.pdf", folder), doc.html(folder / "report.html", folder)
    log(f"wrote {pdf} and {html} from {md} and the {len(linked)} files it links")
    return {"markdown": md, "pdf": pdf, "html": html}


def _compose_report(out: Path, studies, mnist_runs, music_runs, blind_runs, sources, command,
                    pilots: dict | None = None, pilot_dirs=(), audio: bool = True) -> Doc:
    """The report of these results as a Doc, its figures written into ``out``/figures
    (and, with ``audio``, the Part II example clips into ``out``/audio)."""
    figs = out / "figures"
    figs.mkdir(exist_ok=True)
    doc = Doc()
    doc.h1("Blind source separation with variational autoencoders")
    shipped = (", except the supervised rows of the blind section, which are read from the shipped model files "
               "(that section says which)") if uses_shipped(blind_runs, mnist_runs) else ""
    doc.p(f"Generated by `npvae report` on {datetime.date.today().isoformat()}"
          + (f" with `{command}`" if command else "") + " from: "
          + ", ".join(shown(d) for d in [*sources, *pilot_dirs]) + ". Every number below is read from "
          f"those results files{shipped}; each section ends with those it was read from.")
    doc.h2("Approach and implementation")
    for para in APPROACH:
        doc.p(para)
    for kind in ("mnist", "music"):
        for study, sdir in studies:
            if study["task"] == kind:
                _study_section(doc, study, sdir, figs)
    if mnist_runs:
        _mnist_section(doc, mnist_runs, figs)
    if music_runs:
        _music_section(doc, music_runs, figs, audio)
    if blind_runs:
        blind_section(doc, blind_runs, mnist_runs, figs)
    for study, sdir in studies:
        if not (is_ablation(study) or is_sweep(study)):
            _baseline_section(doc, study, sdir)
    infos = shipped_section(doc)
    pilots = pilots or {}
    trained = [r for r in music_runs if not r.get("evaluation_only")]
    marks_section(doc, infos, mnist_runs, trained, pilots.get("mnist", ()), pilots.get("music", ()))
    _discussion(doc, studies, mnist_runs, trained)
    published_section(doc)
    return with_sources(doc, [shown(d) for d in sources], datetime.date.today().isoformat(),
                        [shown(d) for d in pilot_dirs])


def with_sources(doc: Doc, runs: list[str], date: str, pilots: list[str] = ()) -> Doc:
    """``doc`` with each section ending in the line of the files it was read from
    (:mod:`.report_sources`: those of ``runs`` it names, and the shipped files; ``pilots``
    feed the missed-marks section alone, so no other section lists them, even where a
    pilot's folder name is a common word such as "recipe")."""
    sections = doc.sections()
    out = Doc()
    out.blocks = list(sections[0][1])
    for title, blocks in sections[1:]:
        fed_by = [*runs, *pilots] if title.startswith(MARKS_TITLE) else runs
        out.blocks += report_sources.attach(blocks, report_sources.section_sources(title, blocks, fed_by, date))
    return out


__all__ = ["build_report", "classify", "example_audio", "read_mnist_run", "read_music_run", "retypeset"]

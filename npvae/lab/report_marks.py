"""The report section on the marks the shipped models miss: what was tried toward each,
with its numbers, and what the training curves say limits it.

For every missed mark (:func:`.report_shipped.missed_marks`) the section lists the
shipped models of that task (their command and score, read from the files) and the full
training runs given to the report (recipe, parameters, time, score, gap), and reads each
run's curves over its constant-learning-rate epochs (:func:`read_curve`): a validation
score still rising there means the training budget limits the run; a training loss that
falls while the validation loss and score stay flat means what generalises from the
training data limits it. :func:`limit_verdict` turns that reading into a sentence.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..engine.config import defaults
from ..tasks.music import MusicConfig

from .document import Doc
from .report_shipped import missed_marks

MARKS_TITLE = "Missed marks: what was tried, and what limits it"

RISING = 0.05        # dB an epoch: a validation score rising faster than this is still improving
OVERFIT_RATIO = 2.0  # training loss falling this many times faster than validation loss
MIN_EPOCHS = 4       # fewer constant-lr epochs than this: no reading
FLAT = 1e-9          # a loss falling less than this fraction of its level an epoch is flat (rounding noise)
BUDGET_SECONDS = 7200  # the marks' training budget: 2 hours of wall time on the reference machine

CURVE_NOTE = (
    "A run's curves are read over its constant-learning-rate epochs (before a cosine tail), on the "
    "last half of them: the validation score's rise an epoch (a straight-line fit), and the fall an epoch "
    "of the training and the validation loss. A score still rising by at least "
    f"{RISING} dB an epoch there says the training budget limits the run; a score that has stopped "
    f"rising while the training loss falls at least {OVERFIT_RATIO:g} times faster than the validation "
    "loss says that what generalises from the training data limits it; a score and losses that have both "
    "levelled off say the network at that recipe has reached what it can do. A run that validated a running "
    "average of its weights is not read: the average lags the weights.")


@dataclass
class CurveReading:
    """What a run's history says over the last half of its constant-lr epochs.

    epochs : (first, last) epoch numbers of that window (1-based).
    score_rise : validation score's rise, dB an epoch.
    train_fall, val_fall : training and validation loss falls an epoch (positive = falling).
    """
    epochs: tuple[int, int]
    score_rise: float
    train_fall: float
    val_fall: float


def read_curve(history: dict, score_key: str) -> CurveReading | None:
    """Read ``history`` (per-epoch arrays: ``val_lr``, ``train_total``, ``val_total`` and
    ``score_key``) over the last half of the epochs run at the first epoch's learning
    rate; None when fewer than ``MIN_EPOCHS`` such epochs were run."""
    if any(k not in history for k in ("val_lr", "train_total", "val_total", score_key)):
        return None
    lr = np.atleast_1d(np.asarray(history["val_lr"], float))
    constant = int(np.argmin(lr >= lr[0] * 0.999)) if np.any(lr < lr[0] * 0.999) else len(lr)
    if constant < MIN_EPOCHS:
        return None
    idx = np.arange(constant - max(3, constant // 2), constant)

    def slope(key):
        return float(np.polyfit(idx, np.atleast_1d(np.asarray(history[key], float))[idx], 1)[0])

    def fall(key):
        # a level loss fits a slope of rounding noise (1e-14 for a loss of 500) whose sign
        # differs between machines: below FLAT of the loss it reads as zero
        level = float(np.mean(np.abs(np.asarray(history[key], float)[idx])))
        f = -slope(key)
        return 0.0 if abs(f) <= FLAT * max(level, np.finfo(float).tiny) else f
    return CurveReading((int(idx[0]) + 1, int(idx[-1]) + 1), slope(score_key), fall("train_total"),
                        fall("val_total"))


def limit_verdict(reading: CurveReading, score_name: str) -> str:
    """One sentence: what ``reading`` says limits the run (see the module docstring)."""
    where = f"over epochs {reading.epochs[0]}-{reading.epochs[1]} at constant learning rate"
    if reading.score_rise >= RISING:
        return (f"its validation {score_name} was still rising {reading.score_rise:.2f} dB an epoch {where}, "
                f"with the training and validation losses falling alike ({reading.train_fall:.3g} and "
                f"{reading.val_fall:.3g} an epoch): the training budget limits it")
    if reading.train_fall > 0 and reading.train_fall >= OVERFIT_RATIO * max(reading.val_fall, 0.0):
        return (f"its validation {score_name} had stopped rising ({reading.score_rise:+.2f} dB an epoch {where}) "
                f"while the training loss still fell {reading.train_fall:.3g} an epoch against "
                f"{reading.val_fall:.3g} for the validation loss: what generalises from the training data "
                f"limits it, not the budget")
    return (f"its validation {score_name} ({reading.score_rise:+.2f} dB an epoch) and both losses had levelled "
            f"off {where}: the network at this recipe has reached what it can do")


def _widths(c, key: str = "channels") -> str:
    """"32-64-128" for the layer widths under ``key`` ("hidden" for the dense model's)."""
    values = c.get(key)
    if values is None or np.size(values) == 0:
        return "default widths"
    return "-".join(str(int(x)) for x in np.atleast_1d(values))


def _decay(c) -> str:
    """The optimiser's extras: weight decay and a weight average, when set."""
    wd, ema = float(c.get("weight_decay", 0.0)), float(c.get("ema_decay", 0.0))
    return (f", weight decay {wd:g}" if wd else "") + (f", weight average {ema:g}" if ema else "")


def _layers(c) -> str:
    """The new layers a recipe uses: its norm and pooling ("" for neither)."""
    return ((f", {c['norm']}norm" if str(c.get("norm", "none")) != "none" else "")
            + (f", {c['down']} pooling" if str(c.get("down", "stride")) != "stride" else ""))


def _mnist_recipe(c) -> str:
    dense = str(c["model"]) == "dense"
    return (f"{c['model']} {_widths(c, 'hidden' if dense else 'channels')}"
            + (f", latent {int(c['latent_dim'])}" if dense and "latent_dim" in c else "")
            + (f", {int(c['blocks'])} blocks" if "blocks" in c and not dense else "")
            + _layers(c)
            + f", beta {float(c['beta']):g}, {'sampling' if bool(c.get('sample', True)) else 'no sampling'}, "
            f"{int(c['epochs'])} epochs, lr {c['lr_schedule']}" + _decay(c))


# Part II settings a recipe names only when they differ from the task's defaults
MUSIC_EXTRAS = {"frames": "{:g} frames", "latent_channels": "latent {:g} channels", "batch_size": "batch {:g}",
                "remix_prob": "remix prob {:g}", "gain_db": "gain {:g} dB", "voice_pitch": "voice pitch {:g} st"}


def _music_recipe(c) -> str:
    default = defaults(MusicConfig)
    extras = "".join(f", {fmt.format(float(c[key]))}" for key, fmt in MUSIC_EXTRAS.items()
                     if key in c and float(c[key]) != default[key])
    rnn = int(c.get("rnn_layers", 0))
    stacks = int(c.get("stacks", 1))
    return ((f"{stacks} stacks of " if stacks > 1 else "") + f"{_widths(c)}" + _layers(c)
            + (f", LSTM {rnn} x {int(c.get('rnn_hidden', 256))}" if rnn else "")
            + (f", dropout {float(c['dropout']):g}" if float(c.get("dropout", 0.0)) else "")
            + (", residual" if bool(c.get("residual", False)) else "")
            + f", {int(c['epochs'])} epochs, loss {c['loss']}, remix {c.get('remix', 'none')}, "
            f"logit penalty {float(c.get('logit_penalty', 0.0)):g}" + extras + _decay(c))


def _seconds(seconds: float) -> str:
    """A training time in seconds, flagged when past the marks' budget."""
    return f"{seconds:.0f}" + (" (over 2 h)" if seconds > BUDGET_SECONDS else "")


def _plain(c: dict) -> bool:
    """An evaluation as the shipped scores are measured: no Wiener masks, one pass."""
    return not bool(c.get("wiener")) and int(c.get("shifts", 1)) == 1


def _validation_eval(run: dict) -> dict | None:
    """The metrics of ``run``'s plain evaluation on the validation split (no Wiener
    masks, one pass, no ``--label``: the task's own validation singers), as the shipped
    scores are measured; None without one."""
    for e in run["evals"]:
        c = e["config"]
        if str(c.get("split")) == "validation" and _plain(c) and not c.get("label"):
            return e["metrics"]
    return None


def _labelled_evals(run: dict) -> str:
    """``"LABEL v / a"`` of each plain evaluation that ``npvae evaluate --label`` named
    (vocals / accompaniment GNSDR, dB), joined by "; "; "-" without one."""
    cells = [f"{e['config']['label']} {float(e['metrics']['model_vocals_gnsdr']):.2f} / "
             f"{float(e['metrics']['model_accompaniment_gnsdr']):.2f}"
             for e in run["evals"] if e["config"].get("label") and _plain(e["config"])]
    return "; ".join(cells) or "-"


def _read_run(run: dict, score_key: str) -> CurveReading | None:
    """:func:`read_curve` of a full run; None for one that validated a running average of
    its weights (``--ema-decay``): the average lags the weights, so its slope would overstate
    how much the run was still gaining."""
    if float(run["config"].get("ema_decay", 0.0)):
        return None
    return read_curve(run["history"], score_key)


def _reading_cells(reading: CurveReading | None) -> list[str]:
    if reading is None:
        return ["-", "-"]
    return [f"{reading.score_rise:+.2f}", f"{reading.train_fall:.3g} / {reading.val_fall:.3g}"]


def _mnist_part(doc: Doc, marks: list[dict], infos: dict, runs: list[dict], pilots: list[dict]):
    # the table measures against the first missed mark of mean PSNR (the best model's, else
    # the VAE's); every other missed Part I mark is a sentence
    mark = next((m for m in marks if m["key"] == "mean_psnr"), marks[0])
    for m in marks:
        if m is not mark:
            doc.p(f"**{m['what']}** (>= {m['target']:g} dB; {m['value']:.2f} dB by {m['name']}, "
                  f"{m['target'] - m['value']:.2f} dB short).")
    rows, readings = [], []
    for name, i in sorted(infos.items(), key=lambda t: -t[1]["scores"].get("mean_psnr", -1e9)):
        if i["task"] == "mnist":
            v = i["scores"]["mean_psnr"]
            rows.append([f"shipped: {name}", f"`{i['command']}`", "-", _seconds(i['train_seconds']), f"{v:.2f}",
                         f"{v - mark['target']:+.2f}", "-", "-"])
    for r in sorted(runs, key=lambda r: -float(r["metrics"]["mean_psnr"])):
        reading = _read_run(r, "val_psnr")
        v = float(r["metrics"]["mean_psnr"])
        rows.append([f"run: {r['dir'].name}", _mnist_recipe(r["config"]), f"{r['params']:,}",
                     _seconds(float(r['metrics']['train_seconds_total'])), f"{v:.2f}", f"{v - mark['target']:+.2f}",
                     *_reading_cells(reading)])
        if reading is not None:
            readings.append((r["dir"].name, v, reading))
    for r in sorted(pilots, key=lambda r: -float(r["metrics"]["mean_psnr"])):
        v = float(r["metrics"]["mean_psnr"])
        rows.append([f"pilot: {r['dir'].name}", _mnist_recipe(r["config"]), f"{r['params']:,}",
                     _seconds(float(r['metrics']['train_seconds_total'])), f"{v:.2f}", f"{v - mark['target']:+.2f}",
                     "-", "-"])
    doc.p(f"**{mark['what']}** (>= {mark['target']:g} dB; {mark['value']:.2f} dB by {mark['name']}, "
          f"{mark['target'] - mark['value']:.2f} dB short). Mean PSNR per source on the 10,000 fixed test pairs:")
    doc.table(["model or run", "recipe", "params", "train time (s)", "mean PSNR (dB)", "against the mark (dB)",
               "validation rise (dB an epoch)", "loss fall an epoch, train / validation"], rows)
    _verdicts(doc, readings, "PSNR")


def _music_part(doc: Doc, marks: list[dict], infos: dict, runs: list[dict], pilots: list[dict]):
    targets = {m["key"]: m["target"] for m in marks}
    for m in marks:
        doc.p(f"**{m['what']}** (>= {m['target']:g} dB; {m['value']:.2f} dB by {m['name']}, "
              f"{m['target'] - m['value']:.2f} dB short).")
    voice_t = targets.get("vocals_gnsdr", 10.5)
    acc_t = targets.get("accompaniment_gnsdr", 10.0)
    rows, readings, ceilings = [], [], []
    for name, i in infos.items():
        if i["task"] == "music":
            s = i["scores"]
            rows.append([f"shipped: {name}", f"`{i['command']}`", "-", _seconds(i['train_seconds']),
                         f"{s['vocals_gnsdr']:.2f} / {s['accompaniment_gnsdr']:.2f}",
                         f"{s['vocals_gnsdr'] - voice_t:+.2f} / {s['accompaniment_gnsdr'] - acc_t:+.2f}", "-", "-", "-",
                         "-"])
    for kind, r in [("run", r) for r in runs] + [("pilot", r) for r in pilots]:
        m = _validation_eval(r)
        if m is None:
            continue
        v, a = float(m["model_vocals_gnsdr"]), float(m["model_accompaniment_gnsdr"])
        singers = np.atleast_1d(m["group_vocals_gnsdr"]).astype(float) if "group_vocals_gnsdr" in m else None
        spread = f"{singers.min():.2f} to {singers.max():.2f}" if singers is not None and singers.size else "-"
        reading = _read_run(r, "val_vocals_si_sdri") if kind == "run" else None
        seconds = float(r["metrics"].get("train_seconds_total", np.sum(r["history"].get("seconds", np.nan))))
        rows.append([f"{kind}: {r['dir'].name}", _music_recipe(r["config"]), f"{r['params']:,}", _seconds(seconds),
                     f"{v:.2f} / {a:.2f}", f"{v - voice_t:+.2f} / {a - acc_t:+.2f}", spread, _labelled_evals(r),
                     *_reading_cells(reading)])
        if reading is not None:
            readings.append((r["dir"].name, v, reading))
        if "oracle_vocals_gnsdr" in m:
            ceilings.append(float(m["oracle_vocals_gnsdr"]))
    doc.p("Vocals / accompaniment GNSDR on the MIR-1K validation singers (dB); other data sets are a run's "
          "evaluations named by `npvae evaluate --label` (say, `--data-dir ../shared/mir1k-more-singers --label "
          "more-singers`: singers never trained or validated on); the validation rise is that of the voice's "
          "SI-SDR improvement:")
    doc.table(["model or run", "recipe", "params", "train time (s)", "GNSDR (dB)", "against the marks (dB)",
               "voice GNSDR across singers (dB)", "other data sets: GNSDR (dB)", "validation rise (dB an epoch)",
               "loss fall an epoch, train / validation"], rows)
    _verdicts(doc, readings, "voice SI-SDR improvement")
    if ceilings:
        doc.p(f"The ideal ratio mask (an oracle's mask on the mixture's phase) scores {max(ceilings):.2f} dB voice "
              "GNSDR on the same clips: the ceiling of separation by masking at this STFT.")


def _verdicts(doc: Doc, readings: list[tuple[str, float, CurveReading]], score_name: str):
    if not readings:
        doc.p("No run given to this report has enough constant-learning-rate epochs to read what limits it.")
        return
    best = max(readings, key=lambda t: t[1])
    doc.p(f"What limits it, read from the best-scoring run with a curve ({best[0]}): "
          + limit_verdict(best[2], score_name) + ".")


def marks_section(doc: Doc, infos: dict, mnist_runs: list[dict], music_runs: list[dict],
                  mnist_pilots: list[dict] = (), music_pilots: list[dict] = ()) -> list[dict]:
    """Append the missed marks' section to ``doc`` (nothing when every mark is met);
    returns the missed marks. Pilots (a recipe with one change at a shorter budget) get a
    row each, compared with one another and not read for what limits a recipe."""
    missed = [m for m in missed_marks(infos) if m["value"] is not None]   # none shipped: said above
    if not missed:
        return missed
    doc.h2(MARKS_TITLE)
    doc.p("For each mark the shipped models miss: the shipped models of its task (read from the files) and the "
          "training runs given to this report, each with its recipe, score and distance to the mark (a training "
          "time past the marks' budget of 2 hours of wall time is flagged; pilots are a recipe with one change "
          "at a shorter budget, to be read against each other at equal epochs). "
          + CURVE_NOTE + " What each setting of a recipe buys, one at a time, is in the ablation sections.")
    mnist = [m for m in missed if m["task"].startswith("mnist")]
    music = [m for m in missed if m["task"] == "music"]
    if mnist:
        _mnist_part(doc, mnist, infos, mnist_runs, list(mnist_pilots))
    if music:
        _music_part(doc, music, infos, music_runs, list(music_pilots))
    return missed


__all__ = ["CurveReading", "limit_verdict", "marks_section", "read_curve"]

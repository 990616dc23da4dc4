"""A study's results: the table (Markdown), the verdict, the figure of validation curves
and the HDF5 file (kind ``loss_study``), from the per-configuration results that
:mod:`npvae.lab.studies` collects.

A study dict is ``{"task", "budget", "study", "rows": [{"name", "label", "group",
metric...}], "curves": {name: {"label", "epoch", "value"}}, "n_eval"}``; ``study`` is
"loss", "ablate <preset>" (an ablation: a "recipe" row and "ablation" rows) or "sweep
<preset>" (a grid: "sweep" rows named by their settings, "latent_dim=4,beta=0.01").
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..files import h5mat
from ..files.atomic import atomic_path, atomic_write_text
from ..plotting import pyplot

STUDY_FILE = "study.h5"
TABLE_FILE = "table.md"
CURVES_FILE = "validation_curves.png"
PRIMARY = {"mnist": ("mean_psnr", "mean PSNR (dB)"), "music": ("vocals_gnsdr", "vocals GNSDR (dB)")}
CURVE = {"mnist": ("val_psnr", "validation PSNR (dB)"),
         "music": ("val_vocals_si_sdri", "validation vocals SI-SDR improvement (dB)")}
COLUMNS = {
    "mnist": [("digit_psnr", "digit PSNR (dB)", ".2f"), ("fashion_psnr", "fashion PSNR (dB)", ".2f"),
              ("mean_psnr", "mean PSNR (dB)", ".2f"), ("mean_ssim", "mean SSIM", ".3f"),
              ("mean_mse", "mean MSE", ".5f"), ("train_seconds", "train time (s)", ".1f")],
    "music": [("vocals_gnsdr", "vocals GNSDR", ".2f"), ("accompaniment_gnsdr", "accomp. GNSDR", ".2f"),
              ("vocals_gsir", "vocals GSIR", ".2f"), ("vocals_gsar", "vocals GSAR", ".2f"),
              ("vocals_si_sdr", "vocals SI-SDR", ".2f"), ("accompaniment_si_sdr", "accomp. SI-SDR", ".2f"),
              ("train_seconds", "train time (s)", ".1f")],
}
# Columns a table shows when some row has them: what a trained VAE's latent carries
# (Part I), the weakest singer's scores (Part II on MIR-1K: is a change good for more
# than a few voices?).
EXTRA_COLUMNS = {"mnist": [("prior_mean_mean_psnr", "latent at prior mean: mean PSNR (dB)", ".2f"),
                           ("kl_nats", "KL (nats a pair)", ".1f"), ("latent_size", "latent (numbers)", "d"),
                           ("epochs", "epochs (time budget)", "d")],
                 "music": [("vocals_gnsdr_weakest_singer", "vocals GNSDR, weakest singer", ".2f"),
                           ("accompaniment_gnsdr_weakest_singer", "accomp. GNSDR, weakest singer", ".2f"),
                           ("epochs", "epochs (time budget)", "d")]}
GROUP_ORDER = ("recipe", "ablation", "alternative", "sweep", "loss", "baseline")


def columns(study: dict) -> list[tuple[str, str, str]]:
    """The table's metric columns: the task's, then :data:`EXTRA_COLUMNS` where any row has them."""
    extra = [c for c in EXTRA_COLUMNS[study["task"]] if any(c[0] in r for r in study["rows"])]
    return COLUMNS[study["task"]] + extra


def is_ablation(study: dict) -> bool:
    return str(study.get("study", "loss")).startswith("ablate")


def is_sweep(study: dict) -> bool:
    return str(study.get("study", "loss")).startswith("sweep")


def cells(row: dict, cols) -> list[str]:
    """``row``'s values in ``cols``' formats; counts ("d") read back from HDF5 as floats too."""
    return [format(int(row[k]) if fmt == "d" else row[k], fmt) if k in row and np.isfinite(row[k])
            else str(row.get(k, "-")) for k, _, fmt in cols]


# A configuration scoring below these failed to train (a diverged or collapsed run):
# music GNSDR 0 dB, the unprocessed mixture's by definition; images 10 dB, what a model
# that returns the same two images for every mixture scores (mnist-vae with its latent
# at the prior mean: 10.00 dB; the mixture itself as both estimates scores 13.54 dB).
FAILED_BELOW = {"music": 0.0, "mnist": 10.0}


def _recipe_row(study: dict) -> dict | None:
    return next((r for r in study["rows"] if r["group"] == "recipe"), None)


def failed(study: dict, row: dict) -> bool:
    """True when ``row``'s primary score is below ``FAILED_BELOW`` for its task: a run that failed to train."""
    return row[PRIMARY[study["task"]][0]] < FAILED_BELOW[study["task"]]


def table_rows(study: dict) -> tuple[list[str], list[list[str]]]:
    """The study's table as (header, rows of cells): an ablation's recipe and its
    one-change rows (with the change in the primary metric against the recipe), or the
    loss configurations, then the baselines."""
    cols = columns(study)
    key = PRIMARY[study["task"]][0]
    recipe = _recipe_row(study)
    header = ["configuration", "group"] + [c[1] for c in cols] + (["against the recipe (dB)"] if recipe else [])
    rows = []
    for r in sorted(study["rows"], key=lambda r: GROUP_ORDER.index(r["group"]) if r["group"] in GROUP_ORDER else 9):
        extra = (["failed to train" if failed(study, r) else f"{r[key] - recipe[key]:+.2f}"] if recipe else [])
        rows.append([r["label"], r["group"]] + cells(r, cols) + extra)
    return header, rows


def markdown_table(study: dict) -> str:
    """:func:`table_rows` as a Markdown table."""
    header, rows = table_rows(study)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def best(study: dict, group: str = "loss") -> dict | None:
    """The row of ``group`` with the highest primary metric (mean PSNR, vocals GNSDR)."""
    key = PRIMARY[study["task"]][0]
    rows = [r for r in study["rows"] if r["group"] == group and np.isfinite(r[key])]
    return max(rows, key=lambda r: r[key]) if rows else None


def verdict(study: dict) -> str:
    """One paragraph naming the best and worst loss configuration, with their numbers;
    for an ablation, what each setting of the recipe bought (:func:`ablation_verdict`)."""
    if is_ablation(study):
        return ablation_verdict(study)
    if is_sweep(study):
        return sweep_verdict(study)
    key, label = PRIMARY[study["task"]]
    rows = sorted((r for r in study["rows"] if r["group"] == "loss"), key=lambda r: -r[key])
    if not rows:
        return "No loss configuration finished."
    top, low = rows[0], rows[-1]
    text = (f"By {label} on the same {study.get('n_eval')} test items, the best loss configuration is "
            f"**{top['label']}** ({top[key]:.2f} dB), the worst {low['label']} ({low[key]:.2f} dB); "
            f"the spread is {top[key] - low[key]:.2f} dB.")
    if len(rows) > 2:
        text += f" The runner-up is {rows[1]['label']} ({rows[1][key]:.2f} dB)."
    return text


def _bought(label: str) -> str:
    """"--blocks 1 instead of 2" (an ablation row's label) as "--blocks 2 rather than 1";
    a switch's "--sample instead of --no-sample" as "--no-sample rather than --sample"."""
    default, value = label.split(" instead of ", 1)
    if value.startswith("--"):
        return f"{value} rather than {default}"
    flag, default = default.split(" ", 1)
    return f"{flag} {value} rather than {default}"


def ablation_verdict(study: dict) -> str:
    """What each setting of the recipe bought: the recipe's score minus the score with
    that one setting at its default, largest first."""
    key, label = PRIMARY[study["task"]]
    recipe = _recipe_row(study)
    rows = [r for r in study["rows"] if r["group"] == "ablation"]
    if recipe is None or not rows:
        return "The ablation is not complete: it needs the recipe and at least one one-change run."
    bought = sorted(((recipe[key] - r[key], r) for r in rows if not failed(study, r)), key=lambda t: -t[0])
    text = (f"By {label} on the same {study.get('n_eval')} test items, the recipe scores {recipe[key]:.2f} dB "
            f"at this budget. What each of its settings buys (the recipe's score minus the score with that "
            f"one setting put back): " + ("; ".join(f"{_bought(r['label'])}: {d:+.2f} dB" for d, r in bought)
                                         or "nothing measured") + ".")
    broken = [r for r in rows if failed(study, r)]
    if broken:
        text += (" Not measured, because the run failed to train (it scored below "
                 f"{FAILED_BELOW[study['task']]:g} dB): " + "; ".join(f"{r['label']} ({r[key]:.2f} dB)" for r in broken)
                 + ".")
    hurt = [r for d, r in bought if d < 0]
    if hurt:
        text += (" At this budget the recipe does better without: " +
                 "; ".join(r["label"] for r in hurt) + ".")
    swapped = [r for r in study["rows"] if r["group"] == "alternative"]
    if swapped:
        text += (" With one setting swapped (the score minus the recipe's): " +
                 "; ".join(f"{r['label']}: " + ("failed to train" if failed(study, r) else f"{r[key] - recipe[key]:+.2f} dB")
                           for r in swapped) + ".")
    return text


def sweep_steps(study: dict) -> dict:
    """How the primary score moves along each key of a sweep: ``{key: [(value, next
    value, [differences])]}``, one difference (next minus this, dB) per pair of
    finished grid points that differ in that key only, between values next to each
    other in the grid's order; runs that failed to train are left out."""
    key = PRIMARY[study["task"]][0]
    points = {}
    for r in study["rows"]:
        if r["group"] == "sweep":
            points[tuple(r["name"].split(","))] = r
    order = {}                 # each key's values in the grid's order
    for name in points:
        for i, part in enumerate(name):
            k, v = part.split("=", 1)
            order.setdefault(i, (k, []))
            if v not in order[i][1]:
                order[i][1].append(v)
    steps = {}
    for i, (k, values) in sorted(order.items()):
        steps[k] = []
        for a, b in zip(values, values[1:]):
            diffs = []
            for name, r in points.items():
                if name[i] != f"{k}={a}":
                    continue
                other = points.get(name[:i] + (f"{k}={b}",) + name[i + 1:])
                if other is not None and not failed(study, r) and not failed(study, other):
                    diffs.append(other[key] - r[key])
            steps[k].append((a, b, diffs))
    return steps


def sweep_verdict(study: dict) -> str:
    """The best and worst grid point of a sweep, with their numbers, then what moving each
    key one step does with the others held (:func:`sweep_steps`), and for a VAE what the
    latent carries (the score lost at the prior mean)."""
    key, label = PRIMARY[study["task"]]
    rows = [r for r in study["rows"] if r["group"] == "sweep"]
    fine = sorted((r for r in rows if not failed(study, r)), key=lambda r: -r[key])
    broken = [r for r in rows if failed(study, r)]
    below = (f"failed to train (below {FAILED_BELOW[study['task']]:g} dB): "
             + "; ".join(f"{r['label']} ({r[key]:.2f} dB)" for r in broken) + ".")
    if not fine:
        return "No point of the sweep has finished." if not rows else "Every point of the sweep " + below

    def shown(r):
        extra = [f"{r['latent_size']:.0f} latent numbers"] if "latent_size" in r else []
        if "prior_mean_mean_psnr" in r:
            extra.append(f"{r[key] - r['prior_mean_mean_psnr']:.2f} dB lost at the prior mean")
        if "kl_nats" in r:
            extra.append(f"KL {r['kl_nats']:.0f} nats")
        return f"{r['label']} ({r[key]:.2f} dB" + "".join(f"; {e}" for e in extra) + ")"

    text = (f"By {label} on the same {study.get('n_eval')} test items, the best point of the grid is "
            f"**{shown(fine[0])}**")
    text += f", the worst {shown(fine[-1])}." if len(fine) > 1 else "."
    moves = []
    for k, steps in sweep_steps(study).items():
        parts = []
        for a, b, d in steps:
            a, b = a.replace(":", " "), b.replace(":", " ")       # a list's numbers as its flag takes them
            if not d:
                parts.append(f"{a} to {b}: no pair of finished points")
                continue
            spread = f", {min(d):+.2f} to {max(d):+.2f}" if len(d) > 1 else ""
            parts.append(f"{a} to {b}: {np.mean(d):+.2f} dB (mean of {len(d)} pair{'s' * (len(d) > 1)}{spread})")
        if parts:
            moves.append(f"--{k.replace('_', '-')} " + ", ".join(parts))
    if moves:
        text += " Moving one setting, the others held: " + "; ".join(moves) + "."
    if all("prior_mean_mean_psnr" in r for r in fine):
        lost = [r[key] - r["prior_mean_mean_psnr"] for r in fine]
        text += (f" With the latent at the prior mean every point that trained loses {min(lost):.2f} to "
                 f"{max(lost):.2f} dB.")
    if broken:
        text += " These points " + below
    return text


def plot_curves(study: dict, path) -> Path:
    """The validation metric per epoch of every trained configuration, one line each."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    # A diverged run (far below the others) would squash every other curve: the axis
    # stops 10 units under the lowest final value of the rest, and its label says so.
    finals = sorted(c["value"][-1] for c in study["curves"].values() if len(c["value"]))
    floor = finals[1] - 10 if len(finals) > 2 and finals[0] < finals[1] - 10 else None
    for name, c in study["curves"].items():
        off = floor is not None and len(c["value"]) and min(c["value"]) < floor
        ax.plot(c["epoch"], c["value"], marker="o", ms=3, ls="--" if name.startswith(("unet", "recipe")) else "-",
                label=c["label"] + (f" (min {min(c['value']):.0f}, off the axis)" if off else ""))
    if floor is not None:
        ax.set_ylim(bottom=floor)
    ax.set_xlabel("epoch")
    ax.set_ylabel(CURVE[study["task"]][1])
    ax.set_title(f"{study['task']} {study.get('study', 'loss')} study: validation curves per configuration",
                 fontsize=10)
    ax.grid(alpha=0.3)
    if study["curves"]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path, path.suffix) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
    return path


def study_tree(study: dict) -> dict:
    """The study as an HDF5 tree: columns, then one group per row and per curve."""
    cols = [c[0] for c in columns(study)]
    rows = {}
    for r in study["rows"]:
        rows[r["name"]] = {"label": r["label"], "group": r["group"],
                           **{k: float(r[k]) for k in cols if k in r}}
    curves = {n: {"label": c["label"], "epoch": np.asarray(c["epoch"], np.int64),
                  "value": np.asarray(c["value"], np.float64)} for n, c in study["curves"].items()}
    return {"task": study["task"], "budget": study.get("budget", ""), "study": study.get("study", "loss"),
            "seed": int(study.get("seed", 0)), "columns": cols,
            "order": [r["name"] for r in study["rows"]], "n_eval": int(study.get("n_eval") or 0),
            "rows": rows, "curves": curves}


def read_study(study_dir) -> dict:
    """A study back from its ``study.h5`` (the form :func:`collect` returns)."""
    t = h5mat.read_tree(Path(study_dir) / STUDY_FILE, expected_kind="loss_study")
    order = t["order"] if isinstance(t["order"], list) else [t["order"]]
    rows = [{"name": n, **{k: (v if isinstance(v, str) else float(v)) for k, v in t["rows"][n].items()}}
            for n in order]
    curves = {n: {"label": c["label"], "epoch": np.atleast_1d(c["epoch"]).tolist(),
                  "value": np.atleast_1d(c["value"]).tolist()} for n, c in t.get("curves", {}).items()}
    return {"task": t["task"], "budget": t["budget"], "study": t.get("study", "loss"), "rows": rows,
            "curves": curves, "n_eval": int(t["n_eval"]), "seed": int(t.get("seed", 0))}


def write_outputs(study_dir, study: dict) -> dict:
    """table.md, study.h5 and validation_curves.png in ``study_dir``; returns their paths."""
    study_dir = Path(study_dir)
    key, label = PRIMARY[study["task"]]
    kind = study.get("study", "loss")
    title = f"the {kind.split(' ', 1)[1]} preset's ablation" if is_ablation(study) else "loss study"
    if is_sweep(study):
        title = f"the {kind.split(' ', 1)[1]} preset's sweep"
    seed = f", seed {study['seed']}" if study.get("seed") else ""
    text = (f"# {study['task']}: {title} ({study.get('budget')} budget{seed})\n\n{markdown_table(study)}\n\n"
            f"{verdict(study)}\n")
    atomic_write_text(study_dir / TABLE_FILE, text)
    h5 = h5mat.write_tree(study_dir / STUDY_FILE, study_tree(study), kind="loss_study")
    fig = plot_curves(study, study_dir / CURVES_FILE)
    return {"table": study_dir / TABLE_FILE, "h5": h5, "figure": fig}

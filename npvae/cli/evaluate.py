"""``npvae evaluate``: score a trained music separator on a dataset split, beside the
ideal-ratio-mask oracle (the ceiling) and the unprocessed mixture (the floor).

    npvae evaluate runs/music_mir1k --dataset mir1k --split validation

Prints SDR, SIR, SAR (BSS Eval v3), NSDR and GNSDR (length-weighted), SI-SDR per
source and system, and writes the per-clip numbers into --results (HDF5, kind
music_results) and a table beside it (.txt); --figure draws the first clip's
spectrograms. On MIR-1K the GNSDR of each singer follows, with the spread across
singers. Every output is checked before the evaluation starts (nothing existing
is replaced without --overwrite) and written atomically.
"""
from __future__ import annotations

import argparse
import os
import re
import time
from pathlib import Path

from ..errors import DatasetError
from ..files.guard import check_output_file
from .common import HelpFormatter, UsageError, positive_int


def add_command(sub, name):
    p = sub.add_parser(name, help="score a music model on a dataset (BSS Eval, GNSDR)", description=__doc__,
                       formatter_class=HelpFormatter)
    p.add_argument("model", nargs="?", metavar="MODEL",
                   help="run directory, model.h5 / results.h5 / checkpoint.npz, or a shipped model's name")
    p.add_argument("--model", dest="model_flag", metavar="MODEL", help="the same as MODEL")
    p.add_argument("--dataset", choices=("mir1k", "irmas", "stems"), default="mir1k")
    p.add_argument("--data-dir", default=None, help="data root (default: $NPVAE_DATA)")
    p.add_argument("--split", default="validation", help="train, validation, test or all")
    p.add_argument("--wiener", action="store_true", help="Wiener-style refinement of the masks")
    p.add_argument("--shifts", type=positive_int, default=1, metavar="N",
                   help="average the masks over N time shifts of the input (N times slower; see npvae separate)")
    p.add_argument("--no-baselines", action="store_true", help="skip the oracle and mixture rows")
    p.add_argument("--label", type=label_name, default=None, metavar="NAME",
                   help="name the data set (say more-singers for a second validation folder): recorded in the "
                        "results, added to their default file name, and the report shows the scores beside "
                        "the validation split's")
    p.add_argument("--results", default=None,
                   help="HDF5 file for the scores (default: <run dir>/eval_<dataset>_<split>[_wiener][_shiftsN]"
                        "[_LABEL].h5)")
    p.add_argument("--overwrite", action="store_true", help="replace existing results, table and figure files")
    p.add_argument("--figure", default=None, help="image of the first clip's spectrograms (.png, .pdf, .svg)")
    p.set_defaults(run=run)
    return p


def label_name(text: str) -> str:
    """A ``--label``: letters, digits, ``-`` and ``_`` (it becomes part of a file name)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a label: use up to 40 letters, digits, '-' or '_', "
                                         "starting with a letter or digit (say more-singers)")
    return text


def results_path(model, dataset: str, split: str, wiener: bool = False, results=None, shifts: int = 1,
                 label: str | None = None) -> Path:
    """Where the scores go: ``results``, else a name beside the model that says which
    options made them (``eval_<dataset>_<split>[_wiener][_shiftsN][_LABEL].h5``)."""
    if results:
        return Path(results)
    model_dir = Path(model) if Path(model).is_dir() else Path(model).parent
    return model_dir / (f"eval_{dataset}_{split}{'_wiener' if wiener else ''}"
                        f"{f'_shifts{shifts}' if shifts != 1 else ''}{f'_{label}' if label else ''}.h5")


def figure_formats() -> set[str]:
    """File extensions matplotlib can save here (``.png``, ``.pdf``, ...)."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    from matplotlib.figure import Figure
    return {"." + ext for ext in Figure().canvas.get_supported_filetypes()}


def check_outputs(a: argparse.Namespace) -> tuple[Path, Path, Path | None]:
    """``(results, table, figure)`` paths, each checked before any work."""
    path = results_path(a.model, a.dataset, a.split, a.wiener, a.results, a.shifts, a.label)
    if path.suffix != ".h5":
        raise UsageError(f"--results {path} must end in .h5 (an HDF5 file; the table goes beside it as .txt)")
    figure = Path(a.figure) if a.figure else None
    if figure is not None and figure.suffix.lower() not in figure_formats():
        raise UsageError(f"--figure {figure} must end in one of {', '.join(sorted(figure_formats()))}")
    from ..files.model_file import resolve_model_path
    a.model_file = resolve_model_path(a.model)      # the file read: no output may replace it
    outputs = [(path, "--results"), (path.with_suffix(".txt"), "--results")]
    if figure is not None:
        if figure.resolve() in {p.resolve() for p, _ in outputs}:
            raise UsageError(f"--figure {figure} is also the results file or table; give it another name")
        outputs.append((figure, "--figure"))
    for p, flag in outputs:
        check_output_file(p, a.overwrite, flag, inputs=[a.model_file])
    return path, path.with_suffix(".txt"), figure


def model_of(a: argparse.Namespace) -> str:
    """MODEL, given as the argument or as --model (one of them)."""
    if a.model and a.model_flag and a.model != a.model_flag:
        raise UsageError(f"two models given ({a.model} and --model {a.model_flag}); give one")
    if not (a.model or a.model_flag):
        raise UsageError("give the model to evaluate: npvae evaluate RUN_DIR_OR_MODEL_FILE")
    return a.model or a.model_flag


def run(a: argparse.Namespace) -> int:
    import numpy as np

    from ..audio.datasets import load_tracks, mir1k_singer
    from ..files.atomic import atomic_path, atomic_write_text
    from ..files.model_file import load_separator, save_music_results
    from ..tasks.music import by_group, evaluate, example, format_groups, format_table
    from ..plotting import plot_example
    from ..separation.separator import shift_offsets
    a.model = model_of(a)
    path, table_path, figure = check_outputs(a)
    sep = load_separator(a.model)
    try:
        shift_offsets(sep.model.DOWNSAMPLE, a.shifts)     # refuse more shifts than phases before the work
    except ValueError as e:
        raise UsageError(f"--shifts: {e}") from None
    tracks = load_tracks(a.dataset, a.split, a.data_dir)
    if not tracks:
        raise DatasetError(f"split '{a.split}' of {a.dataset} holds no clips")
    print(f"evaluating {len(tracks)} clips of {a.dataset}/{a.split} "
          f"({sum(t.duration for t in tracks):.0f} s)", flush=True)
    t0 = time.perf_counter()
    res = evaluate(sep, tracks, wiener=a.wiener, baselines=not a.no_baselines,
                   progress=lambda name: print(f"  {name}", flush=True), shifts=a.shifts)
    systems = ("model",) if a.no_baselines else ("model", "oracle", "mixture")
    table = format_table(res, systems)
    if res["skipped_clips"]:
        table += (f"\n{len(res['skipped_clips'])} clip(s) left out (silent reference, no SDR defined): "
                  + ", ".join(res["skipped_clips"]))
    if a.dataset == "mir1k":        # the summary's dependence on a few voices
        res.update(by_group(res, mir1k_singer))
        table += "\n\n" + format_groups(res, "singer")
    print(table)
    print(f"({time.perf_counter() - t0:.0f} s)")
    metrics = {k: (np.asarray(v) if not isinstance(v, (list, str, float)) else v) for k, v in res.items()
               if not (k == "skipped_clips" and not v)}
    config = {"dataset": a.dataset, "split": a.split, "wiener": a.wiener, "shifts": a.shifts, "model": str(a.model)}
    if a.label:
        config["label"] = a.label
    ex = example(sep, tracks[0], wiener=a.wiener, shifts=a.shifts)
    for p in (path, table_path, figure):          # again: the evaluation took a while
        if p is not None:
            check_output_file(p, a.overwrite, inputs=[a.model_file])
    save_music_results(path, sep, config, {"epoch": []}, metrics,
                       {"sample_rate": sep.stft_cfg.sample_rate, "clip0": ex})
    atomic_write_text(table_path, table + "\n")
    print(f"wrote {path} and {table_path}")
    if figure is not None:
        with atomic_path(figure, figure.suffix) as tmp:
            plot_example(ex, tmp, sep.stft_cfg, f"{tracks[0].name} ({a.dataset} {a.split})")
        print(f"wrote {figure}")
    return 0


__all__ = ["results_path", "check_outputs"]

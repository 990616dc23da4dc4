#!/usr/bin/env python
"""Score a trained separator on a dataset split, beside the ideal-ratio-mask oracle
(the ceiling) and the unprocessed mixture (the floor).

    python scripts/evaluate_music.py --model runs/music_mir1k --dataset mir1k --split validation

Prints SDR, SIR, SAR (BSS Eval v3), NSDR and GNSDR (length-weighted), SI-SDR per
source and system, and writes the per-clip numbers into --results (HDF5,
kind music_results) and a table beside it.
"""
import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from npvae.audio.datasets import load_tracks
from npvae.checkpoint import atomic_write_text
from npvae.errors import DatasetError, FileFormatError
from npvae.fileguard import check_writable_dir
from npvae.io import load_separator, save_music_results
from npvae.pipelines.music import evaluate, example, format_table
from npvae.plotting import plot_example


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="run directory or model.h5 / results.h5 / checkpoint.npz")
    p.add_argument("--dataset", choices=("mir1k", "irmas", "stems"), default="mir1k")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--split", default="validation", help="train, validation, test or all")
    p.add_argument("--wiener", action="store_true", help="Wiener-style refinement of the masks")
    p.add_argument("--no-baselines", action="store_true", help="skip the oracle and mixture rows")
    p.add_argument("--results", default=None,
                   help="HDF5 file for the scores (default: <run dir>/eval_<dataset>_<split>[_wiener].h5)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing results file")
    p.add_argument("--figure", default=None, help="PNG of the first clip's spectrograms")
    return p.parse_args(argv)


def results_path(a) -> Path:
    """Where the scores go: --results, else a name that says which options made them."""
    if a.results:
        return Path(a.results)
    model_dir = Path(a.model) if Path(a.model).is_dir() else Path(a.model).parent
    return model_dir / f"eval_{a.dataset}_{a.split}{'_wiener' if a.wiener else ''}.h5"


def main(argv=None):
    a = parse_args(argv)
    path = results_path(a)
    # Checked before the (long) evaluation starts.
    if path.suffix != ".h5":
        sys.exit(f"error: --results {path} must end in .h5 (an HDF5 file; the table goes beside it as .txt)")
    for p in (path, path.with_suffix(".txt")):
        if p.is_dir():
            sys.exit(f"error: {p} is a folder; give --results a file name")
        if p.exists() and not a.overwrite:
            sys.exit(f"error: {p} exists; pass --overwrite to replace it or --results NEW.h5")
    try:
        check_writable_dir(path.parent)
        sep = load_separator(a.model)
        tracks = load_tracks(a.dataset, a.split, a.data_dir)
    except (DatasetError, FileFormatError, ValueError) as e:
        sys.exit(f"error: {e}")
    if not tracks:
        sys.exit(f"error: split '{a.split}' of {a.dataset} holds no clips")
    print(f"evaluating {len(tracks)} clips of {a.dataset}/{a.split} "
          f"({sum(t.duration for t in tracks):.0f} s)", flush=True)
    t0 = time.perf_counter()
    try:
        res = evaluate(sep, tracks, wiener=a.wiener, baselines=not a.no_baselines,
                       progress=lambda name: print(f"  {name}", flush=True))
    except ValueError as e:
        sys.exit(f"error: {e}")
    systems = ("model",) if a.no_baselines else ("model", "oracle", "mixture")
    table = format_table(res, systems)
    if res["skipped_clips"]:
        table += (f"\n{len(res['skipped_clips'])} clip(s) left out (silent reference, no SDR defined): "
                  + ", ".join(res["skipped_clips"]))
    print(table)
    print(f"({time.perf_counter() - t0:.0f} s)")
    metrics = {k: (np.asarray(v) if not isinstance(v, (list, str, float)) else v) for k, v in res.items()
               if not (k == "skipped_clips" and not v)}
    config = {"dataset": a.dataset, "split": a.split, "wiener": a.wiener, "model": str(a.model)}
    ex = example(sep, tracks[0], wiener=a.wiener)
    save_music_results(path, sep, config, {"epoch": []}, metrics,
                       {"sample_rate": sep.stft_cfg.sample_rate, "clip0": ex})
    atomic_write_text(path.with_suffix(".txt"), table + "\n")
    print(f"wrote {path} and {path.with_suffix('.txt')}")
    if a.figure:
        print(f"wrote {plot_example(ex, a.figure, sep.stft_cfg, f'{tracks[0].name} ({a.dataset} {a.split})')}")


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    main()

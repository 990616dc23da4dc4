#!/usr/bin/env python
"""Make a trained run a shipped model: npvae/pretrained/NAME.h5 (package data).

    python scripts/ship_model.py RUN_DIR --name mnist-unet \\
        --command "python scripts/train_mnist.py --preset best --out RUN_DIR" --commit 1a2b3c4

copies RUN_DIR's model.h5 and adds a /provenance group: the name, the training
command, commit and seed, the run's training time, and the scores measured here on
the task's whole test set (Part I: the 10,000 fixed evaluation pairs; Part II: the
MIR-1K validation singers), on the small slice that tests/test_pretrained.py
re-scores, and on the whole test set again with the latent's posterior mean set to 0
(what the latent contributes). --command and --commit default to RUN_DIR/provenance.json
({"command": ..., "commit": ...}) when it exists.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

from npvae import h5mat, pretrained
from npvae.io import MODEL_FILE, read_model_file
from npvae.pretrained.scoring import HEADLINE, SLICE_TEXT, score, task_of, zero_latent_mean


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a run directory of train_mnist.py / train_music.py (holds model.h5)")
    p.add_argument("--name", required=True, help="shipped name, e.g. mnist-unet (letters, digits, '-')")
    p.add_argument("--command", help="the command that trained the run")
    p.add_argument("--commit", help="the commit the run was trained from")
    p.add_argument("--data-dir", default=None, help="data root (default: $NPVAE_DATA)")
    p.add_argument("--dest", default=str(pretrained.DIR), help="where to write NAME.h5 (default: %(default)s)")
    return p.parse_args(argv)


def run_seconds(run_dir: Path) -> float:
    """Training wall time the run recorded (Part I: metrics.json; Part II: results.h5)."""
    if (run_dir / "metrics.json").exists():
        m = json.loads((run_dir / "metrics.json").read_text())
        return float(m.get("train_seconds_total", m.get("train_seconds_this_session", float("nan"))))
    if (run_dir / "results.h5").exists():
        m = h5mat.read_tree(run_dir / "results.h5", subtree="metrics")
        return float(m.get("train_seconds", float("nan")))
    return float("nan")


def main(argv=None):
    a = parse_args(argv)
    run_dir = Path(a.run_dir)
    if not all(c.isalnum() or c == "-" for c in a.name) or not a.name:
        sys.exit(f"error: --name must be letters, digits and '-', got {a.name!r}")
    recorded = {}
    if (run_dir / "provenance.json").exists():
        recorded = json.loads((run_dir / "provenance.json").read_text())
    command, commit = a.command or recorded.get("command"), a.commit or recorded.get("commit")
    if not command or not commit:
        sys.exit("error: give --command and --commit (or write them into RUN_DIR/provenance.json)")
    source = run_dir / MODEL_FILE
    if not source.exists():
        sys.exit(f"error: {source} does not exist; pass a finished run directory")
    def load():
        model, config = read_model_file(source)
        if type(model).__name__ == "SpectrogramUNetVAE":
            from npvae.io import load_separator
            model = load_separator(source)
        return model, config

    model, config = load()
    task = task_of(model)
    t0 = time.perf_counter()
    scores = score(model, config, a.data_dir)
    slice_scores = score(model, config, a.data_dir, slice=True)
    prior_mean = score(zero_latent_mean(load()[0]), config, a.data_dir)
    print(f"scored in {time.perf_counter() - t0:.0f} s: {HEADLINE[task]} {scores[HEADLINE[task]]:.3f} "
          f"(slice {slice_scores[HEADLINE[task]]:.3f})")
    tree = h5mat.read_tree(source, expected_kind="model")
    tree["provenance"] = {
        "name": a.name, "task": task, "command": command, "commit": commit,
        "seed": int(config.get("seed", 0)), "train_seconds": run_seconds(run_dir),
        "headline": HEADLINE[task], "scores": scores, "slice": SLICE_TEXT[task], "slice_scores": slice_scores,
        "scores_latent_at_prior_mean": prior_mean,
        "shipped": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    if recorded.get("env"):                    # e.g. thread settings the run used
        tree["provenance"]["environment"] = str(recorded["env"])
    dest = Path(a.dest) / f"{a.name}{pretrained.SUFFIX}"
    h5mat.write_tree(dest, tree, kind="model")
    print(json.dumps({k: v for k, v in tree["provenance"].items()}, indent=1))
    print(f"wrote {dest} ({dest.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    main()

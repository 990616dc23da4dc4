"""A training run's own page: ``index.html`` in its run folder.

Rewritten atomically at every display (every ``display_every`` epochs) and when the
run ends (:func:`write_run_page`): the loss curves (``loss_curves.png``), the latest
example figures, for sound a player for each example (the mixture, the references and
the model's estimates, small WAV files in ``page/``), the final scores once there are
some, every loss term of every epoch as a table (the numbers of ``history.json``) and
the run's settings. It opens from disk, with no server and no network.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..audio.io import write_audio
from . import html

PAGE_FILE = "index.html"
MEDIA_DIR = "page"          # the page's sound files, beside it


def write_sounds(folder: Path, sounds: dict, sample_rate: int) -> dict[str, Path]:
    """Each ``label: waveform`` as 16-bit WAV ``folder/<label>.wav``; ``{label: path}``."""
    out = {}
    for label, wave in sounds.items():
        x = np.clip(np.asarray(wave, np.float32).reshape(-1), -1.0, 1.0)
        out[label] = write_audio(folder / f"{html.slug(label)}.wav", x, sample_rate, subtype="PCM_16")
    return out


def history_table(history: dict) -> str:
    """Every entry of ``history``, one row per epoch."""
    keys = [k for k in history if k != "epoch"]
    rows = [[epoch] + [history[k][i] if i < len(history[k]) else "" for k in keys]
            for i, epoch in enumerate(history.get("epoch", []))]
    return html.table(["epoch"] + keys, rows, text_columns=0)


def write_run_page(run_dir, config: dict, history: dict, shown=None, metrics: dict | None = None) -> Path:
    """Write ``run_dir/index.html``: the run after its latest epoch in ``history``.

    config : the run's config.json record. shown : the latest display's
    :class:`~npvae.engine.task.Shown` (None: no examples). metrics : the final scores
    (None while the run trains).
    """
    run_dir = Path(run_dir)
    epochs = history.get("epoch", [])
    done, total = (epochs[-1] if epochs else 0), config.get("epochs")
    state = "finished" if metrics is not None else "training"
    parts = [html.paragraph(f"{config.get('pipeline', 'npvae')} run, {state}: epoch {done} of {total}. "
                            "This page is rewritten every display_every epochs "
                            f"({config.get('display_every')}); reload it to follow the run.", "note")]
    curves = run_dir / "loss_curves.png"
    if curves.exists():
        parts += [html.heading("Loss curves"), html.image(curves, run_dir, "training (solid) and validation "
                                                          "(dashed) loss terms per epoch")]
    if shown is not None and (shown.figures or shown.audio or shown.references):
        parts.append(html.heading(f"Examples after epoch {done}"))
        for label, path in shown.figures.items():
            parts.append(html.image(path, run_dir, label))
        sounds = {**shown.references, **shown.audio}
        if sounds:
            files = write_sounds(run_dir / MEDIA_DIR, sounds, shown.sample_rate)
            parts.append(html.players(html.audio(path, run_dir, label) for label, path in files.items()))
    if metrics:
        parts += [html.heading("Final scores"),
                  html.table(["score", "value"], sorted(metrics.items()))]
    if epochs:
        parts += [html.heading("Loss terms per epoch"),
                  html.paragraph("train_* on the training batches (running mean over the epoch), val_* on the "
                                 "validation data; val_lr and val_beta are the learning rate and the KL weight; "
                                 "seconds the epoch's duration.", "note"),
                  history_table(history)]
    settings = [(k, v if isinstance(v, (int, float, str, bool)) or v is None else str(v))
                for k, v in config.items() if not isinstance(v, dict) and not (isinstance(v, list) and len(v) > 16)]
    parts += [html.heading("Settings"), html.details(f"{len(settings)} settings (config.json)",
                                                     html.table(["setting", "value"], settings, text_columns=2))]
    return html.write_page(run_dir / PAGE_FILE, f"{run_dir.name}", parts)


__all__ = ["write_run_page", "write_sounds", "history_table", "PAGE_FILE", "MEDIA_DIR"]

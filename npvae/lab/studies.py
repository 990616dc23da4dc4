"""Studies: one model trained under several configurations with the same seeds, data and
budget, every one scored on the same fixed test set.

- the loss study (the default): the loss configurations and the baselines;
- the ablation of a preset (``ablate="best"``...): the preset's recipe, then the same
  recipe with one of its settings put back to the task's default, one at a time
  (:func:`ablation_configurations`), so the table says which change bought what; and
  for some presets, the recipe with one setting swapped for another value
  (:data:`ALTERNATIVES`: GroupNorm in place of BatchNorm, say);
- the sweep of a preset (``ablate="vae", sweep=["latent_dim=2,4", "beta=0.01,0.1"]``):
  the preset's recipe at every point of a grid of settings (:func:`sweep_configurations`),
  so the table says how the score moves with each.

``npvae study`` runs :func:`run_study`. A study directory holds::

    <name>/               one run directory per configuration (the training run's files)
    <name>/log.txt        that configuration's output
    <name>/study_result.json   written last, atomically: the configuration is done
    table.md              the test metrics and training time per configuration
    study.h5              the same as HDF5 / MATLAB v7.3 (kind "loss_study")
    validation_curves.png the validation metric per epoch of every trained configuration

Each configuration runs as its own process (``python -m npvae.lab.studies run-one ...``),
up to ``jobs`` at a time; every model is trained by :func:`run_training`. Under
``mpirun -n P`` the configurations to run are dealt to the ranks in turn (each rank runs
its share, ``jobs`` at a time, with the CPUs MPI gives it; the study directory must be on
a file system every rank sees) and rank 0 writes the table once all are done. With
``resume``, a finished configuration (its ``study_result.json`` exists) is never trained
again and an unfinished one resumes from its checkpoint.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..audio.datasets import list_mir1k, load_tracks, mir1k_root, mir1k_singer
from ..audio.stft import STFTConfig
from ..baselines.nmf import ImageNMFSeparator, SpectrogramNMFSeparator
from ..engine.checkpoint import CHECKPOINT_FILE
from ..files.atomic import TMP_TAG, atomic_write_text
from ..data.mnist import load_images
from ..errors import DatasetError, OutputError
from ..files.guard import check_writable_dir, remove_named
from ..files.model_file import MODEL_FILE, load_separator
from ..metrics.image import separation_report
from ..tasks import mnist as mnist_pipe
from ..tasks import music as music_pipe
from ..plotting import save_grid

from .study_table import CURVE, CURVES_FILE, STUDY_FILE, TABLE_FILE, write_outputs

TASKS = ("mnist", "music")
RESULT_FILE = "study_result.json"

# ----------------------------------------------------------------------------- configurations


@dataclass(frozen=True)
class Configuration:
    """One entry of a study.

    name : directory and HDF5 name. label : what the table says. group : "loss" (the loss
    study), "baseline", "recipe" (an ablated preset whole), "ablation" (that recipe with
    one setting at its default), "alternative" (with one setting at another value) or
    "sweep" (a point of a sweep's grid). kind : "vae" (trained by :func:`run_training`
    with ``settings`` over the budget's) or "nmf" (supervised NMF, ``settings`` its options).
    """
    name: str
    label: str
    group: str
    kind: str = "vae"
    settings: dict = field(default_factory=dict)


# Budgets: training settings shared by every configuration of a task, NMF options, and
# per-model settings (Part I: "dense", "unet"). "tiny" is for tests and smoke runs, "default" for the report.
BUDGETS = {
    "mnist": {
        "tiny": {"common": {"train_limit": 1000, "eval_limit": 200, "epochs": 2,
                            "latent_dim": 8, "batch_size": 64, "kl_warmup": 0.0, "n_examples": 8},
                 "dense": {"hidden": (64, 32)},
                 "unet": {"channels": (4, 8, 8)},
                 "nmf": {"k": 10, "n_iter": 30, "fit_iter": 30, "max_images": 300},
                 "expected": "about 1 minute on 2 cores"},
        "default": {"common": {"epochs": 5, "kl_warmup": 1.0},
                    "unet": {"epochs": 3},
                    "nmf": {"k": 64, "n_iter": 200, "fit_iter": 100, "max_images": 10000},
                    "expected": "about 10 minutes on 2 cores (measured: dense VAE about 1 minute per "
                                "configuration, the two U-Nets about 5 minutes each, one thread per process)"},
    },
    "music": {
        "tiny": {"common": {"epochs": 1, "train_limit": 3, "eval_limit": 2, "channels": (4, 8, 8),
                            "latent_channels": 4, "batch_size": 4, "frames": 32, "snippet_seconds": 1.0},
                 "nmf": {"k": 8, "n_iter": 20, "fit_iter": 20, "max_frames": 2000},
                 "expected": "about 2 minutes on 2 cores"},
        "default": {"common": {"epochs": 20, "eval_limit": 24},
                    "nmf": {"k": 64, "n_iter": 200, "fit_iter": 100, "max_frames": 20000},
                    "expected": "about 40 minutes on 2 cores (measured: about 12 minutes per trained "
                                "configuration, two at a time, one thread each; NMF under 2 minutes)"},
    },
}
# An ablation trains every configuration with the same, shorter budget than the preset's
# own (its epochs are the budget's): the question is what each setting buys, not the mark.
ABLATION_BUDGETS = {
    "mnist": {"tiny": BUDGETS["mnist"]["tiny"],
              "default": {"common": {"epochs": 3, "kl_warmup": 1.0, "train_limit": 20000},
                          "expected": "4-8 minutes a configuration, two at a time on 2 cores (measured "
                                      "with --ablate best: 15 minutes for its 5)"}},
    "music": {"tiny": BUDGETS["music"]["tiny"],
              "default": {"common": {"epochs": 10, "eval_limit": 24},
                          "expected": "6-11 minutes a configuration, two at a time on 2 cores (measured "
                                      "with --ablate best: 18 minutes for its 3)"}},
}
# Settings of a preset that are its budget, not its recipe: the study's budget sets them.
BUDGET_SETTINGS = ("epochs",)
# What an ablation of a preset also tries in place of the recipe's value, one setting at a
# time: the questions that putting a setting back to its default cannot ask (what GroupNorm
# would do where the recipe has BatchNorm; what dropout or pooling would add).
ALTERNATIVES = {
    ("mnist", "anchor"): {"norm": "group", "dropout": 0.1},
    ("music", "recurrent"): {"norm": "group", "dropout": 0.5, "down": "max"},
}


def _task_class(task: str):
    from ..engine.run import resolve_task
    return resolve_task(task)


def ablatable_presets(task: str) -> list[str]:
    """The presets of ``task`` that :func:`ablation_configurations` can take apart."""
    return sorted(name for name, p in _task_class(task).presets.items()
                  if set(p) - set(BUDGET_SETTINGS) - {"model"})


def _default_setting(task: str, recipe: dict, key: str):
    """What ``key`` is when a run does not set it: the config's default, or for Part I's
    per-model architecture settings (None in the config) the model's own default."""
    from dataclasses import MISSING, fields
    from ..tasks.mnist.task import MODEL_DEFAULTS
    cls = _task_class(task).Config
    field = {f.name: f for f in fields(cls)}[key]
    value = field.default if field.default is not MISSING else field.default_factory()
    if value is None and task == "mnist":
        model = recipe.get("model", {f.name: f for f in fields(cls)}["model"].default)
        value = MODEL_DEFAULTS.get(model, {}).get(key)
    return value


def _shown_setting(key: str, value) -> str:
    """The flag that sets ``key`` to ``value``: "--blocks 2", "--channels 24 48 96", and for
    a switch "--sample" or "--no-sample"."""
    flag = key.replace('_', '-')
    if isinstance(value, bool):
        return f"--{flag}" if value else f"--no-{flag}"
    text = " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return f"--{flag} {text}"


def _shown_value(key: str, value) -> str:
    """What "instead of" names: the value ("24 48 96"), or a switch's flag ("--no-sample")."""
    shown = _shown_setting(key, value)
    return shown if isinstance(value, bool) else shown.split(" ", 1)[1]


def ablation_configurations(task: str, preset: str) -> list[Configuration]:
    """The recipe of ``preset`` (its settings but the budget's, :data:`BUDGET_SETTINGS`),
    then one configuration per setting of it put back to the default (the model stays):
    ``no_<setting>``, labelled "--blocks 1 instead of 2"; then one per alternative value of
    :data:`ALTERNATIVES`: ``alt_<setting>``, labelled "--norm group instead of batch"."""
    presets = _task_class(task).presets
    if preset not in ablatable_presets(task):
        raise ValueError(f"--ablate takes a preset of {task} that changes settings: "
                         f"{', '.join(ablatable_presets(task))}; got {preset!r}")
    recipe = {k: v for k, v in presets[preset].items() if k not in BUDGET_SETTINGS}
    shown = ", ".join(_shown_setting(k, v) for k, v in recipe.items())
    confs = [Configuration("recipe", f"--preset {preset} ({shown})", "recipe", settings=recipe)]
    for key, value in recipe.items():
        if key == "model":
            continue
        default = _default_setting(task, recipe, key)
        if default == value or (isinstance(value, tuple) and tuple(default or ()) == value):
            continue
        confs.append(Configuration(f"no_{key}", f"{_shown_setting(key, default)} instead of "
                                   f"{_shown_value(key, value)}", "ablation",
                                   settings={**recipe, key: default}))
    for key, value in ALTERNATIVES.get((task, preset), {}).items():
        current = recipe.get(key, _default_setting(task, recipe, key))
        confs.append(Configuration(f"alt_{key}", f"{_shown_setting(key, value)} instead of "
                                   f"{_shown_value(key, current)}", "alternative",
                                   settings={**recipe, key: value}))
    return confs


# Settings a sweep may not vary: the study sets them the same for every configuration
# (the budget's epochs, the study's seed, test set and folders) or they change nothing learnt.
SWEEP_FIXED = BUDGET_SETTINGS + ("seed", "eval_limit", "n_examples", "out", "data_dir", "progress", "show",
                                 "tensorboard", "html", "display_every")
SWEEP_SYNTAX = ("KEY=V1,V2,... with KEY a setting (latent_dim or latent-dim) and its values as its flag takes "
                "them; a list's numbers joined by ':' (channels=32:64,24:48:96); a switch true/false")


def sweep_keys(task: str) -> list[str]:
    """The settings of ``task`` that a sweep can vary: its config's fields but :data:`SWEEP_FIXED`."""
    from ..engine.config import field_names
    return [k for k in field_names(_task_class(task).Config) if k not in SWEEP_FIXED]


def _value_text(value, joiner: str = ":") -> str:
    """A swept value as ``--sweep`` writes it (0.003, 32:64, true), or with a list's
    numbers joined by ``joiner`` (a configuration's folder name: 32-64, as no file system
    refuses it)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return joiner.join(map(str, value))
    return repr(value) if isinstance(value, float) else str(value)


def parse_sweep(task: str, items) -> list[tuple[str, list]]:
    """``["latent_dim=2,4,8", "beta=0.01,0.1"]`` as ``[("latent_dim", [2, 4, 8]), ("beta",
    [0.01, 0.1])]``: each value parsed as the flag of that setting parses it
    (:func:`npvae.engine.config.parse_setting`; lists as ``32:64``). Raises ValueError
    naming a bad item, key (with the keys a sweep can vary) or value."""
    from ..engine.config import parse_setting
    task_cls, keys, grid = _task_class(task), sweep_keys(task), []
    for item in items:
        key, eq, values = str(item).partition("=")
        key = key.strip().replace("-", "_")
        if not eq or not key or not values.strip():
            raise ValueError(f"--sweep takes {SWEEP_SYNTAX}; got {item!r}")
        if key not in keys:
            why = " (the study sets it for every configuration)" if key in SWEEP_FIXED else ""
            raise ValueError(f"--sweep: {key!r} is not a setting a {task} sweep can vary{why}; the keys are "
                             f"{', '.join(keys)}")
        if key in dict(grid):
            raise ValueError(f"--sweep names {key} twice: give all its values in one KEY=V1,V2,... item")
        parsed = [parse_setting(task_cls.Config, key, text, task_cls.choices, parts=":")
                  for text in values.split(",") if text.strip()]
        shown = [_value_text(v) for v in parsed]
        twice = sorted({t for t in shown if shown.count(t) > 1})
        if twice:
            raise ValueError(f"--sweep gives {key}={twice[0]} twice: each value once")
        grid.append((key, parsed))
    if not grid:
        raise ValueError(f"--sweep takes at least one {SWEEP_SYNTAX}")
    return grid


def sweep_configurations(task: str, preset: str, items) -> list[Configuration]:
    """The recipe of ``preset`` (as :func:`ablation_configurations` takes it) at every
    point of the grid that ``items`` give (:func:`parse_sweep`), the first key varying
    slowest: ``latent_dim=4,beta=0.01`` ("--latent-dim 4 --beta 0.01"), group "sweep".
    Every point is checked as a run's settings first (a ValueError names the point)."""
    import itertools

    from ..engine.run import make_config
    from ..files.h5mat import matlab_name
    if preset not in _task_class(task).presets:
        raise ValueError(f"--sweep varies a preset of {task}: "
                         f"{', '.join(sorted(_task_class(task).presets))}; got {preset!r}")
    grid = parse_sweep(task, items)
    recipe = {k: v for k, v in _task_class(task).presets[preset].items() if k not in BUDGET_SETTINGS}
    confs, stored = [], {}
    for values in itertools.product(*(v for _, v in grid)):
        point = dict(zip((k for k, _ in grid), values))
        name = ",".join(f"{k}={_value_text(v, joiner='-')}" for k, v in point.items())
        label = " ".join(_shown_setting(k, v) for k, v in point.items())
        if all(recipe.get(k, _default_setting(task, recipe, k)) == v for k, v in point.items()):
            label += f" (--preset {preset} as it is)"
        try:
            make_config(task, {**recipe, **point})
        except ValueError as exc:
            lists = [k for k, v in point.items() if isinstance(v, tuple)]
            hint = f" (in --sweep a list's numbers are joined by ':', {lists[0]}=32:64)" if lists else ""
            typed = ",".join(f"{k}={_value_text(v)}" for k, v in point.items())
            raise ValueError(f"--sweep point {typed} of --preset {preset}: {exc}{hint}") from None
        if matlab_name(name) in stored:      # the study's HDF5 file names every row
            raise ValueError(f"--sweep points {stored[matlab_name(name)]} and {name} would share one name in "
                             "study.h5: sweep fewer settings at a time")
        stored[matlab_name(name)] = name
        confs.append(Configuration(name, label, "sweep", settings={**recipe, **point}))
    return confs


def configurations(task: str, ablate: str | None = None, sweep=None) -> list[Configuration]:
    """The loss configurations and baselines of ``task`` ("mnist" or "music"), or with
    ``ablate`` the ablation of that preset (:func:`ablation_configurations`), or with
    ``sweep`` too (items "KEY=V1,V2,...") the preset at every point of that grid
    (:func:`sweep_configurations`)."""
    if sweep:
        if not ablate:
            raise ValueError("--sweep varies the settings of a preset: name it with --ablate PRESET")
        return sweep_configurations(task, ablate, sweep)
    if ablate:
        return ablation_configurations(task, ablate)
    if task == "mnist":
        loss = [Configuration("bce_beta1", "BCE, beta 1", "loss", settings={"loss": "bce", "beta": 1.0}),
                Configuration("mse_beta1", "MSE, beta 1", "loss", settings={"loss": "mse", "beta": 1.0}),
                Configuration("l1_beta1", "L1, beta 1", "loss", settings={"loss": "l1", "beta": 1.0}),
                Configuration("bce_beta0", "BCE, beta 0 (plain autoencoder: no sampling)", "loss",
                              settings={"loss": "bce", "beta": 0.0, "sample": False}),
                Configuration("bce_beta0p1", "BCE, beta 0.1", "loss", settings={"loss": "bce", "beta": 0.1}),
                Configuration("bce_beta4", "BCE, beta 4", "loss", settings={"loss": "bce", "beta": 4.0})]
        base = [Configuration("unet_vae", "U-Net VAE (BCE, beta 1)", "baseline",
                              settings={"model": "unet", "loss": "bce", "beta": 1.0}),
                Configuration("unet_det", "U-Net, deterministic (beta 0, no sampling)", "baseline",
                              settings={"model": "unet", "loss": "bce", "beta": 0.0, "sample": False}),
                Configuration("nmf", "supervised NMF (Euclidean)", "baseline", "nmf", {"loss": "euclidean"})]
        return loss + base
    if task == "music":
        loss = [Configuration("l1_raw", "L1 on magnitudes (pipeline default)", "loss", settings={"loss": "l1"}),
                Configuration("l1_sqrt", "L1 on compressed magnitudes (^0.5)", "loss",
                              settings={"loss": "l1", "loss_compression": "power"}),
                Configuration("mse_sqrt", "MSE on compressed magnitudes (^0.5)", "loss",
                              settings={"loss": "mse", "loss_compression": "power"}),
                Configuration("gkl", "generalised KL divergence", "loss", settings={"loss": "kl"}),
                Configuration("is", "Itakura-Saito divergence", "loss", settings={"loss": "is"})]
        # No sampling; the KL term stays (beta as in the VAEs) as a penalty on the code:
        # with beta 0 nothing bounds the latent, which overflowed in one of two runs.
        base = [Configuration("unet_det", "U-Net, deterministic (no sampling, code penalty beta 0.01, L1)",
                              "baseline", settings={"loss": "l1", "beta": 0.01, "sample": False}),
                Configuration("nmf", "supervised NMF (KL)", "baseline", "nmf", {"loss": "kl"})]
        return loss + base
    raise ValueError(f"unknown task {task!r}: choose one of {TASKS}")


def get_configuration(task: str, name: str, ablate: str | None = None, sweep=None) -> Configuration:
    confs = configurations(task, ablate, sweep)
    for c in confs:
        if c.name == name:
            return c
    raise ValueError(f"no configuration {name!r} for {task}; known: {[c.name for c in confs]}")


def budget(task: str, name: str, ablate: str | None = None) -> dict:
    """Budget ``name`` of ``task``: an ablation's (a sweep's too) or a loss study's."""
    table = ABLATION_BUDGETS if ablate else BUDGETS
    if name not in table[task]:
        raise ValueError(f"unknown budget {name!r}: choose one of {sorted(table[task])}")
    return table[task][name]


def study_kind(ablate: str | None, sweep=None) -> str:
    """What a study is, as its results record it: "loss", "ablate <preset>" or "sweep
    <preset>" (a sweep's grid may grow on --resume: its points are named by their settings)."""
    if sweep:
        return f"sweep {ablate}"
    return f"ablate {ablate}" if ablate else "loss"


# ----------------------------------------------------------------------------- one configuration

def run_training(task: str, settings: dict, out, log=print) -> dict:
    """Train a model of ``task`` ("mnist" or "music") with ``settings`` (the task's
    training settings: ``epochs``, ``beta``, ``kl_warmup``, ``train_limit``,
    ``eval_limit``, ``data_dir``...) into the run folder ``out`` with the training engine
    (:func:`npvae.engine.run.train`). A run with a checkpoint there resumes with its own
    settings. Every training of the lab goes through here.

    Returns ``{"history": per-epoch lists, "metrics": the final scores}`` and for
    ``"music"`` the trained ``"separator"``.
    """
    from ..engine.run import train
    out = Path(out)
    if (out / CHECKPOINT_FILE).exists():
        result = train(task, {"out": str(out)}, resume=True, log=log)
    else:       # a new run: the folder holds the study's log.txt, and maybe a run killed before its checkpoint
        result = train(task, {**settings, "out": str(out), "progress": False}, overwrite=True, log=log)
    if result.finished_before:      # trained to the end, then stopped before the study recorded it
        trained = {"history": json.loads((out / "history.json").read_text()),
                   "metrics": json.loads((out / "metrics.json").read_text())}
        if task == "music":
            trained["separator"] = load_separator(out / MODEL_FILE)
        return trained
    trained = {"history": result.history, "metrics": result.metrics}
    if task == "music":
        trained["separator"] = result.task.sep
    return trained


TIMED_FILE = "timed_epochs.json"      # a configuration's epochs for a time budget, chosen once


def seconds_per_epoch(task: str, settings: dict, run_dir, steps: int = 5, warmup: int = 2) -> float:
    """The training seconds an epoch of ``settings`` takes in this process: the median of
    ``steps`` optimiser steps (forward, backward, Adam), timed after ``warmup`` untimed ones
    (compilation, the convolutions' algorithm choice), times the batches of an epoch.
    Validation is left out: it is the same work for every configuration of a study.
    A process held to one thread (how a study runs its configurations) counts its own CPU
    seconds, so that other work on the machine does not shorten this configuration's
    budget; with more threads, wall-clock seconds."""
    from statistics import median

    clock = time.process_time if _computes_on_one_thread() else time.perf_counter

    from .. import distributed
    from ..engine.run import make_config, resolve_task
    from ..optim import Adam
    task_cls = resolve_task(task)
    cfg = task_cls.finalize(make_config(task_cls, {**settings, "out": str(run_dir), "progress": False}))
    comm = distributed.world()
    job = task_cls(cfg, Path(run_dir), comm, lambda text: None)
    init_rng, train_rng = job.seeds()
    job.setup(init_rng, comm.noise(train_rng), None)
    optimizer = Adam(job.model, lr=cfg.lr, clip_norm=cfg.clip_norm or None)
    job.model.train()
    times, done = [], 0
    while len(times) < steps:               # more passes over a small training set
        for batch in job.batches(train_rng):
            start = clock()
            job.step(batch, 0.0, cfg.beta)
            optimizer.step()
            done += 1
            if done > warmup:
                times.append(clock() - start)
            if len(times) == steps:
                break
    return median(times) * job.n_batches


def _computes_on_one_thread() -> bool:
    """Whether this process computes on one thread alone: npvae's workers, BLAS and Numba
    (how a study runs its configurations). Its CPU seconds are then its own work's."""
    from threadpoolctl import threadpool_info

    from ..threads import worker_count
    if worker_count() != 1 or any(pool.get("num_threads", 1) != 1 for pool in threadpool_info()):
        return False
    try:
        import numba
    except ImportError:
        return True
    return numba.get_num_threads() == 1


def timed_epochs(task: str, settings: dict, run_dir, minutes: float, log=print) -> int:
    """The epochs of ``settings`` whose training fits ``minutes`` (:func:`seconds_per_epoch`),
    at least 1; chosen once per configuration and kept in its run folder
    (:data:`TIMED_FILE`), so that a resumed study trains the epochs it started with."""
    path = Path(run_dir) / TIMED_FILE
    if path.exists():
        return int(json.loads(path.read_text())["epochs"])
    seconds = seconds_per_epoch(task, settings, run_dir)
    epochs = max(1, int(minutes * 60 // seconds))
    log(f"time budget: {seconds:.1f} s of training an epoch here, so {epochs} epochs in {minutes:g} minutes")
    _write_json_atomic(path, {"minutes": minutes, "seconds_per_epoch": seconds, "epochs": epochs})
    return epochs


def _write_json_atomic(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, default=float))


MNIST_ROW = ("digit_psnr", "fashion_psnr", "mean_psnr", "mean_ssim", "mean_mse")
# recorded by trained VAEs only: what the latent carries, and how many numbers it has
MNIST_LATENT_ROW = ("prior_mean_mean_psnr", "kl_nats", "latent_size")


def _mnist_row(metrics: dict) -> dict:
    return {k: float(metrics[k]) for k in MNIST_ROW + MNIST_LATENT_ROW if k in MNIST_ROW or k in metrics}


def _music_row(summary: dict, system: str, dataset: str = "") -> dict:
    p = system + "_"
    row = {"vocals_gnsdr": summary[p + "vocals_gnsdr"], "accompaniment_gnsdr": summary[p + "accompaniment_gnsdr"],
           "vocals_gsir": summary[p + "vocals_gsir"], "vocals_gsar": summary[p + "vocals_gsar"],
           "vocals_si_sdr": summary[p + "vocals_mean_si_sdr"],
           "accompaniment_si_sdr": summary[p + "accompaniment_mean_si_sdr"]}
    if dataset == "mir1k":          # the weakest of the test singers: a change should help more than a few voices
        groups = music_pipe.by_group(summary, mir1k_singer, system)
        for src in ("vocals", "accompaniment"):
            row[f"{src}_gnsdr_weakest_singer"] = float(np.min(groups[f"group_{src}_gnsdr"]))
    return row


def run_configuration(task: str, budget_name: str, name: str, study_dir, data_dir=None, log=print,
                      ablate: str | None = None, seed: int = 0, minutes: float | None = None,
                      sweep=None) -> dict:
    """Train (or fit) and evaluate one configuration in this process, its weights and
    batches drawn from ``seed``; writes and returns its result: ``{"name", "rows": [...],
    "curve": {"epoch", "value"}}``. ``minutes``: train as many epochs as fit that much
    training time here (:func:`timed_epochs`) instead of the budget's epochs, so that
    every configuration of the study gets the same time. ``sweep``: the items of the
    sweep whose point ``name`` is (:func:`sweep_configurations`)."""
    conf = get_configuration(task, name, ablate, sweep)
    b = budget(task, budget_name, ablate)
    b = {**b, "common": {**b["common"], "seed": int(seed)}, "minutes": minutes}
    run_dir = Path(study_dir) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    run = _run_mnist if task == "mnist" else _run_music
    result = run(conf, b, run_dir, data_dir, log)
    result.update({"name": name, "task": task, "budget": budget_name, "study": study_kind(ablate, sweep),
                   "seed": int(seed),
                   "minutes": minutes})
    _write_json_atomic(run_dir / RESULT_FILE, result)
    return result


def _timed(settings: dict, task: str, b: dict, run_dir: Path, log) -> dict:
    """``settings`` with the epochs of the study's time budget, if it has one (a run that
    has a checkpoint resumes with its own)."""
    if not b.get("minutes") or (run_dir / CHECKPOINT_FILE).exists():
        return settings
    return {**settings, "epochs": timed_epochs(task, settings, run_dir, b["minutes"], log)}


def _epochs_row(b: dict, history: dict) -> dict:
    """A time-budgeted row's trained epochs (the table shows them)."""
    return {"epochs": int(len(history["epoch"]))} if b.get("minutes") else {}


def _run_mnist(conf: Configuration, b: dict, run_dir: Path, data_dir, log) -> dict:
    pipe = mnist_pipe
    settings = {**b["common"], **b.get(conf.settings.get("model", "dense"), {})}
    if conf.kind == "nmf":
        cfg = pipe.MnistConfig(data_dir=data_dir, out=str(run_dir), progress=False,
                               **{k: v for k, v in settings.items() if k in ("train_limit", "eval_limit", "seed")})
        data = pipe.load_data(cfg)
        opts = dict(b["nmf"])
        n = opts.pop("max_images")
        start = time.perf_counter()
        sep = ImageNMFSeparator.train(data.digit_train[:n], data.fashion_train[:n], rule=cfg.rule,
                                      seed=cfg.seed, **conf.settings, **opts)
        seconds = time.perf_counter() - start
        mixture, digit, fashion = data.evaluation_set()
        metrics = pipe.evaluate(sep, mixture, digit, fashion)
        floor = separation_report(mixture, mixture, digit, fashion)
        k = min(8, len(mixture))
        save_grid(run_dir / "grid.png", pipe.example_images(sep, mixture[:k], digit[:k], fashion[:k]),
                  title=f"supervised NMF on evaluation pairs: mean PSNR {metrics['mean_psnr']:.1f} dB")
        log(f"NMF: mean PSNR {metrics['mean_psnr']:.2f} dB on {len(mixture)} pairs ({seconds:.0f} s to learn)")
        return {"rows": [{"name": conf.name, "label": conf.label, "group": conf.group,
                          **_mnist_row(metrics), "train_seconds": seconds},
                         {"name": "mixture", "label": "mixture as the estimate (floor)", "group": "baseline",
                          **_mnist_row(floor), "train_seconds": 0.0}],
                "curve": {"epoch": [], "value": []}, "n_eval": int(len(mixture))}
    settings = _timed({**settings, **conf.settings, "data_dir": data_dir}, "mnist", b, run_dir, log)
    out = run_training("mnist", settings, run_dir, log)
    m, h = out["metrics"], out["history"]
    return {"rows": [{"name": conf.name, "label": conf.label, "group": conf.group, **_mnist_row(m),
                      "train_seconds": float(m["train_seconds_total"]), **_epochs_row(b, h)}],
            "curve": {"epoch": list(h["epoch"]), "value": list(h.get(CURVE["mnist"][0], []))},
            "n_eval": int(m["n_eval_pairs"])}


def _run_music(conf: Configuration, b: dict, run_dir: Path, data_dir, log) -> dict:
    pipe = music_pipe
    settings = {**b["common"], "data_dir": data_dir}
    dataset, seed = settings.get("dataset", "mir1k"), settings.get("seed", 0)
    test = load_tracks(dataset, "validation", data_dir)[:settings.get("eval_limit")]
    if conf.kind == "nmf":
        train_tracks = load_tracks(dataset, "train", data_dir)[:settings.get("train_limit")]
        start = time.perf_counter()
        sep = SpectrogramNMFSeparator.train(train_tracks, STFTConfig.for_dataset(dataset), seed=seed,
                                            **conf.settings, **b["nmf"])
        seconds = time.perf_counter() - start
        res = pipe.evaluate(sep, test, baselines=True)
        log(f"NMF: vocals GNSDR {res['model_vocals_gnsdr']:.2f} dB on {len(test)} clips ({seconds:.0f} s to learn)")
        rows = [{"name": conf.name, "label": conf.label, "group": conf.group, **_music_row(res, "model", dataset),
                 "train_seconds": seconds},
                {"name": "irm", "label": "ideal ratio mask (oracle ceiling)", "group": "baseline",
                 **_music_row(res, "oracle", dataset), "train_seconds": 0.0},
                {"name": "mixture", "label": "unprocessed mixture (floor)", "group": "baseline",
                 **_music_row(res, "mixture", dataset), "train_seconds": 0.0}]
        return {"rows": rows, "curve": {"epoch": [], "value": []}, "n_eval": len(test),
                "eval_seconds": float(np.sum(res["clip_seconds"]))}
    out = run_training("music", _timed({**settings, **conf.settings}, "music", b, run_dir, log), run_dir, log)
    res = pipe.evaluate(out["separator"], test, baselines=False)
    h = out["history"]
    log(f"{conf.label}: vocals GNSDR {res['model_vocals_gnsdr']:.2f} dB on {len(test)} clips")
    return {"rows": [{"name": conf.name, "label": conf.label, "group": conf.group,
                      **_music_row(res, "model", dataset),
                      "train_seconds": float(np.sum(h.get("seconds", [0.0]))), **_epochs_row(b, h)}],
            "curve": {"epoch": list(h["epoch"]), "value": list(h.get(CURVE["music"][0], []))},
            "n_eval": len(test), "eval_seconds": float(np.sum(res["clip_seconds"]))}


# ----------------------------------------------------------------------------- the study

def is_done(study_dir, name: str) -> bool:
    return (Path(study_dir) / name / RESULT_FILE).exists()


def _one_thread_env() -> dict:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env.setdefault(var, "1")
    return env


def check_data(task: str, data_dir=None) -> None:
    """Find the data of ``task`` before any configuration starts (MNIST's files are fetched
    into the cache here, once, when they are nowhere): a missing dataset is one clear
    :class:`~npvae.errors.DatasetError`, not a failure in every configuration's process."""
    if task == "mnist":
        for name in ("mnist", "fashion-mnist"):
            for split in ("train", "test"):
                load_images(name, split, data_dir)
    elif task == "music":
        for split in ("train", "validation"):
            if not list_mir1k(split, data_dir):
                raise DatasetError(f"MIR-1K in {mir1k_root(data_dir)} has no clips of the {split} split")
    else:
        raise ValueError(f"unknown task {task!r}: choose one of {TASKS}")


# What a study writes into its folder besides one folder per configuration.
STUDY_OUTPUTS = (TABLE_FILE, STUDY_FILE, CURVES_FILE)


def check_study_dir(out, task: str, budget_name: str, resume: bool = False, overwrite: bool = False,
                    ablate: str | None = None, seed: int = 0, minutes: float | None = None,
                    sweep=None) -> Path:
    """Check a study's folder before anything is written: a new study refuses a folder that
    already holds files unless ``overwrite`` (then :func:`clear_study_dir` removes the old
    study's files); ``resume`` continues the study there, which must exist and be of the
    same task, kind, budget and seed (a sweep may add points to its grid). Raises :class:`~npvae.errors.OutputError`, or
    FileNotFoundError for a study to resume whose folder does not exist."""
    out = Path(out)
    if resume and not out.exists():
        raise FileNotFoundError(f"no study to resume in {out}: the folder does not exist; --out names the study "
                                "folder to continue (without --resume a new study starts there)")
    check_writable_dir(out)
    entries = sorted(e for e in os.listdir(out) if TMP_TAG not in e) if out.is_dir() else []
    if not entries or overwrite:
        return out
    if not resume:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise OutputError(f"study folder {out} is not empty ({shown}); pass --resume to continue that study "
                          "(finished configurations are kept), --overwrite to start it again, or another --out")
    for path in sorted(out.glob(f"*/{RESULT_FILE}")):
        try:
            done = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        kind = done.get("study", "loss")
        if (done.get("task"), done.get("budget"), kind) != (task, budget_name, study_kind(ablate, sweep)):
            raise OutputError(f"{out} holds a {done.get('task')} study ({kind}) with the {done.get('budget')!r} budget "
                              f"({path.parent.name}); --resume continues a study of the same task and "
                              f"budget and kind: choose another --out")
        if done.get("minutes") != minutes:
            shown = f"--minutes {done['minutes']:g}" if done.get("minutes") else "the budget's epochs"
            raise OutputError(f"{out} holds a study run with {shown} ({path.parent.name}); --resume continues it "
                              "with the same time budget, or choose another --out")
        if done.get("seed", 0) != seed:
            raise OutputError(f"{out} holds a study run with --seed {done.get('seed', 0)} ({path.parent.name}); "
                              f"--resume continues it with the same seed: pass --seed {done.get('seed', 0)}, "
                              "or choose another --out")
    return out


def clear_study_dir(out, task: str, ablate: str | None = None, sweep=None) -> list[Path]:
    """Remove what a study of ``task`` wrote into ``out`` (its configurations' folders,
    table, HDF5 file and figure), nothing else; for a sweep also the folders of points
    an earlier grid had (named KEY=VALUE,..., holding a configuration's log)."""
    names = [c.name for c in configurations(task, ablate, sweep)]
    if sweep and Path(out).is_dir():
        names += sorted(d.name for d in Path(out).iterdir() if d.is_dir() and "=" in d.name
                        and ((d / RESULT_FILE).exists() or (d / "log.txt").exists()) and d.name not in names)
    return remove_named(out, names + list(STUDY_OUTPUTS))


def default_out(task: str, budget_name: str = "default", ablate: str | None = None, seed: int = 0,
                minutes: float | None = None, sweep=None) -> Path:
    """Where a study goes without --out: runs/study-<task>-<budget> or, for an ablation,
    runs/ablate-<task>-<preset>-<budget> (a sweep: runs/sweep-<task>-<preset>-<budget>); a
    seed other than 0 adds -seed<N>, a time budget -<M>min."""
    name = f"ablate-{task}-{ablate}-{budget_name}" if ablate else f"study-{task}-{budget_name}"
    if sweep:
        name = f"sweep-{task}-{ablate}-{budget_name}"
    return Path("runs") / (name + (f"-seed{seed}" if seed else "") + (f"-{minutes:g}min" if minutes else ""))


def run_study(task: str, budget_name: str = "default", out=None, data_dir=None, jobs: int | None = None,
              only=None, log=print, resume: bool = False, overwrite: bool = False,
              ablate: str | None = None, seed: int = 0, minutes: float | None = None, sweep=None) -> dict:
    """Run every configuration of ``task`` not yet done as a subprocess, ``jobs`` at a time
    (default: the number of cores), then write the table, the HDF5 file and the figure.
    ``ablate`` names a preset to take apart or, with ``sweep`` (items "KEY=V1,V2,..."), to
    train at every point of that grid (:func:`configurations`).
    Every configuration draws its weights and batches from ``seed`` (another seed: the
    same study again, to see its spread). ``minutes`` gives every trained configuration
    that much training time instead of the budget's epochs (:func:`timed_epochs`).

    The data and the folder are checked first (:func:`check_data`, :func:`check_study_dir`):
    an existing study is continued only with ``resume`` (finished configurations are kept,
    unfinished ones resume from their checkpoints) and started again only with ``overwrite``.
    Returns :func:`collect`'s study dict plus ``"failed"``: names whose process failed.
    """
    from .. import distributed
    b = budget(task, budget_name, ablate)
    if jobs is not None and (isinstance(jobs, bool) or int(jobs) != jobs or jobs < 1):
        raise ValueError(f"jobs must be a whole number of at least 1, not {jobs!r}")
    comm = distributed.world()
    if minutes is not None and not minutes > 0:
        raise ValueError(f"minutes must be a positive number of minutes of training, not {minutes!r}")
    confs = [c for c in configurations(task, ablate, sweep) if not only or c.name in only]
    out = Path(out or default_out(task, budget_name, ablate, seed, minutes, sweep))
    check_data(task, data_dir)
    check_study_dir(out, task, budget_name, resume, overwrite, ablate, seed, minutes, sweep)
    comm.barrier(timeout=None)          # every rank has checked before any writes
    if overwrite and comm.is_root:
        for p in clear_study_dir(out, task, ablate, sweep):
            log(f"--overwrite: removed {p}")
    comm.barrier(timeout=None)
    out.mkdir(parents=True, exist_ok=True)
    jobs = int(jobs or comm.threads or os.cpu_count() or 1)
    env = _one_thread_env() if jobs > 1 else dict(os.environ)
    env["NPVAE_MPI"] = "0"     # a configuration's process trains alone, also under mpirun
    # the lab is not installed: its processes find it where this one did
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                         *filter(None, [env.get("PYTHONPATH")])])
    todo = []
    for c in confs:
        if is_done(out, c.name):
            if comm.is_root:
                log(f"{c.name}: done already, not trained again")
        else:
            todo.append(c)
    if comm.is_root:
        how = f"{minutes:g} minutes of training each" if minutes else f"expected {b['expected']}"
        log(f"{task} {study_kind(ablate, sweep)} study ({budget_name} budget, {how}): "
            f"{len(todo)} of {len(confs)} configurations to run, {jobs} at a time"
            f"{f' on each of {comm.size} MPI ranks' if comm.parallel else ''}, in {out}")
    if comm.parallel:
        todo = todo[comm.rank::comm.size]
        log = (lambda text, _log=log, _r=comm.rank: _log(f"[rank {_r}] {text}"))  # noqa: E731

    def launch(c: Configuration) -> tuple[str, int, float]:
        (out / c.name).mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "npvae.lab.studies", "run-one", "--task", task, "--budget", budget_name,
               "--config", c.name, "--out", str(out)]
        if ablate:
            cmd += ["--ablate", ablate]
        if sweep:
            cmd += ["--sweep", *sweep]
        if seed:
            cmd += ["--seed", str(seed)]
        if minutes:
            cmd += ["--minutes", repr(float(minutes))]
        if data_dir:
            cmd += ["--data-dir", str(data_dir)]
        start = time.perf_counter()
        with open(out / c.name / "log.txt", "a") as f:
            f.write(f"$ {' '.join(cmd)}\n")
            f.flush()
            proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
            running.add(proc)
            rc = proc.wait()
            running.discard(proc)
        seconds = time.perf_counter() - start
        log(f"{c.name}: {'finished' if rc == 0 else f'FAILED (exit {rc}), see ' + str(out / c.name / 'log.txt')} "
            f"after {seconds:.0f} s")
        return c.name, rc, seconds

    running: set = set()
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        finished = list(pool.map(launch, todo))
    except BaseException:    # Ctrl-C, or the MPI job ending: no configuration trains on unattended
        for proc in list(running):
            proc.kill()
        raise
    finally:
        pool.shutdown(wait=True)
    failed = [name for name, rc, _ in finished if rc != 0]
    if comm.parallel:      # rank 0 writes the table once every rank has finished its share
        everyone = comm.gather_object(failed, timeout=None)
        failed = comm.bcast_object(sorted(sum(everyone, [])) if comm.is_root else None, timeout=None)
        if not comm.is_root:
            return {"task": task, "budget": budget_name, "failed": failed, "rank": comm.rank}
    study = collect(out, task, [c.name for c in confs], budget_name, ablate, sweep)
    study["seed"] = int(seed)
    if study["rows"]:           # no table of nothing when every configuration failed
        write_outputs(out, study)
    study["failed"] = failed
    return study


def collect(study_dir, task: str, names=None, budget_name: str = "", ablate: str | None = None,
            sweep=None) -> dict:
    """The finished configurations' results: ``{"task", "budget", "study", "rows": [...],
    "curves": {...}}``."""
    study_dir = Path(study_dir)
    names = names or [c.name for c in configurations(task, ablate, sweep)]
    rows, curves, n_eval = [], {}, None
    for name in names:
        path = study_dir / name / RESULT_FILE
        if not path.exists():
            continue
        r = json.loads(path.read_text())
        rows.extend(r["rows"])
        n_eval = r.get("n_eval", n_eval)
        if r["curve"]["epoch"]:
            curves[name] = {"label": r["rows"][0]["label"], "epoch": r["curve"]["epoch"],
                            "value": r["curve"]["value"]}
    return {"task": task, "budget": budget_name, "study": study_kind(ablate, sweep), "rows": rows, "curves": curves,
            "n_eval": n_eval}


# ----------------------------------------------------------------------------- subprocess entry

def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m npvae.lab.studies", description="Run one study configuration.")
    sub = p.add_subparsers(dest="cmd", required=True)
    one = sub.add_parser("run-one")
    one.add_argument("--task", choices=TASKS, required=True)
    one.add_argument("--budget", default="default")
    one.add_argument("--config", required=True)
    one.add_argument("--out", required=True)
    one.add_argument("--data-dir", default=None)
    one.add_argument("--ablate", default=None)
    one.add_argument("--seed", type=int, default=0)
    one.add_argument("--minutes", type=float, default=None)
    one.add_argument("--sweep", nargs="+", default=None)
    a = p.parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "Agg")
    run_configuration(a.task, a.budget, a.config, a.out, a.data_dir, log=lambda s: print(s, flush=True),
                      ablate=a.ablate, seed=a.seed, minutes=a.minutes, sweep=a.sweep)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Loss-function study and baselines: one model trained under several loss configurations
with the same seeds, data and budget, every one scored on the same fixed test set.

``scripts/compare_losses.py`` runs :func:`run_study`. A study directory holds::

    <name>/               one run directory per configuration (the pipeline's files)
    <name>/log.txt        that configuration's output
    <name>/study_result.json   written last, atomically: the configuration is done
    table.md              the test metrics and training time per configuration
    study.h5              the same as HDF5 / MATLAB v7.3 (kind "loss_study")
    validation_curves.png the validation metric per epoch of every trained configuration

Each configuration runs as its own process (``python -m npvae_lab.studies run-one ...``),
up to ``jobs`` at a time. Under ``mpirun -n P`` the configurations to run are dealt to
the ranks in turn (each rank runs its share, ``jobs`` at a time, with the CPUs MPI
gives it; the study directory must be on a file system every rank sees) and rank 0
writes the table once all are done. A finished configuration (its ``study_result.json`` exists)
is never trained again; an unfinished one resumes from its checkpoint.
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

from npvae.audio.datasets import load_tracks
from npvae.audio.stft import STFTConfig
from npvae.baselines.nmf import ImageNMFSeparator, SpectrogramNMFSeparator
from npvae.metrics.image import separation_report
from npvae.pipelines import mnist as mnist_pipe
from npvae.pipelines import music as music_pipe
from npvae.plotting import save_grid

from .study_table import CURVE, write_outputs

TASKS = ("mnist", "music")
RESULT_FILE = "study_result.json"

# ----------------------------------------------------------------------------- configurations


@dataclass(frozen=True)
class Configuration:
    """One entry of a study.

    name : directory and HDF5 name. label : what the table says. group : "loss" (the loss
    study) or "baseline". kind : "vae" (trained by the task's pipeline with ``settings``
    overriding its TrainConfig) or "nmf" (supervised NMF, ``settings`` its options).
    """
    name: str
    label: str
    group: str
    kind: str = "vae"
    settings: dict = field(default_factory=dict)


# Budgets: pipeline settings shared by every configuration of a task, NMF options, and
# per-model overrides. "tiny" is for tests and smoke runs, "default" for the report.
BUDGETS = {
    "mnist": {
        "tiny": {"common": {"train_limit": 1000, "eval_limit": 200, "epochs": 2, "hidden": (64, 32),
                            "latent_dim": 8, "batch_size": 64, "warmup": 0.0, "n_examples": 8},
                 "unet": {"channels": (4, 8, 8)},
                 "nmf": {"k": 10, "n_iter": 30, "fit_iter": 30, "max_images": 300},
                 "expected": "about 1 minute on 2 cores"},
        "default": {"common": {"epochs": 5, "warmup": 1.0},
                    "unet": {"epochs": 3},
                    "nmf": {"k": 64, "n_iter": 200, "fit_iter": 100, "max_images": 10000},
                    "expected": "about 25 minutes on 2 cores (measured: dense VAE 1 to 2 minutes per "
                                "configuration, the two U-Nets about 17 minutes each, one thread per process)"},
    },
    "music": {
        "tiny": {"common": {"epochs": 1, "max_train_tracks": 3, "max_val_tracks": 2, "channels": (4, 8, 8),
                            "latent_channels": 4, "batch_size": 4, "frames": 32, "snippet_seconds": 1.0},
                 "nmf": {"k": 8, "n_iter": 20, "fit_iter": 20, "max_frames": 2000},
                 "expected": "about 2 minutes on 2 cores"},
        "default": {"common": {"epochs": 20},
                    "nmf": {"k": 64, "n_iter": 200, "fit_iter": 100, "max_frames": 20000},
                    "expected": "about 40 minutes on 2 cores (measured: about 12 minutes per trained "
                                "configuration, two at a time, one thread each; NMF under 2 minutes)"},
    },
}
def configurations(task: str) -> list[Configuration]:
    """The loss configurations and baselines of ``task`` ("mnist" or "music")."""
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


def get_configuration(task: str, name: str) -> Configuration:
    for c in configurations(task):
        if c.name == name:
            return c
    raise ValueError(f"no configuration {name!r} for {task}; known: {[c.name for c in configurations(task)]}")


def budget(task: str, name: str) -> dict:
    if name not in BUDGETS[task]:
        raise ValueError(f"unknown budget {name!r}: choose one of {sorted(BUDGETS[task])}")
    return BUDGETS[task][name]


# ----------------------------------------------------------------------------- one configuration

def _write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=float))
    os.replace(tmp, path)


def _mnist_row(metrics: dict) -> dict:
    return {k: float(metrics[k]) for k in ("digit_psnr", "fashion_psnr", "mean_psnr", "mean_ssim", "mean_mse")}


def _music_row(summary: dict, system: str) -> dict:
    p = system + "_"
    return {"vocals_gnsdr": summary[p + "vocals_gnsdr"], "accompaniment_gnsdr": summary[p + "accompaniment_gnsdr"],
            "vocals_gsir": summary[p + "vocals_gsir"], "vocals_gsar": summary[p + "vocals_gsar"],
            "vocals_si_sdr": summary[p + "vocals_mean_si_sdr"],
            "accompaniment_si_sdr": summary[p + "accompaniment_mean_si_sdr"]}


def run_configuration(task: str, budget_name: str, name: str, study_dir, data_dir=None, log=print) -> dict:
    """Train (or fit) and evaluate one configuration in this process; writes and returns
    its result: ``{"name", "rows": [...], "curve": {"epoch", "value"}}``."""
    conf = get_configuration(task, name)
    b = budget(task, budget_name)
    run_dir = Path(study_dir) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    run = _run_mnist if task == "mnist" else _run_music
    result = run(conf, b, run_dir, data_dir, log)
    result.update({"name": name, "task": task, "budget": budget_name})
    _write_json_atomic(run_dir / RESULT_FILE, result)
    return result


def _run_mnist(conf: Configuration, b: dict, run_dir: Path, data_dir, log) -> dict:
    pipe = mnist_pipe
    settings = {**b["common"], **(b.get("unet", {}) if conf.settings.get("model") == "unet" else {})}
    if conf.kind == "nmf":
        cfg = pipe.TrainConfig(data_dir=data_dir, out=str(run_dir), progress=False,
                               **{k: v for k, v in settings.items() if k in ("train_limit", "eval_limit")})
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
    cfg = pipe.TrainConfig(data_dir=data_dir, out=str(run_dir), progress=False, **{**settings, **conf.settings})
    out = pipe.train(cfg, resume=True, log=log)
    m, h = out["metrics"], out["history"]
    return {"rows": [{"name": conf.name, "label": conf.label, "group": conf.group, **_mnist_row(m),
                      "train_seconds": float(m["train_seconds_total"])}],
            "curve": {"epoch": list(h["epoch"]), "value": list(h.get(CURVE["mnist"][0], []))},
            "n_eval": int(m["n_eval_pairs"])}


def _run_music(conf: Configuration, b: dict, run_dir: Path, data_dir, log) -> dict:
    pipe = music_pipe
    settings = {**b["common"]}
    cfg = pipe.TrainConfig.from_flat(data_dir=data_dir, out=str(run_dir), progress=False,
                                     **{**settings, **(conf.settings if conf.kind == "vae" else {})})
    test = load_tracks(cfg.dataset, "validation", cfg.data_dir)[:cfg.max_val_tracks]
    if conf.kind == "nmf":
        train_tracks = load_tracks(cfg.dataset, "train", cfg.data_dir)[:cfg.max_train_tracks]
        start = time.perf_counter()
        sep = SpectrogramNMFSeparator.train(train_tracks, STFTConfig.for_dataset(cfg.dataset), seed=cfg.seed,
                                            **conf.settings, **b["nmf"])
        seconds = time.perf_counter() - start
        res = pipe.evaluate(sep, test, baselines=True)
        log(f"NMF: vocals GNSDR {res['model_vocals_gnsdr']:.2f} dB on {len(test)} clips ({seconds:.0f} s to learn)")
        rows = [{"name": conf.name, "label": conf.label, "group": conf.group, **_music_row(res, "model"),
                 "train_seconds": seconds},
                {"name": "irm", "label": "ideal ratio mask (oracle ceiling)", "group": "baseline",
                 **_music_row(res, "oracle"), "train_seconds": 0.0},
                {"name": "mixture", "label": "unprocessed mixture (floor)", "group": "baseline",
                 **_music_row(res, "mixture"), "train_seconds": 0.0}]
        return {"rows": rows, "curve": {"epoch": [], "value": []}, "n_eval": len(test),
                "eval_seconds": float(np.sum(res["clip_seconds"]))}
    out = pipe.train(cfg, resume=True, log=log)
    res = pipe.evaluate(out["separator"], test, baselines=False)
    h = out["history"]
    log(f"{conf.label}: vocals GNSDR {res['model_vocals_gnsdr']:.2f} dB on {len(test)} clips")
    return {"rows": [{"name": conf.name, "label": conf.label, "group": conf.group, **_music_row(res, "model"),
                      "train_seconds": float(np.sum(h.get("seconds", [0.0])))}],
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


def run_study(task: str, budget_name: str = "default", out=None, data_dir=None, jobs: int | None = None,
              only=None, log=print) -> dict:
    """Run every configuration of ``task`` not yet done as a subprocess, ``jobs`` at a time
    (default: the number of cores), then write the table, the HDF5 file and the figure.

    Returns :func:`collect`'s study dict plus ``"failed"``: names whose process failed.
    """
    from npvae import distributed
    budget(task, budget_name)
    comm = distributed.world()
    out = Path(out or f"runs/study-{task}-{budget_name}")
    out.mkdir(parents=True, exist_ok=True)
    confs = [c for c in configurations(task) if not only or c.name in only]
    jobs = max(1, int(jobs or comm.threads or os.cpu_count() or 1))
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
        log(f"{task} study ({budget_name} budget, expected {BUDGETS[task][budget_name]['expected']}): "
            f"{len(todo)} of {len(confs)} configurations to run, {jobs} at a time"
            f"{f' on each of {comm.size} MPI ranks' if comm.parallel else ''}, in {out}")
    if comm.parallel:
        todo = todo[comm.rank::comm.size]
        log = (lambda text, _log=log, _r=comm.rank: _log(f"[rank {_r}] {text}"))  # noqa: E731

    def launch(c: Configuration) -> tuple[str, int, float]:
        (out / c.name).mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "npvae_lab.studies", "run-one", "--task", task, "--budget", budget_name,
               "--config", c.name, "--out", str(out)]
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
    study = collect(out, task, [c.name for c in confs], budget_name)
    write_outputs(out, study)
    study["failed"] = failed
    return study


def collect(study_dir, task: str, names=None, budget_name: str = "") -> dict:
    """The finished configurations' results: ``{"task", "budget", "rows": [...], "curves": {...}}``."""
    study_dir = Path(study_dir)
    names = names or [c.name for c in configurations(task)]
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
    return {"task": task, "budget": budget_name, "rows": rows, "curves": curves, "n_eval": n_eval}


# ----------------------------------------------------------------------------- subprocess entry

def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m npvae_lab.studies", description="Run one study configuration.")
    sub = p.add_subparsers(dest="cmd", required=True)
    one = sub.add_parser("run-one")
    one.add_argument("--task", choices=TASKS, required=True)
    one.add_argument("--budget", default="default")
    one.add_argument("--config", required=True)
    one.add_argument("--out", required=True)
    one.add_argument("--data-dir", default=None)
    a = p.parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "Agg")
    run_configuration(a.task, a.budget, a.config, a.out, a.data_dir, log=lambda s: print(s, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

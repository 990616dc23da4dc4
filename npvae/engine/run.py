"""One training engine for every task: :func:`train`.

A run folder holds, whatever the task::

    checkpoint.npz      parameters, Adam moments, RNG state, history (atomic, every epoch)
    config.json         the settings, the task's name and what the data gave (folders, statistics)
    history.json        per-epoch loss terms on training and validation data
    metrics.json        the final scores
    model.h5            the model (HDF5 / MATLAB v7.3), loads with npvae.load_model
    results.h5          model, config, history, metrics and examples
    loss_curves.png, figures/epoch_XXX.png and the task's own pictures
    index.html          the run's page (html, on by default; :mod:`npvae.watch.run_page`)
    events.out.tfevents.*  TensorBoard's records (tensorboard; :mod:`npvae.watch.board`)

The engine does what is the same for every task (:mod:`npvae.engine.task` says what a
task supplies): it checks and locks the run folder, merges preset, settings and (on
resume) the run's own recorded settings, schedules the learning rate and the KL
weight, clips gradients, trains data-parallel under MPI, checkpoints and resumes
(through :class:`npvae.engine.loop.Trainer`), and writes the records.
"""
from __future__ import annotations

import dataclasses
import errno
import json
import time
from dataclasses import dataclass
from pathlib import Path

from .. import distributed
from .._kernels import kernels
from .._version import __version__
from ..files.atomic import atomic_write_text
from ..errors import NpvaeError, TrainingError
from ..files.guard import RunLock, check_writable_dir, prepare_run_dir, unique_run_dir
from ..files.model_file import MODEL_FILE, RESULTS_FILE
from ..optim import Adam
from ..schedules import schedule_lr
from .loop import Trainer
from ..vae import KLWeight
from ..watch.board import Board, require_writer
from ..watch.run_page import write_run_page
from .config import field_names
from .memory import check_fits, estimate
from .resume import read_run, resume_folder, resume_hint, resumed_config
from .task import Shown, Task


@dataclass
class RunResult:
    """What :func:`train` returns: the run folder, its settings, history and scores
    (``metrics`` is None on MPI ranks other than 0 and when nothing was trained), the
    trained model and the task object (its data and objective)."""
    run_dir: Path
    config: object
    history: dict
    metrics: dict | None
    model: object
    task: Task
    finished_before: bool = False   # resumed a run that had already finished: nothing done


def resolve_task(task) -> type[Task]:
    """A task class from its name (``"mnist"``, ``"music"``, ``"blind-mnist"``, ``"blind-music"``)
    or the class itself."""
    from ..tasks import TASKS
    if isinstance(task, type) and issubclass(task, Task):
        return task
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}: choose one of {', '.join(TASKS)}")
    return TASKS[task]


def make_config(task, settings=None, preset: str = "default"):
    """The task's config: ``preset``'s recipe, then ``settings`` (a dict of fields, or a
    config instance, taken whole). A bad value raises ValueError naming its flag."""
    task = resolve_task(task)
    if isinstance(settings, task.Config):
        return settings
    if preset not in task.presets:
        raise ValueError(f"unknown {task.name} preset {preset!r}: choose one of {', '.join(sorted(task.presets))}")
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(field_names(task.Config)))
    if unknown:
        raise ValueError(f"{task.name} runs have no setting {', '.join(unknown)}; the settings are "
                         f"{', '.join(field_names(task.Config))}")
    return task.Config(**{**task.presets[preset], **settings})


def check_request(task, settings=None, *, preset: str = "default", resume: bool = False,
                  overwrite: bool = False):
    """Refuse, before any work, a request :func:`train` cannot run: a bad setting, or a
    resume that names no run folder or also asks to overwrite it (ValueError naming the
    flag). Returns the new run's config (None for a resume: its settings are the run's)."""
    task_cls = resolve_task(task)
    if resume:
        resume_folder(settings, overwrite)
        return None
    return make_config(task_cls, settings, preset)


def train(task, settings=None, *, preset: str = "default", resume: bool = False, overwrite: bool = False,
          log=print, started=None) -> RunResult:
    """Train ``task`` (a name or a :class:`Task` class) with ``settings`` and write a run folder.

    settings : a dict of the task's config fields (the rest from ``preset``), or a
        config instance (``npvae.engine.TASKS[name].Config``).
    resume : continue the run in ``settings["out"]`` from its checkpoint. Its own
        recorded settings are kept; ``settings`` (a dict) names the changes, and only
        :func:`~npvae.engine.resume.resumable` ones are allowed (``epochs`` to train a
        finished run further, ``lr`` and ``clip_norm`` to recover from divergence...).
        A run that has finished says so and is left as it is.
    overwrite : a new run may replace the files of an old run in ``out``.
    started : called with the run folder once it is known (and locked).

    Raises ValueError for bad settings, :class:`~npvae.errors.NpvaeError` subclasses for
    bad data, folders or files (each message names the fix).
    """
    task_cls = resolve_task(task)
    cfg = check_request(task_cls, settings, preset=preset, resume=resume, overwrite=overwrite)
    if cfg is not None and cfg.tensorboard:
        require_writer()        # the missing extra named before the run folder is made
    if cfg is not None:             # a model too large for the machine is refused before it is built
        check_memory(task_cls, task_cls.finalize(cfg))
    comm = distributed.world()
    if not comm.is_root:
        log = lambda text: None  # noqa: E731 - rank 0 alone speaks
    run_dir, lock = None, None
    try:
        if comm.is_root:      # rank 0 checks, creates and locks the one run folder; the others use it
            if resume:
                run_dir = resume_folder(settings, overwrite)
                if not run_dir.is_dir():
                    raise FileNotFoundError(f"no run to resume in {run_dir}: "
                                            f"{'it is a file' if run_dir.exists() else 'the folder does not exist'}; "
                                            "--out names the run folder to continue")
                lock = RunLock(run_dir).acquire()
            else:
                if cfg.out:
                    check_writable_dir(cfg.out)        # a file named like the folder, say
                run_dir = Path(cfg.out) if cfg.out else unique_run_dir(Path("runs") / task_cls.run_prefix(cfg))
                lock = RunLock(run_dir).acquire()
                prepare_run_dir(run_dir, overwrite=overwrite)
        run_dir = Path(comm.bcast_object(str(run_dir)))
        if started is not None:
            started(run_dir)
        saved = None
        if resume:
            saved = read_run(run_dir, comm)
            cfg, finished = resumed_config(task_cls, run_dir, saved, settings, (MODEL_FILE, RESULTS_FILE))
            if finished is not None:
                log(finished)
                return RunResult(run_dir, cfg, {}, None, None, None, finished_before=True)
        cfg = task_cls.finalize(dataclasses.replace(cfg, out=str(run_dir)))
        comm.check_batch_size(cfg.batch_size)
        return _run(task_cls, cfg, run_dir, saved, comm, log)
    finally:
        if lock is not None:
            lock.release()


def check_memory(task_cls, cfg) -> None:
    """Refuse ``cfg`` when the model it asks for cannot fit in the machine's memory
    (:meth:`Task.planned_model`, :mod:`npvae.engine.memory`)."""
    planned = task_cls.planned_model(cfg)
    if planned is not None:
        spec, example, flags = planned
        check_fits(estimate(spec, example, cfg.batch_size, slots=2 + bool(cfg.ema_decay)), flags)


def _run(task_cls, cfg, run_dir: Path, saved, comm, log) -> RunResult:
    """Train a run whose folder is ready; ``saved``: the checkpoint of a resumed run
    (:class:`~npvae.engine.resume.SavedRun`), None for a new run."""
    if cfg.tensorboard:
        require_writer()         # every rank, before any work (a resumed run's settings are known here)
    task = task_cls(cfg, run_dir, comm, log)
    init_rng, train_rng = task.seeds()
    task.setup(init_rng, comm.noise(train_rng), None if saved is None else saved.config)
    model = task.model
    optimizer = Adam(model, lr=cfg.lr, weight_decay=cfg.weight_decay, clip_norm=cfg.clip_norm or None,
                     ema_decay=cfg.ema_decay)
    config = {**cfg.record(), "pipeline": task_cls.name, **task.record(), "backend": kernels.backend(),
              "npvae_version": __version__}
    trainer = Trainer(model, optimizer, train_rng, run_dir, config=config, display_every=cfg.display_every,
                      progress=cfg.progress, log=log, comm=comm, resume_command=resume_hint(task_cls, run_dir))
    if saved is not None and trainer.resume(saved.take()):
        log(f"resumed from {trainer.checkpoint_path} after epoch {trainer.epoch}")
        optimizer.clip_norm = cfg.clip_norm or None      # a named change wins over the checkpoint's
    if comm.is_root:
        atomic_write_text(run_dir / "config.json", json.dumps(config, indent=2, default=str))
    log(f"{task.describe()}; backend {kernels.backend()}; run folder {run_dir}")
    if comm.parallel:
        log(f"data-parallel over {comm.size} MPI ranks, {cfg.batch_size // comm.size}+ items of each batch of "
            f"{cfg.batch_size} per rank, {comm.threads} thread(s) each")
    kl_weight = KLWeight(cfg.beta, cfg.kl_warmup)

    def step(batch, epoch):
        optimizer.lr = schedule_lr(cfg.lr_schedule, epoch, cfg.epochs, cfg.lr)
        return task.step(batch, epoch, kl_weight(epoch))

    def validate():
        terms = task.validate(trainer.epoch, kl_weight(trainer.epoch))
        return {**terms, "beta": kl_weight(trainer.epoch), "lr": optimizer.lr}

    board = Board(run_dir) if cfg.tensorboard and comm.is_root else None    # rank 0 alone writes
    latest = Shown()

    def display(epoch, history):
        nonlocal latest
        latest = task.display(epoch, history) or Shown()
        task.save_curves(run_dir / "loss_curves.png", history)
        if board is not None:
            board.display(epoch, history, latest)
        if cfg.html:
            write_run_page(run_dir, config, history, latest)

    start = time.perf_counter()
    try:
        try:
            trainer.fit(cfg.epochs, batches=task.batches, n_batches=task.n_batches, step=step, validate=validate,
                        on_display=display)
        except OSError as exc:
            if isinstance(exc, NpvaeError) or exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO):
                raise
            where = (f"the last checkpoint, after epoch {trainer.checkpoint_epoch}, is intact in "
                     f"{trainer.checkpoint_path}" if trainer.checkpoint_epoch else "no checkpoint was written yet")
            raise TrainingError(f"could not write into {run_dir}: {exc.strerror}; {where}. Free some space, then "
                                f"continue with: {resume_hint(task_cls, run_dir)}") from None
        seconds = time.perf_counter() - start
        if not comm.is_root:   # rank 0 scores and writes the files
            return RunResult(run_dir, cfg, trainer.history, None, model, task)
        return _finish(task, cfg, run_dir, config, trainer, seconds, board, latest, log)
    finally:
        if board is not None:
            board.close()


def _finish(task, cfg, run_dir: Path, config: dict, trainer, seconds: float, board, latest, log) -> RunResult:
    """Score the trained model and write the run's records, model, page and last events."""
    model = task.model
    model.eval()     # scored and saved as trained: no running statistics moved, no dropout, by the scoring
    metrics = task.evaluate(trainer.history)
    metrics["train_seconds_this_session"] = float(seconds)
    metrics["train_seconds_total"] = float(sum(trainer.history.get("seconds", [])))
    atomic_write_text(run_dir / "history.json", json.dumps(trainer.history, indent=1))
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2, default=float))
    task.save_curves(run_dir / "loss_curves.png", trainer.history)
    task.save(config, trainer.history, metrics)
    if board is not None:
        board.finish(trainer.epoch, trainer.history, config, metrics)
    if cfg.html:
        write_run_page(run_dir, config, trainer.history, latest, metrics)
    log(f"wrote {run_dir / MODEL_FILE}, results.h5, metrics.json, history.json, config.json, loss_curves.png"
        + "".join(f", {name}" for name in task.figures) + (", index.html" if cfg.html else "")
        + (", TensorBoard events" if board is not None else "") + f" in {run_dir}")
    return RunResult(run_dir, cfg, trainer.history, metrics, model, task)


__all__ = ["train", "check_request", "make_config", "resolve_task", "RunResult"]

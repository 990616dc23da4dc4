"""The rules of a resumed run: what a resume needs and which settings may change.

A resume is decided here once, before the task loads its data: :func:`resume_folder`
refuses a request that cannot be a resume, :func:`read_run` reads the run's checkpoint,
and :func:`resumed_config` gives the run's own settings with the named changes, or
refuses the changes that would alter what was learnt. The loop then restores the state
it is given (:meth:`npvae.engine.loop.Trainer.resume`).

The engine allows its own settings (:data:`RESUMABLE`); each task adds its own
(:attr:`npvae.engine.task.Task.resumable`), so no task setting is named here.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import CHECKPOINT_FILE, load_checkpoint
from .config import field_names, from_record

# Settings that may differ when a run is resumed: they do not change what has been
# learnt so far (how long, where, how it is shown, where the data lie), or they are the
# remedies a diverged run needs (a lower learning rate, clipping). Any other difference
# is refused.
RESUMABLE = frozenset({"epochs", "display_every", "tensorboard", "html", "progress", "out",
                       "data_dir", "data_folder", "eval_limit", "backend", "npvae_version", "lr", "clip_norm"})


def resumable(task_cls) -> frozenset[str]:
    """The settings a run of ``task_cls`` may change on resume: the engine's and the task's own."""
    return RESUMABLE | frozenset(getattr(task_cls, "resumable", ()))


def resume_hint(task_cls, out) -> str:
    """The command that continues the run of ``task_cls`` in folder ``out``."""
    return f"npvae train {task_cls.name} --out {out} --resume"


def resume_folder(settings, overwrite: bool) -> Path:
    """The run folder a resume names (``settings``: a dict of the changes, or a config
    instance); ValueError when it names none or also asks to overwrite the run."""
    out = settings.get("out") if isinstance(settings, dict) else getattr(settings, "out", None)
    if not out:
        raise ValueError("--resume needs --out RUN_DIR (the run to continue)")
    if overwrite:
        raise ValueError("--resume continues a run and --overwrite replaces it; pass one of them")
    return Path(out)


@dataclass
class SavedRun:
    """The checkpoint of the run to resume: its record ``meta`` (epoch, history, settings...)
    on every rank, and its ``arrays`` on rank 0 until the trainer takes them (None after,
    and on the other ranks, which the trainer gives the state)."""
    meta: dict
    arrays: dict | None = None

    @property
    def config(self) -> dict | None:
        """The settings the run recorded (None in a checkpoint that holds none)."""
        return self.meta.get("config")

    def take(self) -> tuple[dict, dict] | None:
        """``(arrays, meta)`` for :meth:`npvae.engine.loop.Trainer.resume`, once (rank 0;
        None on the others): the arrays are not kept here while the run trains."""
        arrays, self.arrays = self.arrays, None
        return None if arrays is None else (arrays, self.meta)


def read_run(run_dir: Path, comm) -> SavedRun:
    """The checkpoint of the run in ``run_dir``: rank 0 reads it, every rank gets its record."""
    arrays = meta = None
    ckpt = run_dir / CHECKPOINT_FILE
    if comm.is_root:
        if not ckpt.exists():
            raise FileNotFoundError(f"no checkpoint in {run_dir} to resume: the run stopped before its first "
                                    "epoch ended, or this is not a run folder; start it again without --resume "
                                    "(with --overwrite to reuse the folder)")
        arrays, meta = load_checkpoint(ckpt)
    return SavedRun(comm.bcast_object(meta), arrays)


def _jsonable(config: dict) -> dict:
    return json.loads(json.dumps(config, default=str))


def config_changes(saved: dict, new: dict, allowed=RESUMABLE) -> list[str]:
    """``name: old -> new`` for every setting of ``new`` outside ``allowed`` whose value
    differs from ``saved``'s. Settings the saved run does not know (added to npvae after
    it was written) are not compared, so that runs of older versions still resume."""
    saved, new = _jsonable(saved), _jsonable(new)
    return [f"{k}: {saved[k]!r} -> {new[k]!r}"
            for k in sorted(new) if k in saved and k not in allowed and saved[k] != new[k]]


def resumed_config(task_cls, run_dir: Path, saved_run: SavedRun, settings,
                   final_files: tuple[str, ...]) -> tuple[object, str | None]:
    """``(config, finished message or None)`` of the run in ``run_dir`` (its checkpoint
    ``saved_run``): its recorded settings (:func:`~npvae.engine.config.from_record`) with
    the changes ``settings`` names. The run has finished when it has trained its epochs
    and ``final_files`` (the model file first) are written. Raises ValueError for a run
    of another task, or for a change outside :func:`resumable` (it would alter what was
    learnt)."""
    saved = saved_run.config or {}
    if saved.get("pipeline", task_cls.name) != task_cls.name:
        raise ValueError(f"{run_dir} holds a {saved['pipeline']} run, not a {task_cls.name} run: resume it with "
                         f"npvae train {saved['pipeline']} --out {run_dir} --resume")
    own = from_record(task_cls.Config, saved)
    named = dataclasses.asdict(settings) if isinstance(settings, task_cls.Config) else dict(settings or {})
    named.pop("out", None)
    allowed = resumable(task_cls)
    changed = config_changes(own, named, allowed)
    if changed:
        raise ValueError(
            f"cannot resume {run_dir} with other settings ({'; '.join(changed)}): --resume continues a run as it "
            f"started, and only {', '.join(sorted(allowed & set(field_names(task_cls.Config)) - {'out'}))} may "
            "change. Drop those flags to keep the run's own settings (left of each arrow; they are in its "
            "config.json), or start a new run with another --out")
    cfg = task_cls.finalize(task_cls.Config(**{**own, **named, "out": str(run_dir)}))
    done = int(saved_run.meta.get("epoch", 0))
    # finished once its last file is written: a run killed while writing them resumes to write them
    if done >= cfg.epochs and all((run_dir / name).exists() for name in final_files):
        return cfg, (f"{run_dir} is a finished run ({done} of {cfg.epochs} epochs); its model is "
                     f"{run_dir / final_files[0]}. To train it further on purpose, name more epochs: "
                     f"{resume_hint(task_cls, run_dir)} --epochs {done + max(1, done // 2)}")
    return cfg, None

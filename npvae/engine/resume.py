"""The rules of a resumed run: which settings may change, and the names older runs used.

The engine allows its own settings (:data:`RESUMABLE`); each task adds its own
(:attr:`npvae.engine.task.Task.resumable`), so no task setting is named here.
"""
from __future__ import annotations

import json

# Settings that may differ when a run is resumed: they do not change what has been
# learnt so far (how long, where, how it is shown, where the data lie), or they are the
# remedies a diverged run needs (a lower learning rate, clipping). Any other difference
# is refused.
RESUMABLE = frozenset({"epochs", "display_every", "tensorboard", "html", "progress", "out",
                       "data_dir", "data_folder", "eval_limit", "backend", "npvae_version", "lr", "clip_norm"})

# Entries of a run's config computed from its data (the normaliser's statistics, stored as
# arrays; ``normalizer_dict`` in older checkpoints): restored from the checkpoint, never compared.
DATA_DERIVED = frozenset({"normalizer", "normalizer_dict"})

# Names that earlier versions of npvae recorded for a setting (old name -> name now).
RENAMED = {"warmup": "kl_warmup", "recon": "loss", "max_train_tracks": "train_limit",
           "max_val_tracks": "eval_limit", "task": "pair"}


def resumable(task_cls) -> frozenset[str]:
    """The settings a run of ``task_cls`` may change on resume: the engine's and the task's own."""
    return RESUMABLE | frozenset(getattr(task_cls, "resumable", ()))


def _jsonable(config: dict) -> dict:
    return json.loads(json.dumps(config, default=str))


def config_changes(saved: dict, new: dict, allowed=RESUMABLE) -> list[str]:
    """``name: old -> new`` for every setting of the saved run outside ``allowed`` that differs.

    Settings the saved run does not know (added to npvae after it was written) are not
    compared, so that runs of older versions still resume.
    """
    saved, new = _jsonable(saved), _jsonable(new)
    saved = {(RENAMED[k] if k in RENAMED and k not in new and RENAMED[k] in new else k): v
             for k, v in saved.items()}
    return [f"{k}: {saved[k]!r} -> {new.get(k, '(unset)')!r}"
            for k in sorted(saved) if k not in allowed and saved[k] != new.get(k)]

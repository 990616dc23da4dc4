"""Named training recipes ("presets"), defined once for the scripts and for Python.

``python scripts/train_mnist.py --preset best`` and ``python scripts/train_music.py
--preset best`` start from these settings; flags given on the command line
override them. From Python::

    from npvae.pipelines.mnist import TrainConfig, train
    train(TrainConfig(**npvae.presets.get("mnist", "best"), out="runs/best"))

Each value is a dict of :class:`TrainConfig` fields of that task's pipeline. The
measured wall time and score of each preset are in docs/results.md.
"""
from __future__ import annotations

PRESETS: dict[str, dict[str, dict]] = {
    "mnist": {
        "default": {},
        # a U-Net VAE with 1.5x the channels (24-48-96) and two 3x3 convolutions per level
        # (786k parameters), a lighter KL (beta 0.1), 24 epochs with a cosine learning-rate tail
        "best": {"model": "unet", "channels": (24, 48, 96), "blocks": 2, "beta": 0.1, "epochs": 24,
                 "lr_schedule": "cosine"},
        # the plain dense VAE with a lighter KL (beta 0.1), a 64-dim latent, 100 epochs, cosine tail
        "dense-best": {"model": "dense", "beta": 0.1, "latent_dim": 64, "epochs": 100, "lr_schedule": "cosine"},
    },
    "music": {
        "default": {},
        # the spectrogram U-Net VAE with 1.5x the channels (24-48-96, 249k parameters), 45 epochs,
        # half the training excerpts remixed with another clip's accompaniment
        "best": {"channels": (24, 48, 96), "epochs": 45, "remix": "cross"},
    },
}


def names(task: str) -> list[str]:
    """Preset names of ``task`` ("mnist" or "music")."""
    if task not in PRESETS:
        raise ValueError(f"unknown task {task!r}: choose one of {sorted(PRESETS)}")
    return sorted(PRESETS[task])


def get(task: str, name: str) -> dict:
    """A copy of preset ``name`` of ``task``; a clear error lists the presets that exist."""
    if name not in names(task):
        raise ValueError(f"unknown {task} preset {name!r}: choose one of {names(task)}")
    return dict(PRESETS[task][name])


__all__ = ["PRESETS", "names", "get"]

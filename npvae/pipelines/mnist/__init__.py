"""Part I: separating MNIST digit + Fashion-MNIST item mixtures, by job:

* :mod:`.objective`: the training loss (:class:`SeparationObjective`);
* :mod:`.training`: :class:`TrainConfig`, the data, scoring and :func:`train`, the whole run.

The models are :mod:`npvae.models.mnist`; their files :mod:`npvae.io`; the figures
:mod:`npvae.plotting`.
"""
from .objective import RECON_LOSSES, SeparationObjective
from .training import (DEFAULT_EPOCHS, MODEL_DEFAULTS, TrainConfig, default_out, evaluate, example_images,
                       format_metrics, load_data, train, validation_terms)

__all__ = ["RECON_LOSSES", "SeparationObjective", "DEFAULT_EPOCHS", "MODEL_DEFAULTS", "TrainConfig",
           "default_out", "evaluate", "example_images", "format_metrics", "load_data", "train", "validation_terms"]

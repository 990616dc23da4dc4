"""Images: separating MNIST digit + Fashion-MNIST item mixtures, by job:

* :mod:`.objective`: the training loss (:class:`SeparationObjective`);
* :mod:`.task`: :class:`MnistConfig` (the settings), the data, scoring and figures, and
  :class:`MnistTask`, what the training engine (:func:`npvae.engine.train`) runs.

The models are :mod:`npvae.models.mnist`; their files :mod:`npvae.files.model_file`; the figures
:mod:`npvae.plotting`.
"""
from .objective import RECON_LOSSES, SeparationObjective
from .task import (DEFAULT_EPOCHS, MODEL_DEFAULTS, MnistConfig, MnistTask, evaluate, example_images,
                   format_metrics, load_data, validation_terms)

__all__ = ["RECON_LOSSES", "SeparationObjective", "DEFAULT_EPOCHS", "MODEL_DEFAULTS", "MnistConfig", "MnistTask",
           "evaluate", "example_images", "format_metrics", "load_data", "validation_terms"]

"""Singing-voice separation with the spectrogram VAE (music), by job:

* :mod:`.batches`: random training excerpts as spectrograms (with remixing and gains);
* :mod:`.objective`: the training loss (:class:`LossConfig`, :class:`MusicObjective`);
* :mod:`.evaluation`: BSS Eval / SI-SDR scores beside the oracle and the floor, tables,
  the per-epoch check and one clip's example;
* :mod:`.task`: :class:`MusicConfig` (the settings) and :class:`MusicTask`, what the
  training engine (:func:`npvae.engine.train`) runs.

What a trained model does to audio (features, masks, whole files) is
:mod:`npvae.separation.separator`; its files are :mod:`npvae.files.model_file`; its figures :mod:`npvae.plotting`.
"""
from .batches import sample_batch
from .evaluation import by_group, evaluate, example, format_groups, format_table, oracle_estimates, quick_validation, summarize
from ...schedules import lr_at
from .objective import LossConfig, MusicObjective
from .task import MusicConfig, MusicTask

__all__ = ["sample_batch", "by_group", "format_groups", "evaluate", "example", "format_table", "oracle_estimates", "quick_validation",
           "summarize", "LossConfig", "MusicObjective", "lr_at", "MusicConfig", "MusicTask"]

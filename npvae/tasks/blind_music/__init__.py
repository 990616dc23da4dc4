"""Blind separation of music (the blind music task): :mod:`.task` holds the settings, data, scores, figures and the task the engine runs."""
from .task import BlindMusicConfig, BlindMusicTask, BlindMusicSeparator, evaluate, patches, training_mixtures

__all__ = ["BlindMusicConfig", "BlindMusicTask", "BlindMusicSeparator", "evaluate", "patches", "training_mixtures"]

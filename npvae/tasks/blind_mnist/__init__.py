"""Blind separation of MNIST-family image pairs (the blind images task): :mod:`.task` holds the settings, data, scores, figures and the task the engine runs."""
from .task import BlindMnistConfig, BlindMnistTask, score, montage, save_blind_grid, save_latent_traversal

__all__ = ["BlindMnistConfig", "BlindMnistTask", "score", "montage", "save_blind_grid", "save_latent_traversal"]

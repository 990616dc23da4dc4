"""Baselines that the VAEs are compared against on the same test sets (supervised NMF).

The deterministic autoencoder and U-Net baselines are npvae's own models trained with
``beta = 0`` and no latent sampling (``TrainConfig(beta=0, sample=False)``)."""
from .nmf import ImageNMFSeparator, SpectrogramNMFSeparator, SupervisedNMF, nmf

__all__ = ["nmf", "SupervisedNMF", "ImageNMFSeparator", "SpectrogramNMFSeparator"]

"""Baselines that the VAEs are compared against on the same test sets (supervised NMF).

The deterministic autoencoder and U-Net baselines are npvae's own models trained with
``beta = 0`` and no latent sampling (``npvae train mnist --beta 0 --no-sample``)."""
from .nmf import ImageNMFSeparator, SpectrogramNMFSeparator, SupervisedNMF, nmf

__all__ = ["nmf", "SupervisedNMF", "ImageNMFSeparator", "SpectrogramNMFSeparator"]

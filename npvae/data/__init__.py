"""Datasets: MNIST / Fashion-MNIST images and their mixtures."""
from .mixtures import MixtureData, load_mixture_data, mix
from .mnist import load_images

__all__ = ["load_images", "MixtureData", "load_mixture_data", "mix"]

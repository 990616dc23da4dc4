"""Datasets: MNIST / Fashion-MNIST images and their mixtures."""

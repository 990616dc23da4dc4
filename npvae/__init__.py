"""npvae: variational autoencoders for blind source separation, in NumPy."""
__version__ = "0.1.0"

"""npvae: variational autoencoders for blind source separation, in NumPy.

Layers follow one contract (``forward``/``backward``, ``params``/``grads``); the
hot element-wise work runs in :mod:`npvae.kernels` (Numba or NumPy backend).
"""
import os as _os

# Idle OpenBLAS threads spin for about 0.1 s after each GEMM by default, holding a core
# that the Numba kernels and the convolution worker threads need next (conv VAE step of
# npvae bench: 28.8 ms with the default, 28, and 20.9 ms with 4). Let them sleep at
# once. OpenBLAS reads this
# when it loads, so it takes effect when npvae is imported before NumPy (as in the
# scripts); otherwise set OPENBLAS_THREAD_TIMEOUT=4 in the environment.
# Once NumPy is loaded the variable no longer reaches its OpenBLAS, and set by us it would
# read as the user's own choice: npvae.kernels.openblas.tune() sets the loaded library instead.
if "numpy" not in __import__("sys").modules:
    _os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from ._kernels import kernels
from . import losses, optim
from ._version import __version__
from .files.model_file import load_model, save_model
from .layers import (Conv2d, ConvTranspose2d, Dense, Flatten, Identity, Layer, LeakyReLU, ReLU,
                     Reshape, Sequential, Sigmoid, Softplus, Tanh, build_layer)
from .optim import SGD, Adam, clip_grad_norm
from . import pretrained
from .pretrained import list_models
from .vae import GaussianHead, KLWeight, Reparameterize, kl_divergence, sample_prior
from .engine.run import train


try:    # an OpenBLAS that the imports above loaded (SciPy's own) gets the same idle-thread setting
    from .kernels import openblas as _openblas
    _openblas.tune(force=True)
except Exception:  # a speed setting must never stop the import (npvae.kernels has warned already)
    pass


def backend() -> str:
    """The active kernel backend, ``"numba"`` or ``"numpy"`` (set with ``NPVAE_BACKEND``)."""
    return kernels.backend()


def set_backend(name: str) -> str:
    """Switch the kernel backend at run time; returns the backend now active."""
    return kernels.set_backend(name)


__all__ = ["Layer", "Dense", "Conv2d", "ConvTranspose2d", "Identity", "ReLU", "LeakyReLU", "Sigmoid",
           "Tanh", "Softplus", "Flatten", "Reshape", "Sequential", "build_layer", "GaussianHead",
           "Reparameterize", "kl_divergence", "KLWeight", "sample_prior", "Adam", "SGD",
           "clip_grad_norm", "losses", "optim", "backend", "set_backend", "load_model", "save_model",
           "list_models", "pretrained", "train"]

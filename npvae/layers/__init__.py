"""npvae's layers: each ``forward(x)`` / ``backward(dy)`` with ``params`` and ``grads`` dicts;
``with inference():`` forward passes that keep nothing for backward."""
from .activations import Identity, LeakyReLU, ReLU, Sigmoid, Softplus, Tanh, sigmoid
from .base import Layer, build_layer, inference, register
from .conv import Conv2d, ConvTranspose2d
from .dense import Dense
from .recurrent import GRU, LSTM
from .sequential import Sequential
from .shape import Flatten, FromSequence, Reshape, ToSequence
from .blocks import Concat, Residual
from .pool import AvgPool2d, MaxPool2d
from .regularize import Dropout, set_noise
from .resample import Upsample

__all__ = ["Layer", "build_layer", "inference", "register", "Dense", "Conv2d", "ConvTranspose2d", "Identity", "ReLU",
           "LeakyReLU", "Sigmoid", "Tanh", "Softplus", "sigmoid", "Flatten", "Reshape", "Sequential",
           "LSTM", "GRU", "ToSequence", "FromSequence"]
__all__ += ["Dropout", "set_noise", "MaxPool2d", "AvgPool2d", "Upsample", "Residual", "Concat"]

# normalisation
from .norm import BatchNorm, GroupNorm, batch_sums  # noqa: E402
__all__ += ["BatchNorm", "GroupNorm", "batch_sums"]
from .fold import fold_batchnorm  # noqa: E402
__all__ += ["fold_batchnorm"]

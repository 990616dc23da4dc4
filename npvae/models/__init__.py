"""Separation models built from npvae layers. Importing this package registers them,
so :func:`npvae.build_layer` can rebuild any of them from its spec."""
from .blind import BlindSeparationVAE
from .mnist import ConvSeparationVAE, DenseSeparationVAE, LatentMapSeparationVAE, UNetSeparationVAE, build_model
from .music import SpectrogramUNetVAE
from .stacked import StackedSpectrogramUNetVAE

__all__ = ["BlindSeparationVAE", "DenseSeparationVAE", "ConvSeparationVAE", "UNetSeparationVAE", "LatentMapSeparationVAE", "build_model", "SpectrogramUNetVAE",
           "StackedSpectrogramUNetVAE"]

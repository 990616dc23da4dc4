"""Stacked hourglasses: a mask network whose later U-Nets refine the masks of the one before.

The stacked hourglass networks of Park et al. (2018) on singing voice separation, with
:class:`~npvae.models.music.SpectrogramUNetVAE` as the hourglass (K = ``stacks``, S sources)::

    x (N, 1, F, T)                       normalised, compressed mixture magnitude
    m1 = hourglass1(x)                   (N, S, F, T) the first stack's masks
    mk = hourglassk([x, m(k-1)])         (N, S, F, T), from an input of 1 + S channels
    masks = mK                           the last stack's masks are the model's

Every hourglass has the same settings (channels, latent, options); its layers are named
``stack1.enc1``, ``stack2.enc1``, ... Training supervises every stack (intermediate
supervision): after ``forward`` the masks of stacks 1 .. K-1 are in ``self.earlier`` and
``backward`` takes their losses' gradients (``dearlier``), which the music objective
(:mod:`npvae.tasks.music.objective`) gives with the same loss as the final masks'.

The latent is the hourglasses' latents side by side: ``self.mu`` and ``self.logvar`` are
(N, K*L, F/2**n, T/2**n), stack k's in channels k*L .. (k+1)*L. The posterior over
(z1, ..., zK) is then one diagonal Gaussian, and its KL divergence to the standard normal
prior, which the objective takes on ``mu`` and ``logvar`` as for one hourglass, is the
sum of the hourglasses' KLs. Likewise ``self.logits`` (training mode) is the stacks' mask
logits side by side, (N, K*S, F, T).
"""
from __future__ import annotations

import numpy as np

from ..files.modelcheck import MAX_STACKS
from ..layers.base import Layer, default_rng, expect_input, in_inference, register
from . import options
from .music import SpectrogramUNetVAE


@register
class StackedSpectrogramUNetVAE(options.DropoutNoise, Layer):
    """Mask network of ``stacks`` hourglasses: forward(x (N, 1, F, T)) -> masks (N, S, F, T).

    Parameters
    ----------
    stacks : number K of hourglasses, 2 .. ``MAX_STACKS`` (one is a SpectrogramUNetVAE).
    **unet : the hourglasses' settings, :class:`~npvae.models.music.SpectrogramUNetVAE`'s
        arguments (channels, latent_channels, n_sources, kernel_size, alpha, norm, down,
        dropout, residual, rnn_layers, rnn_hidden, freq_bins, groups, norm_bias), the
        same for every stack.

    ``DOWNSAMPLE``, ``n_sources``, ``channels``, ``latent_channels`` and ``freq_bins`` are
    the hourglasses'; ``backward(dmasks, dmu=None, dlogvar=None, dlogits=None,
    dearlier=None)`` returns dx.
    """

    def __init__(self, stacks: int = 2, rng=None, dtype=np.float32, **unet):
        super().__init__(dtype)
        if isinstance(stacks, bool) or not isinstance(stacks, (int, np.integer)) or not 2 <= stacks <= MAX_STACKS:
            raise ValueError(f"StackedSpectrogramUNetVAE: stacks must be a whole number from 2 to {MAX_STACKS} (one "
                             f"stack is a SpectrogramUNetVAE), got {stacks!r}")
        if "in_channels" in unet:
            raise ValueError("StackedSpectrogramUNetVAE: in_channels is not a setting: the first hourglass sees the "
                             "mixture (1 channel), the others the mixture and the masks before them")
        rng = default_rng(rng)
        first = SpectrogramUNetVAE(**unet, rng=rng, dtype=dtype)
        more = first.n_sources + 1
        self.hourglasses = [first] + [SpectrogramUNetVAE(**unet, in_channels=more, rng=rng, dtype=dtype)
                                      for _ in range(1, stacks)]
        self.stacks = int(stacks)
        self.DOWNSAMPLE = first.DOWNSAMPLE
        self.n_sources, self.channels, self.latent_channels = first.n_sources, first.channels, first.latent_channels
        self.freq_bins, self.rnn_layers = first.freq_bins, first.rnn_layers
        self.rng = rng
        self.mu = self.logvar = self.logits = None
        self.earlier = []

    def noise_parts(self):
        """Every hourglass: their latent noise and dropout masks drawn in stack order."""
        return getattr(self, "hourglasses", ())

    @property
    def context_frames(self) -> int:
        """Frames of input a separated chunk needs on each side: the last stack sees the
        masks the one before made from its own receptive field, so the radii add up."""
        return sum(h.context_frames for h in self.hourglasses)

    def children(self):
        return {f"stack{k + 1}": h for k, h in enumerate(self.hourglasses)}

    def forward(self, x, sample: bool | None = None):
        """x : (N, 1, F, T), F and T multiples of ``DOWNSAMPLE``. Returns the last stack's
        masks; ``sample`` (default ``self.training``) applies to every stack's latent."""
        expect_input(self, x, 4, "(N, 1, F, T)", 1, 1)
        masks = self.hourglasses[0].forward(x, sample=sample)
        earlier = []
        for hourglass in self.hourglasses[1:]:
            earlier.append(masks)
            masks = hourglass.forward(np.concatenate([x, masks], axis=1), sample=sample)
        # inference keeps nothing: the earlier masks are the objective's, in training and validation
        self.earlier = [] if in_inference() else earlier
        self.mu = np.concatenate([h.mu for h in self.hourglasses], axis=1)
        self.logvar = np.concatenate([h.logvar for h in self.hourglasses], axis=1)
        logits = [h.logits for h in self.hourglasses]
        self.logits = None if logits[0] is None else np.concatenate(logits, axis=1)
        return masks

    def forget(self):
        super().forget()
        self.earlier, self.logits = [], None

    def backward(self, dy, dmu=None, dlogvar=None, dlogits=None, dearlier=None):
        """dy : (N, S, F, T) gradient for the final masks; dmu, dlogvar : optional
        gradients (N, K*L, ...) for ``self.mu``, ``self.logvar``; dlogits : optional
        gradient (N, K*S, F, T) for ``self.logits``; dearlier : optional K-1 gradients
        (N, S, F, T) for the masks in ``self.earlier`` (None entries allowed). Returns dx."""
        k = self.stacks
        if dearlier is not None and len(dearlier) != k - 1:
            raise ValueError(f"StackedSpectrogramUNetVAE.backward: dearlier takes one gradient per earlier stack "
                             f"({k - 1}), got {len(dearlier)}")
        if dlogits is not None and self.logits is None:
            raise ValueError("dlogits needs the logits of a forward pass in training mode (model.train())")
        dmu, dlogvar, dlogits = (None if g is None else np.split(g, k, axis=1) for g in (dmu, dlogvar, dlogits))
        dx, g = None, dy
        for i in reversed(range(k)):
            part = [None if d is None else d[i] for d in (dmu, dlogvar, dlogits)]
            dxi = self.hourglasses[i].backward(g, part[0], part[1], dlogits=part[2])
            if i:
                g = dxi[:, 1:]
                if dearlier is not None and dearlier[i - 1] is not None:
                    g = g + dearlier[i - 1]
                dxi = dxi[:, :1]
            dx = dxi if dx is None else dx + dxi
        return dx

    @classmethod
    def from_spec(cls, spec: dict, rng=None, dtype=None):
        return super().from_spec(options.spec_defaults(spec), rng=rng, dtype=dtype)

    def hyper(self):
        return {"stacks": self.stacks, **self.hourglasses[0].hyper()}


def mask_network(stacks: int = 1, **unet) -> Layer:
    """A SpectrogramUNetVAE for one stack, else a StackedSpectrogramUNetVAE of ``stacks``."""
    return SpectrogramUNetVAE(**unet) if stacks == 1 else StackedSpectrogramUNetVAE(stacks, **unet)


MASK_NETWORKS = (SpectrogramUNetVAE, StackedSpectrogramUNetVAE)     # the models a Separator runs

__all__ = ["StackedSpectrogramUNetVAE", "mask_network", "MASK_NETWORKS", "MAX_STACKS"]

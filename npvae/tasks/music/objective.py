"""The music training objective and learning-rate schedule.

Per time-frequency bin, on magnitudes divided by the training set's mean mixture
magnitude ``mag_scale`` (M_v, M_a the network's masks, X the mixture, V and A the
sources)::

    total = D(M_v|X|, |V|) + D(M_a|X|, |A|) + w_mix D(M_v|X| + M_a|X|, |X|) + beta KL
            + w_logit mean(l**2)

with D one of :mod:`npvae.spectral_losses`, KL the latent's nats per bin and l the
masks' logits (M = sigmoid(l)). The last term keeps the sigmoids out of saturation: a
mask pushed to 0 everywhere early in training (a bin's loss gradient through a
saturated sigmoid is ~0) would otherwise stay there. Deep networks do this at some
seeds: the five-level net of ``--preset best`` at seed 1 drove the voice logits to
about -120 within 30 steps and its voice mask never recovered.

A stacked model (:class:`~npvae.models.stacked.StackedSpectrogramUNetVAE`) is supervised
at every stack: the masks of its earlier stacks (``model.earlier``) pay the same three
reconstruction terms as the final masks, added to the total as ``earlier_stacks``. Its KL
is the sum of its hourglasses' KLs and its logit penalty the mean over all stacks' logits
(its ``mu``, ``logvar`` and ``logits`` hold every stack's, side by side).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ... import spectral_losses
from ...audio.stft import stft
from ...separation.separator import Separator
from ...vae import kl_divergence


@dataclass
class LossConfig:
    """The training objective (see the module docstring).

    loss : reconstruction loss of :mod:`npvae.spectral_losses` ("l1", "mse", "kl", "is").
    compression, power : compression of the magnitudes inside l1/mse ("none", "log", "power").
    mix_weight : weight w_mix of the reconstructed-mixture term (the KL term's weight is
    the engine's schedule, passed to :meth:`MusicObjective.terms`). sample : False takes the latent
    at its mean in training too (a deterministic net). logit_penalty : weight w_logit of
    the masks' mean squared logit (0: none).
    """
    loss: str = "l1"
    compression: str = "none"
    power: float = 0.5
    mix_weight: float = 0.5
    sample: bool = True       # False: the latent is taken at its mean in training too
    logit_penalty: float = 0.0


class MusicObjective:
    """Loss terms of a batch, forward and backward: ``__call__(batch, epoch) -> terms``."""

    def __init__(self, sep: Separator, cfg: LossConfig):
        self.sep, self.cfg = sep, cfg
        self.loss = spectral_losses.get_loss(cfg.loss, cfg.compression, cfg.power)

    def _inputs(self, batch):
        norm, dt = self.sep.norm, self.sep.model.dtype
        nb = norm.n_bins
        mix = np.abs(batch["mixture"])
        x = norm(mix)[:, None].astype(dt, copy=False)                   # (N, 1, nb, T)
        s = 1.0 / norm.mag_scale
        mags = [(np.abs(batch[k])[:, :nb] * s).astype(dt, copy=False) for k in ("voice", "accompaniment")]
        return x, (mix[:, :nb] * s).astype(dt, copy=False), mags

    def terms(self, batch, *, beta: float, backward: bool = True) -> dict:
        """Forward (and with ``backward`` backward) on ``batch``; ``beta`` is the KL weight
        (the engine's schedule, :class:`npvae.vae.KLWeight`)."""
        model, cfg = self.sep.model, self.cfg
        x, mix, (v, a) = self._inputs(batch)
        masks = model.forward(x, sample=model.training and cfg.sample)
        (lv, la, lm), dmask = self._reconstruction(masks, mix, v, a)
        earlier = [self._reconstruction(m, mix, v, a) for m in getattr(model, "earlier", ())]
        n, _, f, t = x.shape
        kl, dmu, dlv = kl_divergence(model.mu.reshape(n, -1), model.logvar.reshape(n, -1))
        kl_bin = kl / (f * t)                                           # nats per T-F bin
        # With beta = 0 the KL is only reported: the deterministic net's latent is
        # unconstrained, its KL can overflow, and 0 * inf would make the loss NaN.
        total = lv + la + cfg.mix_weight * lm + (beta * kl_bin if beta else 0.0)
        terms = {"total": total, "vocals": lv, "accompaniment": la, "mixture": lm, "kl": kl_bin, "beta": beta}
        if earlier:
            terms["earlier_stacks"] = sum(lv_ + la_ + cfg.mix_weight * lm_ for (lv_, la_, lm_), _ in earlier)
            terms["total"] = total = total + terms["earlier_stacks"]
        w_logit, logits = cfg.logit_penalty, model.logits
        if w_logit and logits is not None:           # eval mode keeps no logits: the term is training's
            terms["logits"] = float(np.mean(np.square(logits, dtype=np.float64)))
            terms["total"] = total = total + w_logit * terms["logits"]
        if backward:
            k = np.float32(beta / (f * t))
            dmu, dlv = (dmu * k, dlv * k) if beta else (np.zeros_like(dmu), np.zeros_like(dlv))
            dlogits = (logits * x.dtype.type(2 * w_logit / logits.size)) if "logits" in terms else None
            more = {"dearlier": [g() for _, g in earlier]} if earlier else {}
            model.backward(dmask(), dmu.reshape(model.mu.shape), dlv.reshape(model.logvar.shape), dlogits=dlogits,
                           **more)
        return terms

    def _reconstruction(self, masks, mix, v, a):
        """((vocals, accompaniment, mixture) loss terms, dmask) of ``masks`` (N, 2, F, T);
        ``dmask()`` gives the terms' gradient for the masks."""
        est_v, est_a = masks[:, 0] * mix, masks[:, 1] * mix
        lv, gv = self.loss(est_v, v)
        la, ga = self.loss(est_a, a)
        lm, gm = self.loss(est_v + est_a, mix)
        w = self.cfg.mix_weight
        return (lv, la, lm), lambda: np.stack([(gv + w * gm) * mix, (ga + w * gm) * mix], axis=1).astype(masks.dtype)

    def on_tracks(self, tracks, beta: float, max_frames: int = 1024) -> dict:
        """Mean loss terms over whole tracks (eval mode, no gradients), weighted by frames. ``beta``: the KL weight."""
        sums, frames = {}, 0
        d = self.sep.model.DOWNSAMPLE
        for tr in tracks:
            V = stft(tr.voice, self.sep.stft_cfg)
            A = stft(tr.accompaniment, self.sep.stft_cfg)
            T = min(V.shape[1] // d * d, max_frames)
            batch = {"voice": V[None, :, :T], "accompaniment": A[None, :, :T]}
            batch["mixture"] = batch["voice"] + batch["accompaniment"]
            for k, val in self.terms(batch, beta=beta, backward=False).items():
                sums[k] = sums.get(k, 0.0) + val * T
            frames += T
        return {k: v / frames for k, v in sums.items() if k != "beta"}

"""PyTorch twins of the pipeline cases (:mod:`.pipeline_cases`): the same networks,
weights, batch, latent noise, loss and optimiser, written the way a PyTorch user
would write them (modules, autograd, ``torch.optim.Adam``).

* :class:`TorchSeparationVAE` mirrors :mod:`npvae.models.mnist` (dense, conv and
  U-Net; "sources" and "split" outputs) and :func:`mnist_loss` the Part I objective.
* :class:`TorchSpectrogramUNet` mirrors :class:`npvae.models.music.SpectrogramUNetVAE`
  (:class:`TorchStackedSpectrogramUNet` the stacked one, :func:`torch_mask_network`
  picks) and :func:`music_loss` the Part II objective (features from the complex batch,
  masks, spectral loss, KL per bin).
* :class:`TorchPipelineCase` is a case's training step in PyTorch; :func:`npvae_grads`
  maps its gradients onto npvae's parameter paths for the equality tests.

PyTorch is imported inside this module only, which nothing in the library imports.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from npvae.models.mnist import ConvSeparationVAE, DenseSeparationVAE, UNetSeparationVAE

from .torch_twin import torch_module, torch_recurrent_name


def _t(a) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


class TorchSeparationVAE(nn.Module):
    """A Part I model (dense, conv or U-Net) with the npvae model's weights.

    ``forward(m (N, 28, 28), eps (N, latent) or None) -> digit, fashion, mu, logvar, logits``.
    """

    def __init__(self, model):
        super().__init__()
        self.output, self.rule, self.kind = model.output, model.rule, type(model).__name__
        self.head = nn.ModuleDict({"mu": torch_module(model.head.mu), "logvar": torch_module(model.head.logvar)})
        if isinstance(model, (DenseSeparationVAE, ConvSeparationVAE)):
            self.encoder, self.decoder = torch_module(model.encoder), torch_module(model.decoder)
        elif isinstance(model, UNetSeparationVAE):
            if model.levels != 3 or set(model.hyper()) - {"latent_dim", "output", "rule", "channels", "blocks"}:
                raise TypeError(f"the PyTorch twin is of the three-level U-Net without options, not {model.spec()}")
            self.channels, self.chains = model.channels, model.chains
            for name in ("enc1", "enc2", "enc3", "expand", "up2", "up1", "out"):
                setattr(self, name, torch_module(getattr(model, name)))
            for name, layer in model.extra.items():                # enc1_2, ... (blocks > 1)
                setattr(self, name, torch_module(layer))
            self.act = nn.LeakyReLU(0.2)
        else:
            raise TypeError(f"no PyTorch twin for {type(model).__name__}")

    def _level(self, level, x):
        x = self.act(getattr(self, level)(x))
        for name in self.chains[level][1:]:
            x = self.act(getattr(self, name)(x))
        return x

    def _unet(self, x, eps):
        e1 = self._level("enc1", x)
        e2 = self._level("enc2", e1)
        e3 = self._level("enc3", e2)
        feat = e3.flatten(1)
        mu, logvar = self.head["mu"](feat), self.head["logvar"](feat)
        z = mu if eps is None else mu + torch.exp(0.5 * logvar) * eps
        d3 = self.expand(z).reshape(e3.shape)
        u2 = self._level("up2", torch.cat([d3, e3], 1))
        u1 = self._level("up1", torch.cat([u2, e2], 1))
        return self.out(torch.cat([u1, e1, x], 1)), mu, logvar

    def forward(self, m, eps=None):
        x = m[:, None]
        if hasattr(self, "encoder"):
            feat = self.encoder(x)
            mu, logvar = self.head["mu"](feat), self.head["logvar"](feat)
            z = mu if eps is None else mu + torch.exp(0.5 * logvar) * eps
            logits = self.decoder(z)
        else:
            logits, mu, logvar = self._unet(x, eps)
        if self.output == "sources":
            digit, fashion = torch.sigmoid(logits[:, 0]), torch.sigmoid(logits[:, 1])
        else:
            t = 2 * m if self.rule == "average" else m
            lo, hi = torch.clamp(t - 1, min=0), torch.clamp(t, max=1)
            digit = lo + torch.sigmoid(logits[:, 0]) * (hi - lo)
            fashion = t - digit
        return digit, fashion, mu, logvar, logits

    def mix(self, digit, fashion):
        return (digit + fashion) * 0.5 if self.rule == "average" else torch.clamp(digit + fashion, 0, 1)


def _prob_loss(name, pred, target, eps=1e-6):
    """npvae.losses' bce / mse / l1 with the "batch" reduction (sum per sample, batch mean)."""
    n = pred.shape[0]
    if name == "bce":
        p = torch.clamp(pred, eps, 1 - eps)
        return -torch.sum(target * torch.log(p) + (1 - target) * torch.log1p(-p)) / n
    if name == "mse":
        return torch.sum((pred - target) ** 2) / n
    if name == "l1":
        return torch.sum(torch.abs(pred - target)) / n
    raise ValueError(f"unknown loss {name!r}")


def _kl(mu, logvar):
    """KL to N(0, I) summed over every axis but the first, batch mean (nats per sample)."""
    return -0.5 * torch.sum(1 + logvar - mu * mu - torch.exp(logvar)) / mu.shape[0]


def mnist_loss(net: TorchSeparationVAE, batch: dict, eps, recon: str, mix_weight: float, beta: float):
    """The Part I objective (:class:`npvae.tasks.mnist.objective.SeparationObjective`)."""
    m, digit, fashion = batch["mixture"], batch["digit"], batch["fashion"]
    d_hat, f_hat, mu, logvar, logits = net(m, eps)
    if recon == "bce" and net.output == "sources":
        n = m.shape[0]
        ld = F.binary_cross_entropy_with_logits(logits[:, 0], digit, reduction="sum") / n
        lf = F.binary_cross_entropy_with_logits(logits[:, 1], fashion, reduction="sum") / n
    else:
        ld, lf = _prob_loss(recon, d_hat, digit), _prob_loss(recon, f_hat, fashion)
    lm = _prob_loss(recon, net.mix(d_hat, f_hat), m)
    total = ld + lf + mix_weight * lm
    return total + beta * _kl(mu, logvar) if beta else total


class TorchSpectrogramUNet(nn.Module):
    """:class:`npvae.models.music.SpectrogramUNetVAE` (any number of levels, every option)
    with its weights: ``forward(x (N, C_in, F, T), eps or None) -> masks, mu, logvar`` (the
    masks' logits kept in ``self.logits``).

    The modules carry npvae's names (``enc1``, ``head``, ``dec1``, ``enc1_norm``, ``pool1``,
    ``enc1_res``, ``dec2_drop``, ``rnn_in``, ``rnn``, ``rnn_out``) and the forward pass is
    npvae's: ``act(norm(conv(x)))`` per convolution, then the level's pooling, residual
    block and dropout, the recurrent bottleneck before the head. Without options the
    training step is the same as npvae's; with them, eval mode is (BatchNorm's running
    statistics, dropout off); training-mode dropout draws PyTorch's own masks. A model
    whose BatchNorms were folded (:func:`npvae.layers.fold_batchnorm`) has no ``*_norm``
    layers and biased convolutions: its twin is the folded network.
    """

    def __init__(self, model):
        super().__init__()
        for name, layer in model.children().items():            # npvae's names, the options' layers too
            self.add_module(name, torch_module(layer))
        self.levels = model.levels
        self.act = nn.LeakyReLU(model.alpha)
        self.latent_channels = model.latent_channels
        self.recurrent = bool(model.rnn_layers)

    def _part(self, name):
        return self._modules.get(name)

    def _unit(self, name, x):
        """act(norm(conv(x))) with convolution ``name`` and its norm if it has one."""
        h = self._modules[name](x)
        norm = self._part(f"{name}_norm")
        return self.act(h if norm is None else norm(h))

    def _after(self, name, h):
        """What follows level ``name``'s convolution: pooling, residual block, dropout
        (:func:`npvae.models.options.level_forward`)."""
        pool = self._part(f"pool{name[3:]}") if name.startswith("enc") else None
        if pool is not None:
            h = pool(h)
        if self._part(f"{name}_res") is not None:
            h = h + self._unit(f"{name}_res", h)
        drop = self._part(f"{name}_drop")
        return h if drop is None else drop(h)

    def _recurrent(self, h):
        """h + rnn_out(LSTM(rnn_in(frames of h))): (N, C, F, T) read as T frames of C*F
        features, channel-major (npvae's ToSequence / FromSequence)."""
        n, c, f, t = h.shape
        seq = self.rnn_out(self.rnn(self.rnn_in(h.permute(0, 3, 1, 2).reshape(n, t, c * f))))
        return h + seq.reshape(n, t, c, f).permute(0, 2, 3, 1)

    def forward(self, x, eps=None):
        n, skips, h = self.levels, [], x
        for i in range(n):
            h = self._after(f"enc{i + 1}", self._unit(f"enc{i + 1}", h))
            skips.append(h)
        if self.recurrent:
            h = self._recurrent(h)
        h = self.head(h)
        mu, logvar = h[:, :self.latent_channels], h[:, self.latent_channels:]
        z = mu if eps is None else mu + torch.exp(0.5 * logvar) * eps
        h = self._after(f"dec{n}", self._unit(f"dec{n}", z))
        for i in range(n - 2, 0, -1):
            h = self._after(f"dec{i + 1}", self._unit(f"dec{i + 1}", torch.cat([h, skips[i]], 1)))
        self.logits = self.dec1(torch.cat([h, skips[0]], 1))     # for the objective's logit penalty
        return torch.sigmoid(self.logits), mu, logvar


class TorchStackedSpectrogramUNet(nn.Module):
    """:class:`npvae.models.stacked.StackedSpectrogramUNetVAE` with its weights:
    ``forward(x (N, 1, F, T), eps or None) -> masks, mu, logvar``, stack k > 1 fed
    ``[x, masks of stack k-1]``; the last stack's masks are the output. ``mu``, ``logvar``
    (and ``eps``) are the stacks' side by side on channels, as npvae's; ``self.logits``
    likewise, ``self.earlier`` the masks of stacks 1 .. K-1. The stacks are ``stack1``, ...
    (:class:`TorchSpectrogramUNet` each)."""

    def __init__(self, model):
        super().__init__()
        for name, hourglass in model.children().items():
            self.add_module(name, TorchSpectrogramUNet(hourglass))
        self.stacks = model.stacks

    def forward(self, x, eps=None):
        parts = [None] * self.stacks if eps is None else torch.chunk(eps, self.stacks, 1)
        h = [self._modules[f"stack{k + 1}"] for k in range(self.stacks)]
        masks, mu, logvar = h[0](x, parts[0])
        out = [(mu, logvar)]
        self.earlier = []
        for hourglass, e in zip(h[1:], parts[1:]):
            self.earlier.append(masks)
            masks, mu, logvar = hourglass(torch.cat([x, masks], 1), e)
            out.append((mu, logvar))
        self.logits = torch.cat([g.logits for g in h], 1)
        return masks, torch.cat([m for m, _ in out], 1), torch.cat([v for _, v in out], 1)


def torch_mask_network(model) -> nn.Module:
    """The twin of a mask network: :class:`TorchStackedSpectrogramUNet` for a
    StackedSpectrogramUNetVAE, else :class:`TorchSpectrogramUNet`."""
    from npvae.models.stacked import StackedSpectrogramUNetVAE
    twin = TorchStackedSpectrogramUNet if isinstance(model, StackedSpectrogramUNetVAE) else TorchSpectrogramUNet
    return twin(model)


def _compress(x, compression, power, eps=1e-3):
    if compression == "none":
        return x
    if compression == "log":
        return torch.log(x + eps)
    return (x + eps) ** power - eps ** power


def _spectral_loss(cfg, est, target, eps=1e-3):
    """npvae.spectral_losses (mean over bins) for the objective's settings."""
    if cfg.loss in ("l1", "mse"):
        diff = _compress(est, cfg.compression, cfg.power) - _compress(target, cfg.compression, cfg.power)
        return torch.mean(torch.abs(diff)) if cfg.loss == "l1" else torch.mean(diff * diff)
    p = 2.0 if cfg.loss == "is" else 1.0
    e, t = est ** p + eps, target ** p + eps
    if cfg.loss == "kl":
        return torch.mean(t * torch.log(t / e) - t + e)
    return torch.mean(t / e - torch.log(t / e) - 1.0)


def music_inputs(norm, batch: dict):
    """Features x (N, 1, nb, T), scaled mixture and source magnitudes, from the complex
    batch as :class:`~npvae.tasks.music.objective.MusicObjective` makes them."""
    nb = norm.n_bins
    mix = torch.abs(batch["mixture"])
    c = torch.log1p(mix[:, :nb]) if norm.compression == "log" else mix[:, :nb] ** norm.power
    x = ((c - batch["norm_mean"][:, None]) / batch["norm_std"][:, None])[:, None]
    s = 1.0 / norm.mag_scale
    return x, mix[:, :nb] * s, [torch.abs(batch[k])[:, :nb] * s for k in ("voice", "accompaniment")]


def music_loss(net: TorchSpectrogramUNet, norm, batch: dict, eps, cfg, beta: float):
    """The Part II objective (:class:`~npvae.tasks.music.objective.MusicObjective`)."""
    x, mix, (v, a) = music_inputs(norm, batch)
    masks, mu, logvar = net(x, eps)
    est_v, est_a = masks[:, 0] * mix, masks[:, 1] * mix
    total = _spectral_loss(cfg, est_v, v) + _spectral_loss(cfg, est_a, a) + \
        cfg.mix_weight * _spectral_loss(cfg, est_v + est_a, mix)
    if cfg.logit_penalty:
        total = total + cfg.logit_penalty * torch.mean(net.logits * net.logits)
    n, _, f, t = x.shape
    return total + beta * _kl(mu, logvar) / (f * t) if beta else total


class TorchPipelineCase:
    """A pipeline case's training step in PyTorch: same weights, batch, noise, loss and
    Adam (with the task's gradient clipping)."""

    def __init__(self, case):
        self.name, self.task, self.case = case.name, case.task, case
        self.eps = _t(case.eps)
        if case.task == "mnist":
            self.net = TorchSeparationVAE(case.model)
            self.batch = {k: _t(v) for k, v in case.batch.items() if k != "beta"}
        else:
            self.net = TorchSpectrogramUNet(case.model)
            norm = case.extra["separator"].norm
            self.batch = {k: _t(v) for k, v in case.batch.items()}
            self.batch["norm_mean"], self.batch["norm_std"] = _t(norm.mean), _t(norm.std)
        self.clip = case.optimizer.clip_norm
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=case.optimizer.lr)

    def loss(self):
        c = self.case
        if self.task == "mnist":
            return mnist_loss(self.net, self.batch, self.eps if c.cfg.sample else None, c.cfg.loss,
                              c.cfg.mix_weight, c.extra["beta"])
        obj = c.extra["loss_config"]
        return music_loss(self.net, c.extra["separator"].norm, self.batch, self.eps if obj.sample else None,
                          obj, c.extra["beta"])

    def step(self):
        self.optimizer.zero_grad(set_to_none=False)
        loss = self.loss()
        loss.backward()
        if self.clip:
            nn.utils.clip_grad_norm_(self.net.parameters(), self.clip)
        self.optimizer.step()
        return float(loss.detach())


def _twin_path(model, path: str) -> tuple[str, bool]:
    """npvae parameter path of ``model`` -> (the twin's path, whether the layouts are
    transposed): ``encoder.1.W`` -> ``encoder.1.0.weight`` (a Dense with an activation is
    Sequential(Linear, act)), ``enc1_norm.gamma`` -> ``enc1_norm.weight``, ``rnn.l0_reverse.W_ih``
    -> ``rnn.rnn.weight_ih_l0_reverse`` (:func:`~.torch_twin.torch_module`'s LSTM / GRU)."""
    from npvae.layers import GRU, LSTM, Dense
    *layer_path, name = path.split(".")
    layer = model
    for i, key in enumerate(layer_path):
        layer = layer.children()[key]
        if isinstance(layer, (LSTM, GRU)):
            cell = ".".join(layer_path[i + 1:] + [name])
            return ".".join(layer_path[:i + 1]) + ".rnn." + torch_recurrent_name(cell), False
    extra = ".0" if isinstance(layer, Dense) and layer.activation is not None else ""
    tname = {"W": "weight", "b": "bias", "gamma": "weight", "beta": "bias"}[name]
    return ".".join(layer_path) + extra + "." + tname, isinstance(layer, Dense)


def torch_path(case, path: str) -> str:
    """npvae parameter path -> the twin's (``encoder.1.W`` -> ``encoder.1.0.weight``)."""
    return _twin_path(case.model, path)[0]


def twin_arrays(model, net: nn.Module, params: bool = False) -> dict[str, np.ndarray]:
    """The gradients (or, with ``params``, the parameters) of ``net``, the twin of the npvae
    ``model``, in npvae's parameter paths and layouts."""
    tparams = dict(net.named_parameters())
    out = {}
    for path, _, _ in model.named_parameters():
        tpath, transposed = _twin_path(model, path)
        p = tparams[tpath]
        a = (p.detach() if params else p.grad).numpy()
        out[path] = a.T if transposed else a
    return out


def npvae_grads(case, tcase: TorchPipelineCase, params: bool = False) -> dict[str, np.ndarray]:
    """The twin's gradients (or, with ``params``, its parameters) in npvae's paths and layouts."""
    return twin_arrays(case.model, tcase.net, params)

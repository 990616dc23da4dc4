"""The PyTorch twin of a benchmark case: the same layers, weights, batch and Adam settings.

PyTorch is imported inside the functions only, so npvae never needs it;
:func:`torch_available` says whether it is there.
"""
from __future__ import annotations

import numpy as np

from npvae.layers import (GRU, LSTM, AvgPool2d, BatchNorm, Conv2d, ConvTranspose2d, Dense, Dropout, Flatten, GroupNorm,
                          MaxPool2d, ReLU, Reshape, Sequential)
from npvae.layers.activations import Identity, LeakyReLU, Sigmoid
from npvae.vae import GaussianHead


def torch_available() -> tuple[bool, str]:
    """``(True, version)`` if PyTorch imports, else ``(False, reason)``."""
    try:
        import torch
    except ImportError as exc:  # includes a missing package
        return False, f"PyTorch is not installed ({exc}); pip install torch==2.13.0 (the 'bench' extra)"
    return True, torch.__version__


def torch_module(layer):
    """A ``torch.nn`` module equal to the npvae ``layer`` (weights copied)."""
    import torch
    from torch import nn

    def copy(param, value):
        with torch.no_grad():
            param.copy_(torch.from_numpy(np.ascontiguousarray(value)))

    if isinstance(layer, Sequential):
        return nn.Sequential(*(torch_module(sub) for sub in layer.layers))
    if isinstance(layer, Dense):
        lin = nn.Linear(layer.in_features, layer.out_features)
        copy(lin.weight, layer.params["W"].T)
        copy(lin.bias, layer.params["b"])
        act = {None: None, "relu": nn.ReLU(), "sigmoid": nn.Sigmoid(), "tanh": nn.Tanh(),
               "leaky_relu": nn.LeakyReLU(layer.alpha)}[layer.activation]
        return lin if act is None else nn.Sequential(lin, act)
    if isinstance(layer, Conv2d):
        m = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                      bias=layer.bias)
    elif isinstance(layer, ConvTranspose2d):
        m = nn.ConvTranspose2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                               layer.padding, layer.output_padding, bias=layer.bias)
    elif isinstance(layer, ReLU):
        return nn.ReLU()
    elif isinstance(layer, LeakyReLU):
        return nn.LeakyReLU(layer.alpha)
    elif isinstance(layer, Sigmoid):
        return nn.Sigmoid()
    elif isinstance(layer, Identity):
        return nn.Identity()
    elif isinstance(layer, Flatten):
        return nn.Flatten()
    elif isinstance(layer, (MaxPool2d, AvgPool2d)):
        return (nn.MaxPool2d if isinstance(layer, MaxPool2d) else nn.AvgPool2d)(layer.kernel_size, layer.stride,
                                                                                 layer.padding)
    elif isinstance(layer, Dropout):
        # the same p; in training PyTorch draws its own masks, so only eval mode (identity) is equal
        return (nn.Dropout2d if layer.channels else nn.Dropout)(layer.p)
    elif isinstance(layer, Reshape):
        return nn.Unflatten(1, layer.shape)
    elif isinstance(layer, GaussianHead):
        return nn.ModuleDict({"mu": torch_module(layer.mu), "logvar": torch_module(layer.logvar)})
    elif isinstance(layer, (BatchNorm, GroupNorm)):
        m = (nn.GroupNorm(layer.num_groups, layer.num_channels, layer.eps) if isinstance(layer, GroupNorm) else
             nn.BatchNorm2d(layer.num_features, layer.eps, layer.momentum))     # for (N, C, H, W) input
        for name, value in layer.buffers.items():
            copy(getattr(m, name), value)
        copy(m.weight, layer.params["gamma"])
        copy(m.bias, layer.params["beta"])
        return m.train(layer.training)
    elif isinstance(layer, (LSTM, GRU)):
        return _recurrent_module(layer)
    else:
        raise TypeError(f"no PyTorch twin for {type(layer).__name__}")
    copy(m.weight, layer.params["W"])
    if layer.bias:
        copy(m.bias, layer.params["b"])
    return m


RECURRENT_NAMES = {"W_ih": "weight_ih", "W_hh": "weight_hh", "b_ih": "bias_ih", "b_hh": "bias_hh"}


def torch_recurrent_name(path: str) -> str:
    """The ``nn.LSTM`` / ``nn.GRU`` parameter of an npvae recurrent parameter path:
    ``l0_reverse.W_ih`` -> ``weight_ih_l0_reverse``."""
    cell, name = path.split(".")
    return f"{RECURRENT_NAMES[name]}_{cell}"


def _recurrent_module(layer):
    """``nn.LSTM`` / ``nn.GRU`` (batch_first) equal to ``layer`` as ``.rnn`` of a module whose
    output is the sequence alone (no final state), as the npvae layer's."""
    import torch
    from torch import nn

    class Outputs(nn.Module):
        def __init__(self, rnn):
            super().__init__()
            self.rnn = rnn

        def forward(self, x):
            return self.rnn(x)[0]

    rnn = getattr(nn, type(layer).__name__)(layer.input_size, layer.hidden_size, num_layers=layer.num_layers,
                                            bidirectional=layer.bidirectional, batch_first=True)
    with torch.no_grad():
        for path, p, _ in layer.named_parameters():
            getattr(rnn, torch_recurrent_name(path)).copy_(torch.from_numpy(p))
    return Outputs(rnn)


class TorchCase:
    """The PyTorch twin of a :class:`Case`: same layers, weights, batch and Adam settings."""

    def __init__(self, case):
        import torch
        from torch import nn
        self.name = case.name
        self.parts = nn.ModuleDict({k: torch_module(v) for k, v in case.model.parts.items()})
        self.x = torch.from_numpy(case.batch["x"].copy())
        self.targets = [torch.from_numpy(t.copy()) for t in case.batch["targets"]]
        self.optimizer = torch.optim.Adam(self.parts.parameters(), lr=case.optimizer.lr)

    def loss(self, eps=None):
        import torch
        import torch.nn.functional as F
        p, n = self.parts, self.x.shape[0]
        if "head" not in p:
            logits = p["decoder0"](p["encoder"](self.x))
            return F.binary_cross_entropy_with_logits(logits, self.targets[0], reduction="sum") / n
        h = p["encoder"](self.x)
        mu, logvar = p["head"]["mu"](h), p["head"]["logvar"](h)
        eps = torch.randn_like(mu) if eps is None else torch.from_numpy(eps)
        z = mu + torch.exp(0.5 * logvar) * eps
        total = -0.5 * torch.sum(1 + logvar - mu * mu - torch.exp(logvar)) / n
        for k, t in zip(sorted(d for d in p if d.startswith("decoder")), self.targets):
            total = total + F.binary_cross_entropy_with_logits(p[k](z), t, reduction="sum") / n
        return total

    def step(self):
        self.optimizer.zero_grad(set_to_none=False)
        loss = self.loss()
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


def torch_grads_as_npvae(case, tcase: "TorchCase") -> dict[str, np.ndarray]:
    """Map PyTorch's gradients onto npvae's parameter paths and layouts."""
    tgrads = dict(tcase.parts.named_parameters())
    out = {}
    for path, p, _ in case.model.named_parameters():
        tpath = _torch_path(case, path)
        g = tgrads[tpath].grad.numpy()
        out[path] = g.T if g.ndim == 2 else g
    return out


def _torch_path(case, path):
    """npvae path ``encoder.0.W`` -> torch path ``encoder.0.0.weight`` (Dense with an
    activation is a torch Sequential(Linear, act))."""
    *layer_path, name = path.split(".")
    layer = case.model
    for key in layer_path:
        layer = layer.children()[key]
    tname = {"W": "weight", "b": "bias"}[name]
    extra = ".0" if isinstance(layer, Dense) and layer.activation is not None else ""
    return ".".join(layer_path) + extra + "." + tname

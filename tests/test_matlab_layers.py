"""matlab/npvae_layer_forward.m reproduces every npvae layer's forward pass in GNU Octave.

Each case is a layer built in Python with random weights, written with the schema's
/model layout (JSON spec + params) and an input; one Octave run computes every
case's output and saves them to a -v7 .mat that scipy reads back in NumPy order.
"""
import json

import numpy as np
import pytest
import scipy.io

from _octave import needs_octave, octave_ok
from npvae import (Conv2d, ConvTranspose2d, Dense, Flatten, GaussianHead, Identity, LeakyReLU, ReLU,
                   Reshape, Sequential, Sigmoid, Softplus, Tanh)
from npvae.layers import GRU, LSTM, FromSequence, ToSequence
from npvae.layers import AvgPool2d, Concat, Dropout, MaxPool2d, Residual, Upsample
from npvae.files.h5mat import write_tree
from npvae.layers import BatchNorm, GroupNorm

pytestmark = needs_octave


def cases(rng):
    """name -> (layer, input), float32 unless named otherwise."""
    kw = dict(rng=rng)
    big = lambda *shape: (4 * rng.standard_normal(shape)).astype(np.float32)   # noqa: E731
    return {
        # Flatten of (N, C, H, W) must follow NumPy's C order
        "dense_chain": (Sequential(Flatten(), Dense(48, 10, activation="relu", **kw),
                                   Dense(10, 7, activation="leaky_relu", alpha=0.1, **kw),
                                   Dense(7, 5, activation="sigmoid", **kw), Dense(5, 6, activation="tanh", **kw),
                                   Dense(6, 4, **kw)), big(3, 3, 4, 4)),
        "dense_one_sample": (Dense(5, 3, activation="relu", **kw), big(1, 5)),
        "conv_same": (Conv2d(3, 5, 3, padding=1, **kw), big(2, 3, 9, 7)),
        "conv_rect": (Conv2d(3, 4, (3, 2), stride=(2, 1), padding=(1, 0), **kw), big(2, 3, 9, 7)),
        "conv_down": (Conv2d(2, 3, 4, stride=2, padding=1, **kw), big(2, 2, 28, 28)),
        "conv_1x1_out": (Conv2d(2, 1, 3, **kw), big(3, 2, 3, 3)),
        "convT_up": (ConvTranspose2d(4, 3, 4, stride=2, padding=1, **kw), big(2, 4, 7, 7)),
        "convT_outpad": (ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1, **kw), big(2, 3, 5, 6)),
        "conv_no_bias": (Conv2d(3, 4, 3, stride=2, padding=1, bias=False, **kw), big(2, 3, 9, 7)),
        "convT_no_bias": (ConvTranspose2d(3, 2, 4, stride=2, padding=1, output_padding=1, bias=False, **kw),
                          big(2, 3, 4, 5)),
        "convT_rect": (ConvTranspose2d(2, 2, (3, 2), stride=(2, 3), padding=(0, 1), output_padding=(1, 2), **kw),
                       big(1, 2, 4, 3)),
        "acts": (Sequential(Identity(), LeakyReLU(0.3), Tanh(), Softplus(), Sigmoid(), ReLU()), big(4, 3, 5)),
        "softplus": (Softplus(), big(3, 7)),
        "reshape_conv": (Sequential(Dense(6, 24, **kw), Reshape((2, 3, 4)), Conv2d(2, 3, 2, **kw), Flatten()),
                         big(3, 6)),
        "conv_vae_like": (Sequential(Conv2d(1, 4, 4, stride=2, padding=1, **kw), LeakyReLU(0.2),
                                     Conv2d(4, 6, 4, stride=2, padding=1, **kw), LeakyReLU(0.2), Flatten(),
                                     Dense(6 * 49, 8, activation="leaky_relu", alpha=0.2, **kw),
                                     Dense(8, 6 * 49, **kw), Reshape((6, 7, 7)),
                                     ConvTranspose2d(6, 4, 4, stride=2, padding=1, **kw), LeakyReLU(0.2),
                                     ConvTranspose2d(4, 2, 4, stride=2, padding=1, **kw)),
                          rng.random((3, 1, 28, 28), dtype=np.float32)),
        "float64_chain": (Sequential(Conv2d(2, 3, 3, padding=1, rng=rng, dtype=np.float64), Tanh(), Flatten(),
                                     Dense(3 * 16, 5, activation="sigmoid", rng=rng, dtype=np.float64)),
                          rng.standard_normal((2, 2, 4, 4))),
        "head": (GaussianHead(12, 5, **kw), big(4, 12)),
        "lstm_bottleneck": (Sequential(ToSequence(), Dense(6, 5, activation="tanh", **kw),
                                       LSTM(5, 4, num_layers=2, bidirectional=True, **kw), Dense(8, 6, **kw),
                                       FromSequence(2, 3)), big(2, 2, 3, 7)),
        "gru_stack": (GRU(3, 4, num_layers=3, bidirectional=True, **kw), big(3, 6, 3)),
        "lstm_one_step": (LSTM(3, 2, **kw), big(2, 1, 3)),
        "to_sequence": (ToSequence(), big(2, 3, 4, 5)),
        "pools": (Sequential(MaxPool2d(2), AvgPool2d(3, 2, 1), MaxPool2d(3, 1, 1)), big(2, 3, 11, 9)),
        "pool_rect": (Sequential(MaxPool2d((2, 3), (1, 2), (1, 0)), AvgPool2d((3, 2), 1)), big(2, 2, 7, 8)),
        "upsample_nearest": (Sequential(Upsample(2), Upsample(1.5), Upsample(size=(13, 7))), big(2, 2, 3, 4)),
        "upsample_bilinear": (Sequential(Upsample(2, "bilinear"), Upsample((1.5, 3), "bilinear"),
                                         Upsample(size=(7, 13), mode="bilinear")), big(2, 2, 3, 4)),
        "blocks": (Sequential(Residual(Sequential(Conv2d(2, 3, 3, padding=1, **kw), Dropout(0.5),
                                                  Conv2d(3, 3, 3, padding=1, **kw)), Conv2d(2, 3, 1, **kw)),
                              Concat(Identity(), Sequential(Dropout(0.3, channels=True), MaxPool2d(2),
                                                            Conv2d(3, 2, 3, padding=1, **kw), Upsample(size=(7, 6)))),
                              Residual(ReLU()), Concat(Flatten(), Flatten(), axis=1)), big(2, 2, 7, 6)),
    }


def norm_cases(rng):
    """BatchNorm (eval mode, running statistics away from 0 and 1) and GroupNorm."""
    def shaken(layer):
        for name, a in layer.state_arrays().items():
            a[:] = rng.uniform(0.3, 2.0, a.shape) if name.endswith(("gamma", "var")) else rng.standard_normal(a.shape)
        return layer
    big = lambda *shape: (3 * rng.standard_normal(shape) + 1).astype(np.float32)   # noqa: E731
    return {
        "bn_2d": (shaken(BatchNorm(5, eps=1e-3)), big(4, 5, 3, 6)),
        "bn_features": (Sequential(Dense(6, 4, rng=rng), shaken(BatchNorm(4)), ReLU()), big(3, 6)),
        "conv_bn": (Sequential(Conv2d(2, 3, 3, padding=1, rng=rng), shaken(BatchNorm(3)), LeakyReLU(0.2)), big(2, 2, 5, 4)),
        "conv_no_bias_bn": (Sequential(Conv2d(2, 3, 3, padding=1, bias=False, rng=rng), shaken(BatchNorm(3))),
                            big(2, 2, 5, 4)),
        "gn_2d": (shaken(GroupNorm(2, 6)), big(3, 6, 4, 5)),
        "gn_features": (shaken(GroupNorm(3, 6, eps=1e-4)), big(4, 6)),
        "gn_one_group_f64": (shaken(GroupNorm(1, 3, dtype=np.float64)), rng.standard_normal((2, 3, 4, 4))),
    }


def test_octave_forward_matches_numpy(tmp_path, rng):
    expected = {}
    for name, (layer, x) in {**cases(rng), **norm_cases(rng)}.items():
        layer.eval()
        out = layer.forward(x)
        expected[name] = out if isinstance(out, tuple) else (out,)
        write_tree(tmp_path / f"{name}.h5", {"model": {"spec": json.dumps(layer.spec()), "dtype": str(layer.dtype),
                                                       "params": layer.state_dict()}, "input": {"x": x}}, "model")
    names = list(expected)
    code = ("names = {" + ", ".join(f"'{n}'" for n in names) + "}; out = struct();"
            "for k = 1:numel(names),"
            "  S = npvae_load([names{k} '.h5'], 'model');"
            "  [y, y2] = npvae_layer_forward(S.model.spec, S.model.params, '', S.input.x);"
            "  out.(names{k}) = y; out.([names{k} '_2']) = y2;"
            "end;"
            "save('-v7', 'out.mat', '-struct', 'out');")
    octave_ok(code, tmp_path)
    got = scipy.io.loadmat(tmp_path / "out.mat")
    for name, outs in expected.items():
        for i, want in enumerate(outs):
            have = got[name if i == 0 else name + "_2"]
            assert have.dtype == np.float64, name
            assert have.size == want.size, (name, have.shape, want.shape)
            # MATLAB drops trailing singleton dims: compare in the NumPy shape
            have = have.reshape(want.shape) if have.shape != want.shape else have
            assert have.shape[:2] == want.shape[:2], (name, have.shape, want.shape)
            np.testing.assert_allclose(have, want, atol=1e-5, rtol=1e-5, err_msg=name)


def test_octave_forward_refuses_unknown_layers_and_missing_params(tmp_path):
    spec = json.dumps({"type": "Sequential", "layers": [{"type": "Dense", "in_features": 2, "out_features": 1}]})
    write_tree(tmp_path / "m.h5", {"model": {"spec": spec, "params": {"0.W": np.ones((2, 1), np.float32)}}}, "model")
    out = octave_ok("S = npvae_load('m.h5', 'model');"
                    "try, npvae_layer_forward(S.model.spec, S.model.params, '', ones(3, 2));"
                    "catch err, fprintf('%s|%s\\n', err.identifier, err.message); end;"
                    "try, npvae_layer_forward('{\"type\": \"Transformer\"}', S.model.params, 'att', ones(3, 2));"
                    "catch err, fprintf('%s|%s\\n', err.identifier, err.message); end", tmp_path)
    assert "npvae:missingParam|" in out and "parameter 0.b (field x0_b)" in out, out
    assert "npvae:unknownLayer|" in out and "Transformer" in out, out

"""Bad arguments raise a ValueError that says what was expected."""
import numpy as np
import pytest

import npvae


@pytest.mark.parametrize("make,x,match", [
    (lambda: npvae.Dense(4, 2), np.zeros((3, 5), np.float32), r"4 features"),
    (lambda: npvae.Dense(4, 2), np.zeros((3, 2, 2, 2), np.float32), r"\(N, in_features\)"),
    (lambda: npvae.Dense(4, 2), np.zeros((3, 2, 2), np.float32), r"4 features.*\(N, T, in_features\)"),
    (lambda: npvae.Dense(4, 2), np.zeros((3, 4), np.float64), r"expected float32 input, got float64"),
    (lambda: npvae.Dense(4, 2), np.zeros((3, 4), np.int64), r"expected float32"),
    (lambda: npvae.Conv2d(3, 2, 3), np.zeros((1, 2, 5, 5), np.float32), r"3 features/channels"),
    (lambda: npvae.Conv2d(1, 2, 3), np.zeros((5, 5), np.float32), r"\(N, in_channels, H, W\)"),
    (lambda: npvae.Conv2d(1, 2, 5, padding=1), np.zeros((1, 1, 2, 2), np.float32), r"larger than the padded input"),
    (lambda: npvae.ConvTranspose2d(2, 1, 3), np.zeros((1, 1, 4, 4), np.float32), r"2 features/channels"),
    (lambda: npvae.Reshape((2, 3)), np.zeros((2, 5), np.float32), r"needs 6 values"),
])
def test_wrong_input(make, x, match):
    with pytest.raises(ValueError, match=match):
        make().forward(x)


@pytest.mark.parametrize("make,match", [
    (lambda: npvae.Conv2d(1, 2, 3, stride=0), "stride"),
    (lambda: npvae.Conv2d(1, 2, 3, stride=-1), "stride"),
    (lambda: npvae.Conv2d(1, 2, 0), "kernel_size"),
    (lambda: npvae.Conv2d(1, 2, 3, padding=-1), "padding"),
    (lambda: npvae.ConvTranspose2d(1, 2, 3, stride=2, output_padding=2), "output_padding"),
    (lambda: npvae.Dense(0, 2), "positive"),
    (lambda: npvae.Dense(2, 2, activation="gelu"), "unknown activation"),
    (lambda: npvae.Dense(2, 2, dtype=np.float16), "float32 or float64"),
    (lambda: npvae.Dense(2, 2, rng=42), "Generator"),
    (lambda: npvae.build_layer({"type": "Nope"}), "unknown layer type"),
])
def test_bad_constructor_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_load_state_dict_mismatch():
    layer = npvae.Dense(2, 3)
    with pytest.raises(ValueError, match="missing"):
        layer.load_state_dict({"W": np.zeros((2, 3))})
    with pytest.raises(ValueError, match="expected shape"):
        layer.load_state_dict({"W": np.zeros((3, 2)), "b": np.zeros(3)})

"""Inference (``npvae.layers.inference``): forward passes that keep nothing for backward,
with the activations applied in place to the convolutions' output, give the numbers of
an ordinary forward bit for bit, for every convolution algorithm; a backward after one
raises; the separator runs in it, its chunks all of one width, with memory flat in the
length of the signal."""
import tracemalloc

import numpy as np
import pytest

from npvae.layers import (Conv2d, ConvTranspose2d, Dense, Identity, LeakyReLU, ReLU, Sigmoid, Softplus, Tanh,
                          conv_algos, inference)
from npvae.layers.base import in_inference, inference_scratch
from npvae.models.music import SpectrogramUNetVAE
from npvae.separation.separator import chunk_windows, predict_masks

ALGOS = ["auto", *conv_algos.ALGORITHMS]
ACTS = {"none": lambda: None, "identity": Identity, "relu": ReLU, "leaky_relu": lambda: LeakyReLU(0.2),
        "negative_slope": lambda: LeakyReLU(-0.3), "sigmoid": Sigmoid, "tanh": Tanh, "softplus": Softplus}
BACKWARD_FIRST = "backward called before forward"


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Auto mode times the algorithms into a cache of the test's own."""
    monkeypatch.setenv("NPVAE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("NPVAE_CONV_ALGO", raising=False)
    monkeypatch.setattr(conv_algos, "_chosen", {})


def force(monkeypatch, algo):
    if algo != "auto":
        monkeypatch.setenv("NPVAE_CONV_ALGO", algo)


def held_arrays(layer) -> list[str]:
    """The arrays a layer holds besides its parameters and gradients."""
    held = []
    for name, value in vars(layer).items():
        if isinstance(value, np.ndarray):
            held.append(name)
        elif isinstance(value, dict) and name not in ("params", "grads"):
            held += [f"{name}[{k}]" for k, a in value.items() if isinstance(a, np.ndarray)]
    return held


def model_layers(model):
    return [layer for _, layer in model.named_layers() if layer is not model] + [*model.acts, model.out]


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("channels", [(4, 8, 16), (3, 4, 5, 6, 8)])
def test_music_network_in_inference_equals_its_eval_forward(rng, monkeypatch, algo, channels):
    force(monkeypatch, algo)
    model = SpectrogramUNetVAE(channels, latent_channels=4, rng=np.random.default_rng(1)).eval()
    d = model.DOWNSAMPLE
    x = rng.standard_normal((3, 1, 2 * d, 3 * d)).astype(np.float32)
    with inference():                    # first, so that auto mode times its choices in inference
        got = model.forward(x, sample=False).copy()
        mu = model.mu.copy()
    assert not in_inference() and inference_scratch() is None
    for layer in model_layers(model):
        assert not held_arrays(layer), layer
    with pytest.raises(RuntimeError, match=BACKWARD_FIRST):
        model.backward(np.ones_like(got))
    want = model.forward(x, sample=False)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(mu, model.mu)
    # and after a training forward, an inference forward drops what it kept
    model.backward(np.ones_like(want))
    with inference():
        model.forward(x, sample=False)
    assert not any(held_arrays(layer) for layer in model_layers(model))
    with pytest.raises(RuntimeError, match=BACKWARD_FIRST):
        model.backward(np.ones_like(got))


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("act", list(ACTS))
def test_conv2d_with_its_activation_fused(rng, monkeypatch, algo, act):
    """A 3x3 stride-1 layer, which every algorithm runs (of one input channel for cin1);
    two threads' chunks of one sample."""
    force(monkeypatch, algo)
    monkeypatch.setenv("NPVAE_NUM_THREADS", "2")
    monkeypatch.setattr("npvae.layers.conv.CHUNK_BYTES", 1)
    c = 1 if algo == "cin1" else 3
    conv, a = Conv2d(c, 5, 3, padding=1, rng=rng), ACTS[act]()
    x = (3 * rng.standard_normal((3, c, 9, 10))).astype(np.float32)
    with inference():
        got = conv.forward(x, act=a).copy()
    assert algo == "auto" or conv.algorithm == algo
    assert not held_arrays(conv) and (a is None or not held_arrays(a))
    with pytest.raises(RuntimeError, match=BACKWARD_FIRST):
        conv.backward(np.ones_like(got))
    y = conv.forward(x)
    want = y if a is None else a.forward(y)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(conv.forward(x, act=a), want)       # the same call outside inference


@pytest.mark.parametrize("act", list(ACTS))
@pytest.mark.parametrize("chunk_bytes", [1, 1 << 20])
def test_conv_transpose_with_its_activation_fused(rng, monkeypatch, act, chunk_bytes):
    monkeypatch.setattr("npvae.layers.conv.CHUNK_BYTES", chunk_bytes)     # one sample a chunk, or all
    conv, a = ConvTranspose2d(4, 3, 5, stride=2, padding=2, output_padding=1, rng=rng), ACTS[act]()
    x = (3 * rng.standard_normal((3, 4, 6, 7))).astype(np.float32)
    with inference():
        got = conv.forward(x, act=a).copy()
    assert not held_arrays(conv) and (a is None or not held_arrays(a))
    with pytest.raises(RuntimeError, match=BACKWARD_FIRST):
        conv.backward(np.ones_like(got))
    y = conv.forward(x)
    np.testing.assert_array_equal(got, y if a is None else a.forward(y))


def test_activations_and_dense_keep_nothing_in_inference(rng):
    x = rng.standard_normal((4, 6)).astype(np.float32)
    for make in ACTS.values():
        a = make()
        if a is None or isinstance(a, Identity):
            continue
        want = a.forward(x).copy()
        with inference():
            np.testing.assert_array_equal(a.forward(x), want)
        assert not held_arrays(a)
        with pytest.raises(RuntimeError, match=BACKWARD_FIRST):
            a.backward(x)
    dense = Dense(6, 3, activation="tanh", rng=rng)
    want = dense.forward(x).copy()
    with inference():
        np.testing.assert_array_equal(dense.forward(x), want)
    with pytest.raises(RuntimeError, match=BACKWARD_FIRST):
        dense.backward(want)


def test_the_layers_share_one_scratch_for_the_block(rng):
    """The columns of the largest layer, per thread, not those of every layer, and none
    after the block."""
    model = SpectrogramUNetVAE((4, 8, 16), latent_channels=4, rng=rng).eval()
    x = rng.standard_normal((2, 1, 64, 128)).astype(np.float32)
    model.forward(x, sample=False)
    per_layer = sum(a.nbytes for layer in model_layers(model) for a in getattr(layer, "_scratch", {}).values())
    with inference():
        model.forward(x, sample=False)
        shared = inference_scratch()
        with inference():                                # a block inside shares it
            assert inference_scratch() is shared
        with inference(False):                           # and one can switch it off inside
            model.forward(x, sample=False)
            assert not in_inference() and held_arrays(model.encoders[0])
        assert inference_scratch() is shared
    assert shared.nbytes() < per_layer / 2
    assert inference_scratch() is None


@pytest.mark.parametrize("name", ["dense", "conv", "unet", "vae"])
def test_part_one_separate_runs_in_inference(rng, name):
    from npvae.models.mnist import build_model
    model = build_model(name, rng=np.random.default_rng(2))
    m = rng.uniform(size=(3, 28, 28)).astype(np.float32)
    digit, fashion, _ = model.separate(m)
    assert model.training                                 # separate leaves the mode as it was
    for _, layer in model.named_layers():
        if layer is not model:
            assert not held_arrays(layer), layer
    y = model.eval().forward(m, sample=False)
    np.testing.assert_array_equal(digit, y[:, 0])
    np.testing.assert_array_equal(fashion, y[:, 1])


def test_chunk_windows_are_of_one_width_and_keep_their_context():
    for frames, chunk, context in [(208, 16, 16), (1880, 512, 48), (808, 256, 48), (64, 512, 48), (96, 32, 0),
                                   (40, 16, 24)]:
        windows = chunk_windows(frames, chunk, context)
        assert {hi - lo for _, _, lo, hi in windows} == {min(frames, chunk + 2 * context)}
        assert [s for s, _, _, _ in windows] == list(range(0, frames, chunk))
        assert windows[-1][1] == frames and all(e == s2 for (_, e, _, _), (s2, *_) in zip(windows, windows[1:]))
        for s, e, lo, hi in windows:
            assert 0 <= lo and hi <= frames
            assert lo <= s - context or lo == 0
            assert hi >= e + context or hi == frames


def test_predict_masks_runs_the_network_in_inference_on_full_batches(rng, monkeypatch):
    monkeypatch.setenv("NPVAE_NUM_THREADS", "2")
    model = SpectrogramUNetVAE((4, 4, 8), latent_channels=4, rng=rng)
    feats = rng.standard_normal((64, 200)).astype(np.float32)
    calls = []
    forward = model.forward

    def spy(x, *args, **kwargs):
        calls.append((x.shape, in_inference()))
        return forward(x, *args, **kwargs)

    monkeypatch.setattr(model, "forward", spy)
    masks = predict_masks(model, feats, 65, chunk_frames=32, context=16)
    assert masks.shape == (2, 65, 200) and not in_inference()
    # 200 frames: 7 chunks of 32, every input 64 frames wide, two a call (the last alone)
    assert [shape for shape, _ in calls] == [(2, 1, 64, 64)] * 3 + [(1, 1, 64, 64)]
    assert all(inside for _, inside in calls)
    monkeypatch.setattr(model, "forward", forward)
    with pytest.raises(RuntimeError, match=BACKWARD_FIRST):
        model.backward(np.ones((1, 2, 64, 64), np.float32))


def test_memory_of_the_network_is_flat_in_the_length(rng, monkeypatch):
    """predict_masks' peak (tracemalloc) less what grows with the signal (its padded copy
    of the features and the masks it returns): the same for a signal 4 times longer.
    One algorithm throughout: auto mode's timing, when another process's choice makes
    it time again, allocates too."""
    monkeypatch.setenv("NPVAE_CONV_ALGO", "im2col")
    model = SpectrogramUNetVAE((4, 8, 16), latent_channels=4, rng=rng)
    n_bins, n_freq, chunk = 64, 65, 64

    def working_bytes(frames):
        feats = rng.standard_normal((n_bins, frames)).astype(np.float32)
        tracemalloc.start()
        try:
            predict_masks(model, feats, n_freq, chunk_frames=chunk)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        return peak - 4 * frames * (n_bins + model.n_sources * n_freq)

    working_bytes(4 * chunk)                              # compile, fill the algorithm choices
    short, long = working_bytes(8 * chunk), working_bytes(32 * chunk)
    # Flat: what the network holds does not grow with the signal (4x here). On a busy
    # machine some processes measured the longer signal's peak about 9% higher (two
    # threads' temporaries alive at once), hence 1.15 and not 1.0.
    assert short > 0 and long < 1.15 * short, (short, long)


def test_separating_in_blocks_peaks_the_same_for_a_longer_song(rng, monkeypatch):
    """``npvae separate``'s way (blocks of a song read and written one at a time): the peak
    (tracemalloc) for a signal 4 times longer is the same, within a few percent. One
    convolution algorithm throughout, as in the test above, and one worker thread: with
    two, whether both threads' temporaries are alive at once depends on the machine's
    load. Both signals are longer than a block and its context on both sides (2.2 s
    here), where the peak stops growing (measured on one thread: 3.12 MB for 2 s, 4.33
    for 4 s, 4.34 for 8 s, 4.39 for 32 s)."""
    from npvae import threads
    monkeypatch.setenv("NPVAE_CONV_ALGO", "im2col")
    from npvae.audio.stft import STFTConfig
    from npvae.audio.stream import block_layout, separate_blocks
    from npvae.separation.separator import Normalizer, Separator
    cfg = STFTConfig(sample_rate=8000, n_fft=256, hop=64)
    sep = Separator(SpectrogramUNetVAE((4, 8, 16), latent_channels=4, rng=rng), cfg,
                    Normalizer(mean=np.zeros(128), std=np.ones(128)))
    sr = cfg.sample_rate
    block, context = block_layout(sr, sr, cfg.hop, sep.model.DOWNSAMPLE, cfg.n_fft, 1.0)

    def peak(seconds):
        x = (0.3 * rng.standard_normal((int(seconds * sr), 1))).astype(np.float32)
        tracemalloc.start()
        try:
            with threads.at_most(1):
                for _ in separate_blocks(lambda b: sep.separate(b, sr, chunk_frames=64), lambda a, b: x[a:b],
                                         len(x), block, context):
                    pass
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    peak(16.0)                                             # compile, fill the algorithm choices (every block shape)
    assert block + 2 * context < 4 * sr
    short, long = peak(4.0), peak(16.0)
    print(f"peaks: {short} B for 4 s, {long} B for 16 s")
    # memory that grew with the song would be 4 times the short one's (measured 1.005)
    assert long < 1.1 * short, (short, long)

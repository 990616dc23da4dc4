"""STFT / ISTFT: shapes, perfect reconstruction, presets, masks."""
import numpy as np
import pytest

from npvae.audio.stft import (PRESETS, STFTConfig, ideal_ratio_mask, istft, magnitude, phase,
                              polar, stft)


@pytest.mark.parametrize("cfg", [STFTConfig(), STFTConfig(n_fft=512, hop=128, window="hamming"),
                                 STFTConfig(n_fft=256, hop=128)])
@pytest.mark.parametrize("n", [300, 16000, 16001])
def test_round_trip(cfg, n, rng):
    x = rng.standard_normal(n)
    X = stft(x, cfg)
    assert X.shape == (cfg.n_freq, cfg.n_frames(n)) and np.iscomplexobj(X)
    y = istft(X, cfg, length=n)
    assert y.shape == (n,)
    np.testing.assert_allclose(y, x, atol=1e-6)


def test_batched_and_float32(rng):
    cfg = STFTConfig()
    x = rng.standard_normal((3, 5000)).astype(np.float32)
    X = stft(x, cfg)
    assert X.shape == (3, 513, cfg.n_frames(5000)) and X.dtype == np.complex64
    np.testing.assert_array_equal(X[1], stft(x[1], cfg))
    y = istft(X, cfg, 5000)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, x, atol=1e-5)


def test_frame_timing_and_frequency_of_a_tone():
    cfg = STFTConfig()
    n = 16000
    x = np.sin(2 * np.pi * 1000 * np.arange(n) / cfg.sample_rate)
    mag = magnitude(stft(x, cfg))
    peak = np.argmax(mag[:, mag.shape[1] // 2])
    assert cfg.frequencies()[peak] == pytest.approx(1000, abs=cfg.sample_rate / cfg.n_fft)
    assert cfg.first_frame <= 0
    # an impulse at sample k * hop lands in frame k - first_frame's centre
    imp = np.zeros(n)
    imp[10 * cfg.hop] = 1
    frame_energy = np.sum(magnitude(stft(imp, cfg)) ** 2, axis=0)
    assert np.argmax(frame_energy) == 10 - cfg.first_frame


def test_polar_inverts_magnitude_phase(rng):
    X = stft(rng.standard_normal(3000))
    np.testing.assert_allclose(polar(magnitude(X), phase(X)), X, atol=1e-9)


def test_presets_and_validation():
    assert STFTConfig.for_dataset("MIR-1K") == STFTConfig(16000, 1024, 256, "hann")
    assert PRESETS["irmas"].sample_rate == 16000
    assert STFTConfig.for_dataset("irmas", hop=512).hop == 512
    with pytest.raises(ValueError, match="preset"):
        STFTConfig.for_dataset("timit")
    with pytest.raises(ValueError, match="hop"):
        STFTConfig(n_fft=256, hop=512)
    with pytest.raises(ValueError, match="inverted"):
        stft(np.ones(4000), STFTConfig(n_fft=256, hop=256))   # Hann with no overlap
    with pytest.raises(ValueError, match="bins"):
        istft(np.zeros((100, 4), complex), STFTConfig())


def test_ideal_ratio_mask_separates_disjoint_tones():
    cfg = STFTConfig()
    t = np.arange(16000) / cfg.sample_rate
    v, a = np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 3000 * t)
    V, A = stft(v, cfg), stft(a, cfg)
    m = ideal_ratio_mask(V, A)
    assert m.shape == V.shape and m.min() >= 0 and m.max() <= 1
    est = istft(m * stft(v + a, cfg), cfg, len(t))
    err = np.sum((est - v)[2000:-2000] ** 2) / np.sum(v[2000:-2000] ** 2)
    assert err < 1e-3


@pytest.mark.parametrize("n_fft,hop,window", [(1024, 256, "hann"), (512, 128, "hamming"), (1000, 300, "hann"),
                                              (64, 64, "boxcar"), (256, 100, "blackman"), (31, 7, "hann")])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_all_frames_at_once_equal_shorttimefft_bit_for_bit(n_fft, hop, window, dtype, rng):
    """stft/istft transform every frame in one call; ShortTimeFFT, which defines them,
    goes frame by frame. Same numbers, same shapes, for short and long signals."""
    from npvae.audio.stft import _min_len, _transform
    cfg = STFTConfig(16000, n_fft, hop, window)
    sft = _transform(cfg)
    for n in (1, n_fft // 2, n_fft + 3, 10 * hop + 7, 5000):
        x = rng.standard_normal((2, n)).astype(dtype)
        ref = sft.stft(np.pad(x, [(0, 0), (0, max(0, _min_len(cfg) - n))]), axis=-1)
        ref = ref.astype(np.complex64) if dtype == np.float32 else ref
        np.testing.assert_array_equal(stft(x, cfg), ref)
        for length in (n, None):
            k1 = (ref.shape[-1] - 1 + sft.p_min) * hop + 1 if length is None else length
            want = sft.istft(ref, k1=max(k1, _min_len(cfg)))[..., :k1]
            got = istft(ref, cfg, length=length)
            assert got.dtype == (np.float32 if dtype == np.float32 else np.float64)
            np.testing.assert_array_equal(got, want.astype(got.dtype))
    with pytest.raises(ValueError, match="at most"):       # more samples than the frames cover
        istft(ref, cfg, length=n + 10 * n_fft)

"""Music pipeline: features, batches, the training objective, chunked separation,
evaluation and model files."""
import numpy as np
import pytest

from npvae.audio.datasets import Track
from npvae.audio.stft import STFTConfig, stft
from _gradcheck import numerical_gradient, rel_error
from npvae.models.music import SpectrogramUNetVAE
from npvae.files.model_file import load_separator, save_separator
from npvae.tasks.music import LossConfig, MusicObjective, evaluate, format_table, lr_at, sample_batch
from npvae.separation.separator import Normalizer, Separator, predict_masks, wiener_masks

CFG = STFTConfig(sample_rate=8000, n_fft=256, hop=64)     # small and fast; 129 bins, 128 seen


def synth_track(rng, seconds=1.5, sr=8000, name="t"):
    t = np.arange(int(seconds * sr)) / sr
    f0 = 220 * (1 + 0.02 * np.sin(2 * np.pi * 5 * t))
    voice = sum(0.3 / k * np.sin(2 * np.pi * k * np.cumsum(f0) / sr) for k in range(1, 6))
    voice *= (np.sin(2 * np.pi * 1.3 * t) > -0.3)
    acc = 0.2 * np.sign(np.sin(2 * np.pi * 110 * t)) + 0.05 * rng.standard_normal(t.size)
    return Track(name, voice.astype(np.float32), acc.astype(np.float32), sr)


def tiny_separator(rng, dtype=np.float32, tracks=None):
    model = SpectrogramUNetVAE(channels=(4, 4, 8), latent_channels=4, rng=rng, dtype=dtype)
    norm = Normalizer.fit(tracks or [synth_track(rng)], CFG)
    return Separator(model, CFG, norm)


def test_normalizer_standardises_its_training_data(rng):
    tracks = [synth_track(rng, name=str(i)) for i in range(2)]
    for compression in ("log", "power"):
        norm = Normalizer.fit(tracks, CFG, compression)
        feats = np.concatenate([norm(np.abs(stft(t.mixture(), CFG))) for t in tracks], axis=1)
        assert feats.shape[0] == CFG.n_freq - 1 and feats.dtype == np.float32
        np.testing.assert_allclose(feats.mean(axis=1), 0, atol=1e-3)
        np.testing.assert_allclose(feats.std(axis=1), 1, atol=1e-2)
        back = Normalizer.from_dict(norm.to_dict()).to_dict()
        for key, value in norm.to_dict().items():
            np.testing.assert_array_equal(back[key], value)


def test_sample_batch_keeps_only_whole_frames(rng):
    # A steady sinusoid: every whole frame has the same magnitude; a frame that
    # reached past the segment's ends would be weaker.
    sr = CFG.sample_rate
    t = np.arange(3 * sr) / sr
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    track = Track("tone", tone, tone.copy(), sr)
    b = sample_batch([track], rng, 3, 16, CFG, remix_prob=0.0)
    assert b["voice"].shape == (3, CFG.n_freq, 16)
    np.testing.assert_allclose(b["mixture"], b["voice"] + b["accompaniment"])
    peak = np.abs(b["voice"][:, 32])                              # 1000 Hz bin
    np.testing.assert_allclose(peak, peak.max(), rtol=1e-3)


def test_objective_gradient_matches_finite_differences(rng):
    sep = tiny_separator(rng, np.float64)
    batch = sample_batch([synth_track(rng)], rng, 2, 8, CFG)
    for loss, w_logit in (("l1", 0.0), ("kl", 0.0), ("is", 0.0), ("mse", 0.0), ("l1", 0.3)):
        obj = MusicObjective(sep, LossConfig(loss=loss, mix_weight=0.7,
                                             logit_penalty=w_logit))

        def total():
            sep.model.rng = np.random.default_rng(3)
            return obj.terms(batch, beta=0.5, backward=False)["total"]

        sep.model.rng = np.random.default_rng(3)
        terms = obj.terms(batch, beta=0.5)
        assert set(terms) >= {"total", "vocals", "accompaniment", "mixture", "kl"}
        assert ("logits" in terms) == bool(w_logit)
        p = sep.model.dec1.params["W"]
        err = rel_error(sep.model.dec1.grads["W"], numerical_gradient(total, p))
        assert err < 1e-5, f"{loss}, logit penalty {w_logit}: {err:.2e}"
        p = sep.model.head.params["b"]                  # through the latent and the KL
        assert rel_error(sep.model.head.grads["b"], numerical_gradient(total, p)) < 1e-5


def test_training_steps_reduce_the_loss(rng):
    from npvae.optim import Adam
    tracks = [synth_track(rng)]
    sep = tiny_separator(rng, tracks=tracks)
    obj = MusicObjective(sep, LossConfig())
    opt = Adam(sep.model, lr=3e-3)
    batch = sample_batch(tracks, rng, 4, 16, CFG)
    first = obj.terms(batch, beta=0.0)["total"]
    for _ in range(30):
        obj.terms(batch, beta=0.0)
        opt.step()
    sep.model.eval()
    assert obj.terms(batch, beta=0.0, backward=False)["total"] < 0.8 * first


def test_logit_penalty_brings_a_saturated_mask_back(rng):
    # A voice mask stuck at sigmoid(-30) gets no gradient from the spectral loss; the
    # logit penalty pulls its logits back towards the range where it learns.
    from npvae.optim import Adam
    tracks = [synth_track(rng)]
    batch = sample_batch(tracks, rng, 4, 16, CFG)
    voice_logit = {}
    for w_logit in (0.0, 1e-2):
        sep = tiny_separator(np.random.default_rng(0), tracks=tracks)
        sep.model.dec1.params["b"][0] = -30.0
        obj = MusicObjective(sep, LossConfig(logit_penalty=w_logit))
        opt = Adam(sep.model, lr=3e-2)
        for _ in range(40):
            obj.terms(batch, beta=0.0)
            opt.step()
        voice_logit[w_logit] = float(np.median(sep.model.logits[:, 0]))
    assert voice_logit[0.0] < -25
    assert voice_logit[1e-2] > -10


def test_chunked_masks_equal_one_shot(rng):
    sep = tiny_separator(rng)
    feats = rng.standard_normal((CFG.n_freq - 1, 77)).astype(np.float32)
    one = predict_masks(sep.model, feats, CFG.n_freq, chunk_frames=1024)
    chunked = predict_masks(sep.model, feats, CFG.n_freq, chunk_frames=16, context=48)
    assert one.shape == (2, CFG.n_freq, 77)
    np.testing.assert_allclose(chunked, one, atol=1e-5)
    # Without context the chunk borders show: the test can tell the two apart.
    assert np.max(np.abs(predict_masks(sep.model, feats, CFG.n_freq, 16, 0) - one)) > 1e-3
    with pytest.raises(ValueError, match="multiples of 8"):
        predict_masks(sep.model, feats, CFG.n_freq, chunk_frames=20)


def test_chunked_separation_equals_one_shot_on_a_short_file(rng):
    sep = tiny_separator(rng)
    mix = synth_track(rng, seconds=2.3).mixture()
    one = sep.separate_mono(mix, chunk_frames=1024)
    chunked = sep.separate_mono(mix, chunk_frames=24, context=48)
    assert one.shape == (2, mix.size)
    np.testing.assert_allclose(chunked, one, atol=1e-5)


def test_wiener_masks_sum_to_one_and_separate_keeps_length_and_channels(rng):
    m = wiener_masks(rng.uniform(0, 1, (2, 5, 7)))
    np.testing.assert_allclose(m.sum(axis=0), 1, atol=1e-6)
    sep = tiny_separator(rng)
    stereo = np.stack([synth_track(rng).mixture(), 0.3 * synth_track(rng).mixture()], axis=1)[:11025]
    out = sep.separate(stereo, 11025, wiener=True)       # another rate: resampled both ways
    assert out.shape == (2, 11025, 2)
    # With Wiener masks the estimates add up to the input, channel by channel.
    for c in range(2):
        err = out[:, :, c].sum(axis=0) - stereo[:, c]
        assert np.sqrt(np.mean(err ** 2)) < 0.02 * np.sqrt(np.mean(stereo[:, c] ** 2))


def test_a_deeper_network_separates_in_chunks_with_its_own_context(rng):
    """Five levels: frames in multiples of 32, and a default context (the model's
    context_frames, 128) that covers the receptive field, so chunks equal one pass."""
    model = SpectrogramUNetVAE(channels=(2, 2, 2, 2, 2), latent_channels=2, rng=rng)
    assert model.DOWNSAMPLE == 32 and model.context_frames == 128
    feats = rng.standard_normal((CFG.n_freq - 1, 300)).astype(np.float32)
    one = predict_masks(model, feats, CFG.n_freq, chunk_frames=1024)
    np.testing.assert_allclose(predict_masks(model, feats, CFG.n_freq, chunk_frames=64), one, atol=1e-5)


def test_shift_offsets_spread_over_the_downsampling_phases():
    from npvae.separation.separator import shift_offsets
    assert shift_offsets(32, 1) == [0]
    assert shift_offsets(32, 4) == [0, 8, 16, 24] and shift_offsets(8, 3) == [0, 2, 5]
    assert shift_offsets(8, 8) == list(range(8))
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="whole number >= 1"):
            shift_offsets(8, bad)
    with pytest.raises(ValueError, match="at most 8"):
        shift_offsets(8, 9)


def test_shifted_masks_average_the_passes_over_delayed_inputs(rng):
    sep = tiny_separator(rng)
    mag = np.abs(stft(synth_track(rng).mixture(), CFG))                   # (129, T)
    plain = sep.masks(mag)
    np.testing.assert_array_equal(sep.masks(mag, shifts=1), plain)
    feats = sep.norm(mag)
    by_hand = [plain]
    for o in (2, 4, 6):                                                    # DOWNSAMPLE 8, 4 shifts
        delayed = np.pad(feats, ((0, 0), (o, 0)), mode="reflect")
        by_hand.append(predict_masks(sep.model, delayed, CFG.n_freq)[..., o:])
    four = sep.masks(mag, shifts=4)
    assert four.shape == plain.shape
    np.testing.assert_allclose(four, np.mean(by_hand, axis=0), rtol=1e-6, atol=1e-7)
    assert np.abs(four - plain).max() > 1e-4            # a delayed pass is not the same pass
    # a mixture shorter than an offset is padded with its edge, not refused
    assert sep.masks(mag[:, :3], shifts=8).shape == (2, CFG.n_freq, 3)
    x = synth_track(rng).mixture()
    np.testing.assert_allclose(sep.separate_mono(x, shifts=4)[0].shape, x.shape)


def test_evaluate_orders_oracle_model_and_floor(rng):
    tracks = [synth_track(rng, name=f"c{i}") for i in range(2)]
    res = evaluate(tiny_separator(rng, tracks=tracks), tracks)
    assert res["clip_names"] == ["c0", "c1"] and res["model_sdr"].shape == (2, 2)
    np.testing.assert_allclose(res["mixture_nsdr"], 0, atol=1e-9)
    for src in ("vocals", "accompaniment"):
        assert res[f"oracle_{src}_gnsdr"] > 5
        assert abs(res[f"mixture_{src}_gnsdr"]) < 1e-9
    assert "ideal ratio mask" in format_table(res)


def test_gnsdr_per_singer_weights_each_singers_clips_by_length():
    from npvae.audio.datasets import mir1k_singer
    from npvae.tasks.music import by_group, format_groups
    per = {"clip_names": ["amy_1_01", "Ani_2_01", "amy_3_02"], "clip_seconds": np.array([1.0, 2.0, 3.0]),
           "model_nsdr": np.array([[1.0, 2.0], [5.0, 6.0], [3.0, 4.0]])}
    g = by_group(per, mir1k_singer)
    assert g["groups"] == ["Ani", "amy"] and list(g["group_clips"]) == [1, 2]
    np.testing.assert_allclose(g["group_vocals_gnsdr"], [5.0, (1 * 1 + 3 * 3) / 4])
    np.testing.assert_allclose(g["group_accompaniment_gnsdr"], [6.0, (2 * 1 + 4 * 3) / 4])
    text = format_groups(g)
    assert "Ani" in text and "across singers: vocals 2.50 to 5.00" in text


def test_evaluate_leaves_out_clips_with_a_silent_reference(rng):
    tracks = [synth_track(rng, name=f"c{i}") for i in range(2)]
    tracks[1].voice[:] = 0
    sep = tiny_separator(rng, tracks=tracks[:1])
    res = evaluate(sep, tracks, baselines=False)
    assert res["clip_names"] == ["c0"] and res["skipped_clips"] == ["c1 (silent vocals)"]
    with pytest.raises(ValueError, match="silent reference"):
        evaluate(sep, tracks[1:], baselines=False)


def test_lr_schedule():
    assert lr_at(0, 10, 1e-3) == lr_at(6, 10, 1e-3) == 1e-3
    assert lr_at(8, 10, 1e-3) < 1e-3
    assert np.isclose(lr_at(10, 10, 1e-3), 1e-4)


def test_separator_file_round_trip(rng, tmp_path):
    sep = tiny_separator(rng)
    path = save_separator(tmp_path / "model.h5", sep, {"epochs": 3})
    back = load_separator(tmp_path)
    assert back.stft_cfg == sep.stft_cfg
    mag = np.abs(stft(synth_track(rng).mixture(), CFG))
    np.testing.assert_array_equal(back.masks(mag), sep.masks(mag))
    with pytest.raises(Exception, match="model"):
        load_separator(tmp_path / "missing.h5")
    assert path.exists()


def test_beta_zero_ignores_an_overflowing_kl(rng):
    """The deterministic net (beta 0, no sampling) does not constrain its latent; a KL
    that overflows to inf must not turn the loss or the gradients into NaN (0 * inf)."""
    sep = tiny_separator(rng)
    L = sep.model.latent_channels
    sep.model.head.params["b"][L:] = 100.0                   # logvar = 100: exp overflows float32
    batch = sample_batch([synth_track(rng)], rng, 2, 8, CFG)
    terms = MusicObjective(sep, LossConfig(sample=False)).terms(batch, beta=0.0)
    assert not np.isfinite(terms["kl"])
    assert np.isfinite(terms["total"])
    for path, p, g in sep.model.named_parameters():
        assert np.all(np.isfinite(g)), path


@pytest.mark.parametrize("threads", ["2", "3"])
def test_masks_batched_over_threads_equal_one_chunk_at_a_time(rng, monkeypatch, threads):
    """predict_masks sends chunks of equal width through the network together, one per
    thread: the masks are those of one chunk at a time (NPVAE_NUM_THREADS=1), bit for bit.
    One convolution algorithm throughout: auto mode may choose another one (with other
    rounding) for another thread count."""
    monkeypatch.setenv("NPVAE_CONV_ALGO", "im2col")
    sep = tiny_separator(rng)
    feats = rng.standard_normal((CFG.n_freq - 1, 203)).astype(np.float32)   # ragged last chunk
    calls = []
    forward = sep.model.forward

    def counting(x, *args, **kwargs):
        calls.append(x.shape[0])
        return forward(x, *args, **kwargs)

    monkeypatch.setattr(sep.model, "forward", counting)
    monkeypatch.setenv("NPVAE_NUM_THREADS", "1")
    one = predict_masks(sep.model, feats, CFG.n_freq, chunk_frames=16, context=16)
    assert set(calls) == {1}
    calls.clear()
    monkeypatch.setenv("NPVAE_NUM_THREADS", threads)
    batched = predict_masks(sep.model, feats, CFG.n_freq, chunk_frames=16, context=16)
    assert max(calls) == int(threads) and sum(calls) == 13          # 208 frames / 16
    np.testing.assert_array_equal(batched, one)

"""Cross-clip remixing of training excerpts (npvae.audio.remix)."""
import numpy as np
import pytest

from npvae.audio.datasets import Track
from npvae.audio.remix import sample_remix_batch
from npvae.audio.stft import STFTConfig

CFG = STFTConfig(16000, 256, 64)


def two_tracks(rng):
    noise = lambda: rng.standard_normal(4000).astype(np.float32)   # noqa: E731
    zeros = np.zeros(4000, np.float32)
    # track a: voice only; track b: accompaniment only
    return [Track("a", noise(), zeros), Track("b", zeros, noise())]


def energies(batch):
    return (np.abs(batch["voice"]) ** 2).sum(axis=(1, 2)), (np.abs(batch["accompaniment"]) ** 2).sum(axis=(1, 2))


def test_shapes_and_mixture_is_the_sum(rng):
    b = sample_remix_batch(two_tracks(rng), rng, 6, 16, CFG, remix_prob=0.5, gain_db=6)
    for key in ("voice", "accompaniment", "mixture"):
        assert b[key].shape == (6, CFG.n_freq, 16) and np.iscomplexobj(b[key])
    np.testing.assert_allclose(b["mixture"], b["voice"] + b["accompaniment"])


def test_without_remixing_each_voice_keeps_its_own_accompaniment(rng):
    v, a = energies(sample_remix_batch(two_tracks(rng), rng, 32, 16, CFG, remix_prob=0.0))
    assert np.all((v > 0) != (a > 0))         # a: voice, silent accompaniment; b: the reverse


def test_remixing_takes_the_accompaniment_of_another_clip(rng):
    v, a = energies(sample_remix_batch(two_tracks(rng), rng, 32, 16, CFG, remix_prob=1.0))
    assert np.all((v > 0) == (a > 0))         # a's voice with b's accompaniment, b's silence with a's
    assert np.any(v > 0) and np.any(v == 0)


def test_gain_stays_within_its_range(rng):
    tracks = [Track(n, np.zeros(4000, np.float32), np.ones(4000, np.float32)) for n in "ab"]
    b = sample_remix_batch(tracks, rng, 64, 8, CFG, remix_prob=0.5, gain_db=6.0)
    level = np.abs(b["accompaniment"][:, 0, :]).mean(axis=1)   # DC bin of a constant: its level
    ratio_db = 20 * np.log10(level / np.median(level))
    assert ratio_db.max() - ratio_db.min() <= 12.0 + 1e-3 and ratio_db.max() - ratio_db.min() > 6.0


def test_bad_settings_are_refused(rng):
    with pytest.raises(ValueError, match="remix_prob"):
        sample_remix_batch(two_tracks(rng), rng, 2, 8, CFG, remix_prob=1.5)
    with pytest.raises(ValueError, match="batch_size"):
        sample_remix_batch(two_tracks(rng), rng, 0, 8, CFG)

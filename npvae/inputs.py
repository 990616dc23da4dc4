"""What a user hands npvae, checked at the edge: arrays, rates and counts are converted
or refused, a run's settings are range-checked (:func:`check_settings`), and a model's
estimates from finite input must be finite (:func:`check_finite_estimates`).

Integer samples are converted with the usual full-scale conventions (uint8 images:
0..255 -> [0, 1]; int16/int32 audio: full scale -> 1.0; uint8 audio: offset binary),
so the arrays that ``npvae.data.mnist.load_images`` and ``soundfile``'s integer reads
return work as they are. Everything else that cannot be meant (NaN, values out of
range, empty batches, channels-first audio, integer types with no standard full scale,
a sample rate that is not a positive number of Hz, or audio at a rate outside
:data:`AUDIO_RATES`) is refused with a ValueError naming the fix.
"""
from __future__ import annotations

import numpy as np

# The most a count that sizes work may be (epochs, batch size, steps...): a larger value
# is a typo, or a run of years, and is refused rather than started.
MAX_COUNT = 100_000


def _finite(x: np.ndarray, what: str, axes: tuple[str, ...]) -> None:
    """Refuse NaN/inf, naming how many and where the first is (``axes`` names x's axes)."""
    ok = np.isfinite(x)
    if not ok.all():
        first = np.unravel_index(int(np.argmin(ok)), x.shape)
        where = ", ".join(f"{name} {int(i)}" for name, i in zip(axes, first))
        raise ValueError(f"{what} holds {int(ok.size - np.count_nonzero(ok))} NaN or infinite value(s), the first "
                         f"at {where}; clean the data first")


def as_unit_images(x, side: int, dtype=np.float32) -> np.ndarray:
    """Images (N, side, side) with values in [0, 1], as ``dtype``.

    uint8 input is divided by 255. Float input must already lie in [0, 1].
    """
    a = np.asarray(x)
    if a.dtype == object or a.dtype.kind not in "uif":
        raise ValueError(f"images must be numbers (uint8 0..255 or float in [0, 1]), got dtype {a.dtype}")
    shape = (side, side)
    if a.ndim == 2 and a.shape == shape:
        raise ValueError(f"got one image of shape {a.shape}; pass a batch of shape (N, {side}, {side}), "
                         "e.g. x[None]")
    if a.ndim == 2 and a.shape[1] == side * side:
        raise ValueError(f"got flat images {a.shape}; reshape them to (N, {side}, {side}): "
                         f"x.reshape(-1, {side}, {side})")
    if a.ndim != 3 or a.shape[1:] != shape:
        raise ValueError(f"expected mixtures of shape (N, {side}, {side}), got {a.shape}")
    if a.shape[0] == 0:
        raise ValueError("got an empty batch (N = 0); pass at least one image")
    if a.dtype == np.uint8:
        return (a.astype(dtype) / np.dtype(dtype).type(255)).astype(dtype, copy=False)
    if a.dtype.kind in "iu":
        raise ValueError(f"integer images of dtype {a.dtype} are ambiguous; pass uint8 (0..255) or "
                         "float in [0, 1] (e.g. x / 255)")
    _finite(a, "the images", ("image", "row", "column"))
    lo, hi = float(a.min()), float(a.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        hint = " (they look like 0..255: divide by 255)" if hi > 1.5 and lo >= 0 else ""
        raise ValueError(f"image values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]{hint}")
    return a.astype(dtype, copy=False)


AUDIO_DTYPES = "float (full scale 1.0), int16 or int32 PCM (soundfile's integer reads), int8 or uint8 (8-bit PCM)"


def as_sample_rate(sr, what: str = "sample rate") -> int:
    """``sr`` as a whole number of Hz > 0; anything else (NaN, a string, 0, 16000.5, True)
    is refused with a ValueError that says what was wrong with it."""
    if isinstance(sr, str):
        raise ValueError(f"{what} must be a positive number in Hz, got the string {sr!r}"
                         + (f"; pass the number {int(sr.strip())}" if sr.strip().isdigit() else ""))
    if isinstance(sr, (bool, np.bool_)) or not isinstance(sr, (int, float, np.integer, np.floating)):
        raise ValueError(f"{what} must be a positive number in Hz, got {type(sr).__name__} {sr!r}")
    if not np.isfinite(sr) or sr <= 0:
        raise ValueError(f"{what} must be a positive number in Hz, got {sr}")
    if int(sr) != sr:
        raise ValueError(f"{what} must be a whole number of Hz, got {sr}")
    return int(sr)


def as_batch_size(value, what: str = "batch_size") -> int:
    """``value`` as a whole number >= 1 (images or items per pass); anything else (0, -1,
    2.5, True, None, a string) is refused with a ValueError naming ``what``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer, float, np.floating)) \
            or not np.isfinite(value) or int(value) != value or value < 1:
        raise ValueError(f"{what} must be a whole number >= 1 (how many images are separated at a time), "
                         f"got {value!r}")
    return int(value)


AUDIO_RATES = (1_000, 384_000)  # Hz: the rates npvae separates audio at


def as_audio_rate(sr, what: str = "sample rate") -> int:
    """``sr`` as :func:`as_sample_rate`, and within :data:`AUDIO_RATES`.

    Separating resamples to the model's rate and back, and the work and memory grow with
    the ratio: a song declared at 1 Hz would be resampled to 16,000 times as many samples.
    Outside these rates a rate is a mistake (a rate in kHz, a damaged header), not audio.
    """
    sr = as_sample_rate(sr, what)
    lo, hi = AUDIO_RATES
    if not lo <= sr <= hi:
        raise ValueError(f"{what} {sr:,} Hz is outside the rates npvae separates audio at ({lo:,} to {hi:,} Hz); "
                         "give the rate in Hz (16000, not 16), or, for a file, check the rate its header "
                         "declares and resample it into that range")
    return sr


def as_float_audio(x) -> np.ndarray:
    """Audio (n_samples,) or (n_samples, n_channels) as float32, full scale 1.0.

    int8/int16/int32 are divided by 2^(bits-1), uint8 is offset binary ((x - 128) / 128,
    as in 8-bit WAV). Float input is kept as it is (values beyond +-1 are legal in float
    audio). int64 and the wider unsigned types are refused: no sample format stores them,
    so their full scale is a guess (16-bit values widened to int64 and divided by 2^63
    would come out as silence).
    """
    a = np.asarray(x)
    if a.dtype == object or a.dtype.kind not in "iuf":
        raise ValueError(f"audio must be numbers, got dtype {a.dtype}; pass {AUDIO_DTYPES}")
    if a.ndim not in (1, 2):
        raise ValueError(f"audio must have shape (n_samples,) or (n_samples, n_channels), got {a.shape}")
    if a.shape[0] == 0 or (a.ndim == 2 and a.shape[1] == 0):
        raise ValueError(f"got empty audio of shape {a.shape}; pass at least one sample")
    if a.ndim == 2 and a.shape[1] > a.shape[0]:
        raise ValueError(f"audio of shape {a.shape} has more channels than samples: it is probably "
                         "(n_channels, n_samples); pass its transpose (x.T). If it really is "
                         f"{a.shape[0]} sample(s) of {a.shape[1]} channels, pass one channel at a time (x[:, c])")
    if a.dtype == np.uint8:
        return ((a.astype(np.float32) - 128.0) / 128.0).astype(np.float32)
    if a.dtype.kind == "u":
        raise ValueError(f"unsigned audio of dtype {a.dtype} is not a known sample format; pass {AUDIO_DTYPES}: "
                         "e.g. x.astype(np.float32) / 32768 - 1 for 16-bit offset-binary samples")
    if a.dtype.itemsize > 4 and a.dtype.kind == "i":
        raise ValueError(f"integer audio of dtype {a.dtype} is ambiguous: no sample format stores it, so its full "
                         f"scale is unknown; pass {AUDIO_DTYPES}. Convert it with the scale it was made with, "
                         "e.g. x.astype(np.float32) / 32768 for 16-bit samples, x.astype(np.int16) if the values "
                         "are 16-bit, or x / 2**31 for 32-bit ones")
    if a.dtype.kind == "i":
        return (a.astype(np.float64) / float(2 ** (8 * a.dtype.itemsize - 1))).astype(np.float32)
    _finite(a, "the audio", ("sample", "channel"))
    return a.astype(np.float32, copy=False)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_settings(cfg, positive_int=(), nonneg_int=(), positive=(), nonneg=(), choices=None,
                   optional=(), counts=()) -> None:
    """Range checks of a settings dataclass, one message per bad field, named as its flag.

    counts : fields that size work (epochs, batch size): whole numbers from 1 to
    :data:`MAX_COUNT`; positive_int : other fields that must be whole numbers >= 1 (sizes, limits);
    nonneg_int : whole numbers >= 0 (seeds); positive / nonneg : finite numbers > 0 / >= 0;
    choices : {field: allowed values}; optional : fields that may also be None.
    Raises ValueError listing every problem.
    """
    problems = []

    def bad(name, value, want):
        problems.append(f"{_flag(name)} must be {want}, got {value!r}")

    def check(name, value, want_int, lower, strict):
        if value is None and name in optional:
            return
        if isinstance(value, (list, tuple)):
            if not value:
                bad(name, value, "a non-empty list")
            for v in value:
                check(name, v, want_int, lower, strict)
            return
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            bad(name, value, "a number")
            return
        if not np.isfinite(value):
            bad(name, value, "a finite number")
            return
        if want_int and int(value) != value:
            bad(name, value, "a whole number")
            return
        if value <= lower if strict else value < lower:
            bad(name, value, f"{'>' if strict else '>='} {lower}" if not want_int or strict is False
                else f">= {lower + 1}")

    for name in counts:
        value, before = getattr(cfg, name), len(problems)
        check(name, value, True, 0, True)
        if len(problems) == before and value is not None and value > MAX_COUNT:
            bad(name, value, f"at most {MAX_COUNT:,} (a larger count is a typo, or work for years)")
    for name in positive_int:
        check(name, getattr(cfg, name), True, 0, True)
    for name in nonneg_int:
        check(name, getattr(cfg, name), True, 0, False)
    for name in positive:
        check(name, getattr(cfg, name), False, 0, True)
    for name in nonneg:
        check(name, getattr(cfg, name), False, 0, False)
    for name, allowed in (choices or {}).items():
        value = getattr(cfg, name)
        if value is None and name in optional:
            continue
        if value not in allowed:
            bad(name, value, "one of " + ", ".join(map(str, allowed)))
    if problems:
        raise ValueError("; ".join(problems))


def check_finite_estimates(model, *arrays) -> None:
    """Refuse non-finite outputs of a model's ``separate``: from checked, finite input they
    can only come from damaged weights (not finite, or far too large)."""
    bad = sum(int(a.size - np.count_nonzero(np.isfinite(a))) for a in arrays)
    if bad:
        raise ValueError(f"{type(model).__name__}.separate produced {bad:,} NaN or infinite values from finite "
                         "input: the model's weights are damaged (not finite, or far too large); reload it from its "
                         "file (npvae.load_model checks every tensor) or train it again")

"""Separation of a song end to end: ``npvae separate`` as it runs, against the same
command with the network's forward pass run by a PyTorch twin of the same weights.

The song is synthetic (a few minutes of 44.1 kHz stereo written as a 16-bit WAV in a
temporary folder): a voice-like harmonic line over noise and a bass, since the timing
does not depend on the music. Both runs call ``npvae separate`` in this process
(argument checks, read, resample, STFT, network, inverse STFT, write) with the same
arguments; the only seam is the network: the command's ``load_separator`` is wrapped
so that the loaded :class:`~npvae.separation.separator.Separator` keeps its STFT settings and
normaliser, and its model is either the npvae network itself (timed) or
:class:`TorchMaskNetwork`, which maps the normalised feature chunk ``(1, 1, F, T)`` to
the masks ``(1, S, F, T)`` with PyTorch. The torch code stays here, in the lab.
"""
from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

TARGET_SECONDS = 3.0      # the target: a 3-minute song in under 3 s on 2 cores


def separate(argv) -> None:
    """``npvae separate ARGV`` in this process, its output silenced; a failure raises."""
    from npvae.cli import main
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["separate", *map(str, argv)])
    if code:
        raise RuntimeError(f"npvae separate {' '.join(map(str, argv))} failed (exit {code})")


def write_song(path: Path, seconds: float = 180.0, sr: int = 44100, channels: int = 2, seed: int = 0) -> Path:
    """A synthetic song (float peak about 0.8) written as a 16-bit WAV at ``path``."""
    import soundfile as sf
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    t = np.arange(n, dtype=np.float64) / sr
    f0 = 220.0 * 2 ** (np.floor(t * 2) % 12 / 12)                # a new note every half second
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voice = sum(np.sin(h * phase) / h for h in range(1, 8)) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t))
    bass = np.sin(2 * np.pi * 55.0 * t)
    out = np.empty((n, channels), np.float32)
    for c in range(channels):
        noise = rng.standard_normal(n) * 0.05
        out[:, c] = 0.25 * voice * (1.0 - 0.3 * c / max(1, channels - 1)) + 0.2 * bass + noise
    sf.write(str(path), out, sr, subtype="PCM_16")
    return path


class TimedNetwork:
    """The npvae network with its forward passes timed (``seconds``); everything else is
    the network's own."""

    def __init__(self, model):
        self.model, self.seconds = model, 0.0

    def __getattr__(self, name):
        return getattr(self.model, name)

    def forward(self, x, sample=None):
        t0 = time.perf_counter()
        y = self.model.forward(x, sample=sample)
        self.seconds += time.perf_counter() - t0
        return y


class TorchMaskNetwork:
    """The network of a Separator in PyTorch: ``forward(x (N, 1, F, T) float32) -> masks
    (N, S, F, T)`` as NumPy, with the attributes :func:`npvae.separation.separator.predict_masks` reads.
    ``model`` is a SpectrogramUNetVAE or a StackedSpectrogramUNetVAE (with any options),
    run in eval mode."""

    def __init__(self, model):
        import torch
        from .torch_pipelines import torch_mask_network
        self._torch = torch
        self.net = torch_mask_network(model).eval()
        self.DOWNSAMPLE, self.n_sources, self.dtype = model.DOWNSAMPLE, model.n_sources, model.dtype
        self.context_frames = model.context_frames
        self.seconds = 0.0

    def eval(self):
        return self

    def forward(self, x, sample=None):
        t0 = time.perf_counter()
        with self._torch.inference_mode():
            masks, _, _ = self.net(self._torch.from_numpy(np.ascontiguousarray(x)))
            y = masks.numpy()
        self.seconds += time.perf_counter() - t0
        return y


def run_separate(song: Path, out: Path, model: str, network: str) -> tuple[float, float]:
    """Run ``npvae separate SONG --out OUT --model MODEL`` once with the npvae or torch
    ``network``; returns (wall seconds of the command, seconds inside the network)."""
    from npvae.cli import separate as command
    real = command.load_separator
    holder = {}

    def load(path):
        sep = real(path)
        net = TimedNetwork(sep.model) if network == "npvae" else TorchMaskNetwork(sep.model)
        holder["net"] = net
        return replace(sep, model=net)

    command.load_separator = load
    try:
        t0 = time.perf_counter()
        separate([song, "--out", out, "--model", model, "--overwrite", "--no-progress"])
        wall = time.perf_counter() - t0
    finally:
        command.load_separator = real
    return wall, holder["net"].seconds


def time_separation(seconds: float = 180.0, model: str = "music-mir1k", repeats: int = 3, with_torch: bool = True,
                    settle_s: float = 0.5, workdir: str | None = None, log=None) -> dict:
    """Separate a synthetic ``seconds``-long 44.1 kHz stereo song ``repeats`` times with
    each network, in turn; returns the row ``{"case": "separation", "npvae_ms", "torch_ms",
    "ratio", ...}`` (medians) with the network's share of each and the 3 s target."""
    from npvae import pretrained
    model_path = str(pretrained.path(model)) if pretrained.is_name(model) else model
    tmp = Path(tempfile.mkdtemp(prefix="npvae-bench-sep-", dir=workdir))
    try:
        song = write_song(tmp / "song.wav", seconds)
        runs = {"npvae": [], "torch": []} if with_torch else {"npvae": []}
        run_separate(song, tmp / "warmup", model_path, "npvae")      # compiles, loads, fills caches
        if with_torch:
            run_separate(song, tmp / "warmup", model_path, "torch")
        for r in range(repeats):
            order = list(runs) if r % 2 == 0 else list(runs)[::-1]
            for k in order:
                time.sleep(settle_s)
                runs[k].append(run_separate(song, tmp / k, model_path, k))
        outputs = sorted(p.name for p in (tmp / "npvae").iterdir())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    row = {"case": "separation", "song_seconds": seconds, "sample_rate": 44100, "channels": 2, "model": model,
           "outputs": outputs, "target_seconds": TARGET_SECONDS}
    for k, times in runs.items():
        wall = np.array([w for w, _ in times]) * 1e3
        net = np.array([s for _, s in times]) * 1e3
        row[k] = {"median_ms": float(np.median(wall)), "min_ms": float(wall.min()), "max_ms": float(wall.max()),
                  "network_ms": float(np.median(net)), "runs": len(times)}
    row["npvae_ms"] = row["npvae"]["median_ms"]
    row["torch_ms"] = row["torch"]["median_ms"] if with_torch else None
    row["ratio"] = row["npvae_ms"] / row["torch_ms"] if with_torch else None
    row["meets_target"] = row["npvae_ms"] / 1e3 < TARGET_SECONDS
    if log:
        log(f"  separation ({seconds:.0f} s song): npvae {row['npvae_ms']:.0f} ms"
            + (f", torch {row['torch_ms']:.0f} ms" if with_torch else ""))
    return row

#!/usr/bin/env python
"""Peak memory of ``npvae separate`` against the length of the song.

    python scripts/bench_separate_memory.py --model RUN_DIR --minutes 1 10 60

For each length it writes a synthetic 44.1 kHz stereo 16-bit WAV (block by block,
into --work, default a temporary folder), separates it with npvae separate in a child
process and prints the child's peak resident memory (ru_maxrss from wait4) and wall
time. The WAVs are deleted afterwards unless --keep.
"""
import argparse
import os
import resource  # noqa: F401  (wait4's rusage)
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
SR = 44100


def write_song(path: Path, minutes: float, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    n = int(minutes * 60 * SR)
    t0 = 0
    with sf.SoundFile(str(path), "w", SR, 2, subtype="PCM_16") as f:
        while t0 < n:
            m = min(n - t0, 10 * SR)
            t = (t0 + np.arange(m)) / SR
            tone = 0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 0.5 * t) > 0)
            x = tone[:, None] + 0.05 * rng.standard_normal((m, 2))
            f.write(x.astype(np.float32))
            t0 += m


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="music-mir1k", help="music model: run directory, model.h5 or shipped name")
    p.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 60])
    p.add_argument("--work", default=None, help="folder for the test songs and outputs")
    p.add_argument("--keep", action="store_true")
    p.add_argument("extra", nargs="*", help="more npvae separate options after --")
    a = p.parse_args(argv)
    work = Path(a.work or tempfile.mkdtemp(prefix="npvae-membench-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    print(f"{'minutes':>8s} {'peak RSS (MB)':>14s} {'wall (s)':>9s}  exit")
    try:
        for minutes in a.minutes:
            song = work / f"song_{minutes:g}min.wav"
            write_song(song, minutes)
            out = work / f"sep_{minutes:g}"
            cmd = [sys.executable, "-m", "npvae", "separate", str(song), "--model", a.model,
                   "--out", str(out), "--overwrite", "--no-progress", *a.extra]
            t = time.perf_counter()
            child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
            _, status, usage = os.wait4(child.pid, 0)
            wall = time.perf_counter() - t
            code = os.waitstatus_to_exitcode(status)
            print(f"{minutes:8g} {usage.ru_maxrss / 1024:14.0f} {wall:9.1f}  {code}", flush=True)
            if not a.keep:
                song.unlink()
                shutil.rmtree(out, ignore_errors=True)
    finally:
        if not a.keep and not a.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

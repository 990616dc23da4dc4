#!/usr/bin/env python
"""Screenshots of npvae's pages for the docs, made in headless Chromium:

    python scripts/page_screenshots.py                      # into docs/images/
    python scripts/page_screenshots.py --out shots --no-tensorboard

1. trains a small Part II run on MIR-1K with ``--tensorboard`` (the page of a run,
   ``run_page.png``; about a minute on two cores);
2. separates a mono mixture of a MIR-1K validation clip with the shipped music model and
   ``--html`` (the page of a separation, ``separation_page.png``);
3. unless ``--no-tensorboard``, serves the run with ``tensorboard --logdir`` on the
   loopback interface and takes its scalars, audio and hyper-parameter dashboards
   (``tensorboard_scalars.png``, ``tensorboard_audio.png``, ``tensorboard_hparams.png``).

Needs the data (``$NPVAE_DATA`` or ``--data-dir``), Chromium (``NPVAE_CHROMIUM`` or on
``PATH``) and, for step 3, ``pip install "npvae[tensorboard]"``. The work folder
(``--work``, else a temporary one) keeps the run and the separation.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import soundfile as sf

import npvae
from npvae.audio.datasets import load_tracks
from npvae.separation.audio_files import separate_files
from npvae.watch.browser import Chromium

REPO = Path(__file__).resolve().parents[1]
RUN_SETTINGS = dict(dataset="mir1k", channels=(8, 16, 32), latent_channels=8, batch_size=8, frames=64,
                    train_limit=24, eval_limit=2, epochs=4, display_every=2, snippet_seconds=4.0, seed=0,
                    progress=False, tensorboard=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_tensorboard(folder: Path, port: int) -> subprocess.Popen:
    """``tensorboard --logdir runs`` in ``folder`` on 127.0.0.1:``port``, once it answers."""
    proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", "runs", "--host",
                             "127.0.0.1", "--port", str(port), "--load_fast", "false"], cwd=folder,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(120):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=2).read()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("tensorboard did not start: is the tensorboard extra installed?")
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("tensorboard did not answer within a minute")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(REPO / "docs" / "images"), help="folder of the screenshots")
    p.add_argument("--work", default=None, help="folder of the run and separation (default: a temporary one)")
    p.add_argument("--data-dir", default=None, help="data root holding MIR-1K/ (else $NPVAE_DATA)")
    p.add_argument("--no-tensorboard", action="store_true", help="leave out TensorBoard's screenshots")
    a = p.parse_args(argv)
    out = Path(a.out)
    work_dir = tempfile.TemporaryDirectory(prefix="npvae-pages-") if a.work is None else None
    work = Path(a.work or work_dir.name)
    run_dir, separated = work / "runs" / "music-small", work / "separated"
    print(f"training {run_dir} ...", flush=True)
    npvae.train("music", {**RUN_SETTINGS, "data_dir": a.data_dir, "out": str(run_dir),
                          "tensorboard": not a.no_tensorboard}, overwrite=True, log=lambda text: None)
    track = load_tracks("mir1k", "validation", a.data_dir)[0]
    song = work / "songs" / f"{track.name}.wav"
    song.parent.mkdir(parents=True, exist_ok=True)
    sf.write(song, 0.5 * track.mixture(), track.sr, subtype="PCM_16")
    print(f"separating {song} ...", flush=True)
    separate_files([song], separated, overwrite=True, html=True, log=lambda text: None)
    with Chromium() as browser:
        for page, name in ((run_dir / "index.html", "run_page.png"), (separated / "index.html",
                                                                     "separation_page.png")):
            report = browser.load(page)
            if report.errors:
                raise RuntimeError(f"{page} has errors in the browser: {report.errors}")
            print(browser.screenshot(page, out / name, width=1000))
        if not a.no_tensorboard:
            port = free_port()
            server = serve_tensorboard(work, port)
            try:
                scalars = "scalars&_smoothingWeight=0&tagFilter=%5E(train%7Cvalidation)%2F"
                for view, name in ((scalars, "tensorboard_scalars.png"), ("audio", "tensorboard_audio.png"),
                                   ("hparams", "tensorboard_hparams.png")):
                    print(browser.screenshot(f"http://127.0.0.1:{port}/#{view}", out / name, width=1200,
                                             height=800, settle=8.0))
            finally:
                server.terminate()
                server.wait(timeout=30)
    if work_dir is not None:
        work_dir.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

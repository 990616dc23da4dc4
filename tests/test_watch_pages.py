"""The pages: a training run's index.html and ``npvae separate --html``'s, read as HTML
(their numbers are history.json's, every file they name exists, nothing comes from
elsewhere) and loaded in headless Chromium (no console error, every sound reports its
file's length, every image loads)."""
import json
import math
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
import soundfile as sf

import npvae
from npvae.audio.datasets import load_tracks
from npvae.watch import html
from npvae.watch.browser import Chromium, find_chromium
from npvae.watch.separation_page import spectrogram

pytestmark = pytest.mark.slow     # an end-to-end file (CI runs it on the default backend only)


def quiet(*args):
    pass


class Page(HTMLParser):
    """A page's tables (rows of cell texts), and the files its img and audio elements name."""

    def __init__(self, path):
        super().__init__()
        self.path = Path(path)
        self.tables, self.sources, self.scripts, self._cell = [], [], 0, None
        self.feed(self.path.read_text())

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag in ("img", "audio"):
            self.sources.append((tag, attrs["src"]))
        elif tag in ("script", "link", "iframe", "object", "embed"):
            self.scripts += 1

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(self._cell)
            self._cell = None

    def table(self, first_header: str) -> list[list[str]]:
        return next(t for t in self.tables if t and t[0][0] == first_header)

    def files(self, tag: str) -> list[Path]:
        return [(self.path.parent / unquote(src)).resolve() for t, src in self.sources if t == tag]


def check_page_files(page: Page):
    assert page.scripts == 0
    for tag, src in page.sources:
        assert not urlparse(src).scheme and not src.startswith("/"), src      # relative: opens from disk
    for path in page.files("img") + page.files("audio"):
        assert path.is_file(), path


@pytest.fixture(scope="module")
def music_run(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("pages") / "music run"          # a space: links are URL-quoted
    return npvae.train("music", dict(dataset="mir1k", channels=(4, 4, 8), latent_channels=4, batch_size=4,
                                     frames=32, train_limit=2, eval_limit=1, epochs=2, display_every=1,
                                     snippet_seconds=1.5, data_dir=str(shared_data), out=str(out),
                                     progress=False), log=quiet)


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("pages") / "mnist"
    return npvae.train("mnist", dict(hidden=(32, 16), latent_dim=4, epochs=2, batch_size=64, train_limit=256,
                                     eval_limit=64, display_every=1, data_dir=str(shared_data), out=str(out),
                                     progress=False, n_examples=4), log=quiet)


@pytest.fixture(scope="module")
def separated(music_run, tmp_path_factory, shared_data):
    """``npvae separate --html`` of a mono song file and of the same song through a pipe."""
    folder = tmp_path_factory.mktemp("songs")
    track = load_tracks("mir1k", "validation", shared_data)[0]
    song = folder / "a song.wav"
    sf.write(song, 0.5 * track.mixture()[:3 * track.sr], track.sr, subtype="PCM_16")
    out = tmp_path_factory.mktemp("separated")
    cmd = [sys.executable, "-m", "npvae", "separate", str(song), "--model", str(music_run.run_dir), "--out",
           str(out), "--html", "--no-progress"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    piped = tmp_path_factory.mktemp("piped")
    with open(song, "rb") as f:
        r = subprocess.run([sys.executable, "-m", "npvae", "separate", "-", "--model", str(music_run.run_dir),
                            "--out", str(piped), "--html", "--no-progress"], stdin=f, capture_output=True,
                           text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return song, out, piped, cmd


# ----------------------------------------------------------------------------- the pages as files

def test_the_run_page_carries_the_history_and_the_latest_figures(mnist_run):
    run = mnist_run.run_dir
    page = Page(run / "index.html")
    check_page_files(page)
    history = json.loads((run / "history.json").read_text())
    rows = page.table("epoch")
    keys = rows[0][1:]
    assert set(keys) == set(history) - {"epoch"}
    assert [int(r[0]) for r in rows[1:]] == history["epoch"]
    for i, row in enumerate(rows[1:]):
        for key, text in zip(keys, row[1:]):
            assert float(text) == pytest.approx(history[key][i], rel=5e-6, abs=1e-300), (key, i)
    metrics = json.loads((run / "metrics.json").read_text())
    scores = {k: v for k, v in page.table("score")[1:]}
    assert float(scores["mean_psnr"]) == pytest.approx(metrics["mean_psnr"], rel=5e-6)
    assert run / "loss_curves.png" in page.files("img") and run / "figures" / "epoch_002.png" in page.files("img")
    assert "finished: epoch 2 of 2" in (run / "index.html").read_text()


def test_a_music_run_page_has_a_player_per_example(music_run):
    run = music_run.run_dir
    page = Page(run / "index.html")
    check_page_files(page)
    sounds = {p.stem: p for p in page.files("audio")}
    assert set(sounds) == {"mixture", "true_vocals", "true_accompaniment", "estimated_vocals",
                           "estimated_accompaniment"}
    sr = music_run.task.stft_cfg.sample_rate
    track = music_run.task.shown
    for name, path in sounds.items():
        info = sf.info(str(path))
        assert (info.samplerate, info.frames, info.subtype) == (sr, int(1.5 * sr), "PCM_16"), name
    mixture, _ = sf.read(str(sounds["mixture"]), dtype="float32")
    np.testing.assert_allclose(mixture, np.clip(track.mixture()[:int(1.5 * sr)], -1, 1), atol=1 / 32767)


def test_the_page_is_rewritten_at_every_display(tmp_path, shared_data, monkeypatch):
    """After the first of two epochs (display every epoch) the page shows epoch 1, training."""
    seen = []
    from npvae.engine import run as engine_run
    original = engine_run.write_run_page

    def spy(run_dir, config, history, shown=None, metrics=None):
        path = original(run_dir, config, history, shown, metrics)
        seen.append((history["epoch"][-1], metrics is None, "training: epoch" in path.read_text()))
        return path
    monkeypatch.setattr(engine_run, "write_run_page", spy)
    npvae.train("mnist", dict(hidden=(16,), latent_dim=2, epochs=2, batch_size=64, train_limit=128,
                              eval_limit=32, display_every=1, data_dir=str(shared_data),
                              out=str(tmp_path / "r"), progress=False, n_examples=2), log=quiet)
    npvae.train("mnist", dict(hidden=(16,), latent_dim=2, epochs=1, batch_size=64, train_limit=128,
                              eval_limit=32, data_dir=str(shared_data), out=str(tmp_path / "off"),
                              progress=False, n_examples=2, html=False), log=quiet)
    assert seen == [(1, True, True), (2, True, True), (2, False, False)]
    assert not (tmp_path / "off" / "index.html").exists()


def test_the_separation_page_has_a_player_and_spectrogram_per_sound(separated):
    song, out, piped, _ = separated
    page = Page(out / "index.html")
    check_page_files(page)
    assert page.files("audio") == [song.resolve(), (out / "a song_vocals.wav").resolve(),
                                   (out / "a song_accompaniment.wav").resolve()]
    assert [p.name for p in page.files("img")] == ["a song_input.png", "a song_vocals.png",
                                                   "a song_accompaniment.png"]
    # a pipe has no file to link: the page plays a copy of what was read
    page = Page(piped / "index.html")
    check_page_files(page)
    copy = page.files("audio")[0]
    assert copy.parent == (piped / "page").resolve()
    np.testing.assert_allclose(sf.read(str(copy))[0], sf.read(str(song))[0], atol=1e-6)


def test_an_existing_page_is_replaced_only_with_overwrite(separated):
    _, out, _, cmd = separated
    before = (out / "index.html").read_bytes()
    stamp = (out / "a song_vocals.wav").stat().st_mtime_ns
    r = subprocess.run([c for c in cmd], capture_output=True, text=True, timeout=600)
    assert r.returncode == 1 and "--overwrite" in r.stderr and "Traceback" not in r.stderr
    assert (out / "index.html").read_bytes() == before and (out / "a song_vocals.wav").stat().st_mtime_ns == stamp
    only_page = out / "elsewhere"
    only_page.mkdir()
    (only_page / "index.html").write_text("mine")
    r = subprocess.run(cmd[:cmd.index("--out") + 1] + [str(only_page), "--html", "--no-progress"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 1 and "index.html exists" in r.stderr
    assert (only_page / "index.html").read_text() == "mine" and not list(only_page.glob("*.wav"))


def test_the_spectrogram_finds_a_tone_and_spreads_a_long_sound(tmp_path):
    sr, f0 = 16000, 1000.0
    t = np.arange(int(2.5 * sr)) / sr
    sf.write(tmp_path / "tone.wav", np.stack([np.sin(2 * np.pi * f0 * t)] * 2, axis=1) * 0.5, sr)
    with sf.SoundFile(str(tmp_path / "tone.wav")) as sound:
        mag = spectrogram(sound, n_fft=1024)
    assert mag.shape == (513, (len(t) - 1024) // 256 + 1)
    assert np.all(np.argmax(mag, axis=0) == round(f0 * 1024 / sr))
    with sf.SoundFile(str(tmp_path / "tone.wav")) as sound:
        assert spectrogram(sound, n_fft=1024, max_columns=20).shape[1] <= 20


def test_links_are_relative_and_quoted(tmp_path):
    (tmp_path / "a b" / "c#d").mkdir(parents=True)
    assert html.link(tmp_path / "a b" / "c#d" / "x.wav", tmp_path / "a b") == "c%23d/x.wav"
    assert html.link(tmp_path / "y.png", tmp_path / "a b") == "../y.png"
    assert "&lt;b&gt;" in html.document("<b>", [])


# ----------------------------------------------------------------------------- in a browser

@pytest.fixture(scope="module")
def browser():
    if find_chromium() is None:
        pytest.skip("no Chromium found (install Debian's chromium, or set NPVAE_CHROMIUM): the pages are not "
                    "checked in a browser")
    with Chromium() as chromium:
        yield chromium


def check_in_browser(browser, page_path):
    report = browser.load(page_path)
    assert report.errors == []
    assert all(urlparse(url).scheme in ("file", "data") for url in report.requests), report.requests
    page = Page(page_path)
    assert len(report.audio) == len(page.files("audio")) and len(report.images) == len(page.files("img"))
    for seen in report.audio:
        path = Path(unquote(urlparse(seen["src"]).path))
        assert seen["error"] == 0 and seen["duration"] is not None, seen
        assert math.isclose(seen["duration"], sf.info(str(path)).duration, abs_tol=1e-3), (path, seen)
    from matplotlib.image import imread
    for seen in report.images:
        path = Path(unquote(urlparse(seen["src"]).path))
        assert seen["complete"] and (seen["height"], seen["width"]) == imread(str(path)).shape[:2], seen
    return report


def test_the_run_pages_load_in_a_browser(browser, mnist_run, music_run):
    assert len(check_in_browser(browser, mnist_run.run_dir / "index.html").images) == 2
    assert len(check_in_browser(browser, music_run.run_dir / "index.html").audio) == 5


def test_the_separation_pages_load_in_a_browser(browser, separated):
    _, out, piped, _ = separated
    assert len(check_in_browser(browser, out / "index.html").audio) == 3
    assert len(check_in_browser(browser, piped / "index.html").audio) == 3


def test_the_browser_check_sees_a_broken_page(browser, tmp_path):
    """The check can fail: a missing image, a sound of another length and a script error."""
    sf.write(tmp_path / "one.wav", np.zeros(8000, np.float32), 8000)
    (tmp_path / "bad.html").write_text('<!DOCTYPE html><html><body><img src="gone.png">'
                                       '<audio preload="metadata" src="one.wav"></audio>'
                                       '<script>undefinedFunction()</script></body></html>')
    report = browser.load(tmp_path / "bad.html")
    assert any("gone.png" in e for e in report.errors)
    assert any("undefinedFunction" in e for e in report.errors)
    assert report.audio[0]["duration"] == pytest.approx(1.0) and report.images[0]["width"] == 0

"""The report typeset: its PDF (ReportLab: tables that wrap inside the margins, no
character under 7 pt, the headings as bookmarks), its HTML page (figures and audio
players from disk), the audio of the Part II examples, and ``npvae report
--from-markdown``, which typesets a report again from its report.md alone."""
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from _typeset import check_html, check_typeset, outline, outside_margins

from npvae.audio.io import write_audio
from npvae.lab.document import Doc

REPO = Path(__file__).resolve().parents[1]
KEPT_REPORTS = [REPO / "results" / "report", REPO / "results" / "blind_report"]


def _figure(path: Path, shape=(120, 300)) -> Path:
    from matplotlib.image import imsave
    path.parent.mkdir(parents=True, exist_ok=True)
    imsave(path, np.random.default_rng(0).random(shape), cmap="gray")
    return path


def _clips(folder: Path) -> list:
    t = np.arange(1600) / 16000
    return [(label, write_audio(folder / f"{name}.wav", 0.3 * np.sin(2 * np.pi * f * t), 16000))
            for name, label, f in (("mixture", "mixture", 220), ("vocals_hat", "separated vocals", 440))]


def _wide_doc(base: Path) -> Doc:
    """A document with what broke the old typesetting: a table of many columns and long
    cells (one an unbreakable word), a table running over pages, a long heading."""
    doc = Doc()
    doc.h1("A report with a title long enough to wrap over two lines of the page's width, and more")
    doc.p("A paragraph with **bold words** and `npvae report --from-markdown` in it, & < > kept as text.")
    doc.h2("Loss study, Part II (music): a section whose heading is long enough to wrap onto a second line")
    header = ["configuration", "group"] + [f"column {i} with a long header (dB)" for i in range(12)]
    rows = [["--preset best (--channels 24 48 96 128 128, --remix cross, --logit-penalty 0.001)", "recipe"]
            + [f"{i * 1.37:.2f}" for i in range(12)],
            ["x" * 90, "ablation"] + [f"-{i * 0.5:.3f} / {i:.1f}" for i in range(12)]]
    doc.table(header, rows)
    doc.image(_figure(base / "figures" / "wide.png"), "a figure wider than the page")
    doc.image(_figure(base / "figures" / "tall.png", (900, 200)), "a figure taller than half the page")
    doc.h2("Shipped models")
    doc.table(["name", "made by", "score"],
              [[f"model-{i}", f"`python scripts/train_mnist.py --beta 0.1 --epochs {i}` (commit 4cd283c, seed {i})",
                f"mean PSNR {20 + i / 7:.2f} dB"] for i in range(70)])
    doc.audio(_clips(base / "audio"), "music-run: the clip of the spectrograms above")
    return doc


def test_pdf_tables_wrap_inside_the_margins_in_a_readable_font(tmp_path):
    doc = _wide_doc(tmp_path)
    pdf = doc.pdf(tmp_path / "report.pdf", tmp_path)
    text = check_typeset(pdf, doc)
    assert "npvae report --from-markdown" in text and "& < > kept as text" in text
    assert len(outline(pdf)) == 3 and outline(pdf)[1][0] == 1
    # the long table ran over pages, its header repeated on each
    assert text.count("made by") >= 2


def test_the_pdf_check_sees_what_the_old_typesetting_did(tmp_path):
    """The checks fail on a page with text past the margin or under 7 pt."""
    from reportlab.pdfgen.canvas import Canvas
    c = Canvas(str(tmp_path / "bad.pdf"))
    c.setFont("Helvetica", 5)
    c.drawString(20, 400, "a five-point table that starts left of the margin")
    c.save()
    outside, small = outside_margins(tmp_path / "bad.pdf")
    assert outside and small == [5.0] * len("a five-point table that starts left of the margin")


def _on_white(path: Path) -> np.ndarray:
    """The PNG file's pixels as RGB, laid on a white page."""
    from PIL import Image
    with Image.open(path) as im:
        rgba = im.convert("RGBA")
    page = Image.new("RGB", rgba.size, "white")
    page.paste(rgba, mask=rgba.getchannel("A"))
    return np.asarray(page)


def _line_plot(path: Path) -> Path:
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 2.5), dpi=100)
    x = np.linspace(0, 10, 200)
    ax.plot(x, np.sin(x), label="training")
    ax.plot(x, np.cos(x), label="validation")
    ax.legend()
    ax.set_xlabel("epoch")
    fig.savefig(path)
    plt.close(fig)
    return path


def _shades(path: Path) -> Path:
    """A grey figure of smooth shades (ReportLab alone stores it in nearly twice its PNG's bytes)."""
    from matplotlib.image import imsave
    y, x = np.mgrid[0:200, 0:300]
    imsave(path, np.sin(x / 17) * np.cos(y / 23), cmap="gray")
    return path


def _few_colours(path: Path) -> Path:
    """A figure of four colours, one of them half transparent."""
    from PIL import Image
    pixels = np.zeros((90, 130, 4), np.uint8)
    pixels[:] = (255, 255, 255, 255)
    pixels[10:40, :, :] = (200, 30, 30, 255)
    pixels[:, 50:60, :] = (20, 20, 200, 255)
    pixels[60:, 80:, :] = (0, 128, 0, 128)
    Image.fromarray(pixels, "RGBA").save(path)
    return path


def pdf_images(path) -> list[np.ndarray]:
    """The images of the PDF ``path`` as RGB arrays (pypdf decodes them)."""
    import pypdf
    return [np.asarray(image.image.convert("RGB")) for page in pypdf.PdfReader(str(path)).pages
            for image in page.images]


def figure_bytes(pdf: Path, doc, folder: Path, base: Path) -> tuple[int, int]:
    """(bytes the figures add to ``pdf``, typeset from ``doc``: its size less that of the
    same document whose figures are blank at the same pixels, written into ``folder``;
    bytes of the distinct figures' PNG files)."""
    from PIL import Image
    blank = {}
    for path in {b[1] for b in doc.blocks if b[0] == "img"}:
        with Image.open(path) as im:
            blank[path] = folder / f"blank-{len(blank)}.png"
            Image.new("L", im.size, 255).save(blank[path])
    bare = Doc()
    bare.blocks = [("img", blank[b[1]], b[2]) if b[0] == "img" else b for b in doc.blocks]
    bare_size = bare.pdf(folder / "blank.pdf", base).stat().st_size
    return pdf.stat().st_size - bare_size, sum(p.stat().st_size for p in blank)


# what a figure costs beyond its PNG bytes: its image dictionary, a blank figure's pixels
PER_FIGURE = 2000


def _many_colours(path: Path) -> Path:
    """A figure of 4,096 colours spread evenly over the RGB cube: no 256 of them come close."""
    from PIL import Image
    i = np.arange(64 * 64)
    pixels = np.stack([(i % 16) * 17, (i // 16 % 16) * 17, (i // 256) * 17], axis=1).astype(np.uint8)
    Image.fromarray(pixels.reshape(64, 64, 3)).save(path)
    return path


def test_pdf_embeds_each_figure_at_its_pixels_in_about_its_png_bytes(tmp_path):
    """A figure is stored at its own pixels, losslessly (grey, indexed when it has few
    colours, RGB when it has many spread colours) in about the bytes of its PNG file; drawn
    twice, it is stored once."""
    from npvae.lab.doc_pdf import png_image
    figures = [_shades(tmp_path / "grey.png"), _many_colours(tmp_path / "many.png"), _few_colours(tmp_path / "few.png")]
    kinds = [(png_image(f)["colors"], png_image(f)["palette"] is not None) for f in figures]
    assert kinds == [(1, False), (3, False), (1, True)]
    doc = Doc()
    doc.h1("Figures")
    for f in figures:
        doc.image(f, f"the figure {f.name}")
    doc.image(figures[1], "the figure again")
    pdf = doc.pdf(tmp_path / "report.pdf", tmp_path)
    check_typeset(pdf, doc)
    embedded = pdf_images(pdf)
    for f in figures:
        assert any(np.array_equal(pixels, _on_white(f)) for pixels in embedded), f"{f.name} not found at its pixels"
    assert len(re.findall(rb"/Subtype\s*/Image", pdf.read_bytes())) == 3      # stored once
    added, png = figure_bytes(pdf, doc, tmp_path, tmp_path)
    assert added <= png + PER_FIGURE * len(figures), (added, png)


def test_pdf_stores_a_line_plot_in_its_closest_256_colours_in_under_half_its_png_bytes(tmp_path):
    """A line plot (a thousand-odd colours, most of them antialiasing) is stored indexed in
    256 colours within QUANTISE_MIN_PSNR of its pixels, and in under half its PNG's bytes."""
    from PIL import Image
    from npvae.lab.doc_pdf import QUANTISE_MIN_PSNR, png_image
    plot = _line_plot(tmp_path / "plot.png")
    with Image.open(plot) as im:
        assert im.convert("RGB").getcolors(256) is None, "the plot has too few colours to test"
    stored = png_image(plot)
    assert (stored["colors"], stored["palette"] is not None) == (1, True)
    doc = Doc()
    doc.h1("Figures")
    doc.image(plot, "a line plot")
    pdf = doc.pdf(tmp_path / "report.pdf", tmp_path)
    check_typeset(pdf, doc)
    (pixels,) = pdf_images(pdf)
    assert QUANTISE_MIN_PSNR <= psnr(_on_white(plot), pixels) < float("inf")
    added, png = figure_bytes(pdf, doc, tmp_path, tmp_path)
    assert added < png / 2, (added, png)


def _noisy_spectrograms(path: Path) -> Path:
    """A Part II example figure (:func:`npvae.plotting.plot_example`) of noise: as many
    colours as a real one's."""
    from npvae.audio.stft import STFTConfig
    from npvae.plotting import plot_example
    cfg = STFTConfig.for_dataset("mir1k")
    rng = np.random.default_rng(3)
    bins = cfg.n_fft // 2 + 1
    fall = np.exp(-np.arange(bins) / 60)[:, None]          # louder low bins, as in music
    ex = {f"{key}_mag": rng.rayleigh(1.0, (bins, 200)) * fall
          for key in ("mixture", "vocals", "vocals_hat", "accompaniment", "accompaniment_hat")}
    return plot_example(ex, path, cfg, "noise")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio (dB) of 8-bit pixels ``b`` against ``a``."""
    return float(10 * np.log10(255 ** 2 / np.mean((a.astype(float) - b.astype(float)) ** 2)))


def test_pdf_stores_a_many_coloured_figure_as_jpeg_in_under_half_its_png_bytes(tmp_path):
    """Spectrograms (photographic colour) are stored as JPEG at their pixels, close to them
    and in under half the PNG's bytes; a line plot beside them is not JPEG."""
    from npvae.lab.doc_pdf import JPEG_MIN_COLOURS, QUANTISE_MIN_PSNR
    from PIL import Image
    noisy, plot = _noisy_spectrograms(tmp_path / "noisy.png"), _line_plot(tmp_path / "plot.png")
    with Image.open(noisy) as im:
        assert im.convert("RGB").getcolors(JPEG_MIN_COLOURS) is None, "the figure has too few colours to test"
    doc = Doc()
    doc.h1("Figures")
    doc.image(noisy, "spectrograms of noise")
    doc.image(plot, "a line plot")
    pdf = doc.pdf(tmp_path / "report.pdf", tmp_path)
    check_typeset(pdf, doc)
    assert len(re.findall(rb"/Filter\s*/DCTDecode", pdf.read_bytes())) == 1
    embedded, original = pdf_images(pdf), _on_white(noisy)
    assert any(pixels.shape == _on_white(plot).shape and psnr(_on_white(plot), pixels) >= QUANTISE_MIN_PSNR
               for pixels in embedded), "the line plot is not close"
    stored = [pixels for pixels in embedded if pixels.shape == original.shape]
    assert len(stored) == 1 and psnr(original, stored[0]) > 33
    noisy_only = Doc()
    noisy_only.blocks = doc.blocks[:2]
    pdf = noisy_only.pdf(tmp_path / "noisy.pdf", tmp_path)
    added, png = figure_bytes(pdf, noisy_only, tmp_path, tmp_path)
    assert added < png / 2, (added, png)


def test_a_figure_of_jpeg_min_colours_stays_lossless_and_one_more_goes_jpeg(tmp_path):
    from PIL import Image
    from npvae.lab.doc_pdf import JPEG_MIN_COLOURS, png_image
    i = np.arange(64 * 160)
    pixels = np.stack([i % 256, (i // 256) * 5, np.zeros_like(i)], axis=1)     # every colour distinct
    pixels[JPEG_MIN_COLOURS:] = pixels[0]
    Image.fromarray(pixels.reshape(64, 160, 3).astype(np.uint8)).save(tmp_path / "at.png")
    pixels[-1] = (1, 2, 3)                                                     # one colour more
    Image.fromarray(pixels.reshape(64, 160, 3).astype(np.uint8)).save(tmp_path / "over.png")
    assert [png_image(tmp_path / f)["filter"] for f in ("at.png", "over.png")] == ["FlateDecode", "DCTDecode"]
    doc = Doc()
    doc.h1("Figures")
    doc.image(tmp_path / "at.png", "as many colours as a flat figure may have")
    pdf = doc.pdf(tmp_path / "report.pdf", tmp_path)
    assert np.array_equal(pdf_images(pdf)[0], _on_white(tmp_path / "at.png"))


def test_html_page_plays_the_audio_and_shows_the_figures_from_disk(tmp_path):
    doc = _wide_doc(tmp_path)
    page = check_html(doc.html(tmp_path / "report.html", tmp_path), doc)
    assert sum(tag == "audio" for tag, _ in page.tags) == 2
    assert "&lt; &gt; kept as text" in (tmp_path / "report.html").read_text()


def test_markdown_carries_the_audio_clips(tmp_path):
    doc = _wide_doc(tmp_path)
    text = doc.markdown(tmp_path)
    assert "Listen: [mixture](audio/mixture.wav), [separated vocals](audio/vocals_hat.wav)" in text
    assert Doc.from_markdown(text, tmp_path).blocks == doc.blocks
    with pytest.raises(ValueError, match="audio clips not written by Doc.markdown"):
        Doc.from_markdown("Listen: [a](a.wav) and more\n\n*caption*\n", tmp_path)
    with pytest.raises(ValueError, match="may not hold brackets"):
        Doc().audio([("a [b]", tmp_path / "a.wav")], "c")


def test_example_audio_writes_the_clips_at_one_gain(tmp_path):
    from npvae.lab.report import AUDIO_CLIPS, example_audio
    rng = np.random.default_rng(1)
    ex = {key: rng.uniform(-0.5, 0.5, 800).astype(np.float32) for key, _ in AUDIO_CLIPS}
    ex["mixture"] = ex["mixture"] * 3                      # peak 1.5: all scaled alike
    clips, gain = example_audio(ex, tmp_path / "audio", "run", 16000)
    peak = float(np.max(np.abs(ex["mixture"])))
    assert gain == pytest.approx(0.99 / peak)
    assert [label for label, _ in clips] == [label for _, label in AUDIO_CLIPS]
    for (key, _), (_, path) in zip(AUDIO_CLIPS, clips):
        x, sr = sf.read(path)
        assert sr == 16000 and sf.info(path).subtype == "PCM_16"
        np.testing.assert_allclose(x, ex[key] * gain, atol=1 / 32767)
    quiet = {key: v / 10 for key, v in ex.items()}
    assert example_audio(quiet, tmp_path / "audio", "quiet", 16000)[1] == 1.0
    # an example of magnitudes alone (a blind run's) has nothing to play
    assert example_audio({"mixture_mag": np.ones((5, 3))}, tmp_path / "audio", "mag", 16000) == ([], 1.0)


def test_part_ii_section_has_players_for_the_evaluations_example(tmp_path):
    from npvae.audio.datasets import Track
    from npvae.audio.stft import STFTConfig
    from npvae.models.music import SpectrogramUNetVAE
    from npvae.tasks.music import example
    from npvae.separation.separator import Normalizer, Separator
    from npvae.lab.report import _music_section
    # an evaluation's example as npvae evaluate stores it, from an untrained separator
    cfg = STFTConfig.for_dataset("mir1k")
    rng = np.random.default_rng(2)
    t = np.arange(8000) / cfg.sample_rate
    track = Track("clip", 0.3 * np.sin(2 * np.pi * 440 * t), 0.1 * rng.standard_normal(t.size), cfg.sample_rate)
    sep = Separator(SpectrogramUNetVAE((4, 4, 8), 4, rng=rng), cfg, Normalizer.fit([track], cfg))
    ex = example(sep, track, 0.5)
    scores = {f"{s}_{src}_{m}": 1.0 for s in ("model", "oracle", "mixture") for src in ("vocals", "accompaniment")
              for m in ("gnsdr", "gsir", "gsar", "mean_si_sdr")}
    run = {"dir": Path("music-run"), "params": 10, "history": {},
           "config": {"epochs": 1, "loss": "l1", "beta": 1.0, "dataset": "mir1k"},
           "evals": [{"path": Path("eval_val.h5"), "examples": {"clip0": ex},
                      "metrics": {**scores, "clip_seconds": [1.0]},
                      "config": {"dataset": "mir1k", "split": "val", "sample_rate": cfg.sample_rate,
                                 "n_fft": cfg.n_fft, "hop": cfg.hop, "window": cfg.window}}]}
    (tmp_path / "figures").mkdir()
    doc = Doc()
    doc.h1("Report")
    _music_section(doc, [run], tmp_path / "figures")
    kinds = [b[0] for b in doc.blocks]
    assert kinds.index("audio") == kinds.index("img") + 1
    clips = doc.blocks[kinds.index("audio")][1]
    assert [p.name for _, p in clips] == ["music-run_mixture.wav", "music-run_vocals_hat.wav", "music-run_vocals.wav",
                                         "music-run_accompaniment_hat.wav", "music-run_accompaniment.wav"]
    np.testing.assert_allclose(sf.read(clips[1][1])[0], ex["vocals_hat"], atol=1 / 32767)
    check_html(doc.html(tmp_path / "report.html", tmp_path), doc)
    # npvae report --no-audio: the same section, its spectrograms but no clips written or linked
    kept = tmp_path / "kept"
    (kept / "figures").mkdir(parents=True)
    doc = Doc()
    doc.h1("Report")
    _music_section(doc, [run], kept / "figures", audio=False)
    kinds = [b[0] for b in doc.blocks]
    assert "img" in kinds and "audio" not in kinds
    assert not (kept / "audio").exists()


def test_report_typeset_again_from_its_markdown(tmp_path, capsys):
    from npvae.cli import main
    doc = _wide_doc(tmp_path)
    (tmp_path / "report.md").write_text(doc.markdown(tmp_path))
    assert main(["report", "--from-markdown", str(tmp_path / "report.md")]) == 0
    again = Doc.from_markdown((tmp_path / "report.md").read_text(), tmp_path)
    check_typeset(tmp_path / "report.pdf", again)
    check_html(tmp_path / "report.html", again)
    first = (tmp_path / "report.pdf").read_bytes()             # no date inside: typeset again, the same bytes
    assert main(["report", "--from-markdown", str(tmp_path / "report.md")]) == 0
    assert (tmp_path / "report.pdf").read_bytes() == first
    (tmp_path / "figures" / "tall.png").unlink()
    assert main(["report", "--from-markdown", str(tmp_path / "report.md")]) == 1
    err = capsys.readouterr().err
    assert "links files that are not there: " in err and "tall.png" in err
    (tmp_path / "notes.md").write_text("| a |\nno rule under the header\n")
    assert main(["report", "--from-markdown", str(tmp_path / "notes.md")]) == 1
    assert "is not a report that npvae report wrote" in capsys.readouterr().err
    assert main(["report", "runs/x", "--from-markdown", str(tmp_path / "report.md")]) == 2
    assert main(["report"]) == 2
    assert "--from-markdown REPORT_MD" in capsys.readouterr().err


@pytest.mark.parametrize("folder", KEPT_REPORTS, ids=lambda p: p.name)
def test_kept_reports_are_typeset_from_their_markdown(folder, tmp_path):
    """results/report and results/blind_report: PDF and HTML typeset from their report.md
    (``npvae report --from-markdown``), every cell in the PDF inside the margins."""
    from npvae.lab.doc_html import render
    doc = Doc.from_markdown((folder / "report.md").read_text(encoding="utf-8"), folder)
    check_typeset(folder / "report.pdf", doc)
    # the repository keeps no file over 2 MB but its shipped models
    assert (folder / "report.pdf").stat().st_size < 2 * 2 ** 20
    added, png = figure_bytes(folder / "report.pdf", doc, tmp_path, folder)
    assert added <= png, f"the figures take {added} bytes of {folder / 'report.pdf'}, their PNG files {png}"
    check_html(folder / "report.html", doc)
    assert (folder / "report.html").read_text(encoding="utf-8") == render(doc, folder)


def test_kept_reports_link_only_files_they_hold(tmp_path):
    """A report copied elsewhere with its folders types again the same (no path outside it)."""
    copy = tmp_path / "report"
    shutil.copytree(KEPT_REPORTS[1], copy)
    from npvae.lab.report import retypeset
    retypeset(copy / "report.md", log=lambda s: None)
    assert (copy / "report.html").read_text() == (KEPT_REPORTS[1] / "report.html").read_text()

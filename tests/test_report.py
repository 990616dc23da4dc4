"""``npvae report`` end to end: tiny studies of both tasks (``npvae study``) and a tiny
Part I run become report.md and a multi-page report.pdf whose numbers are the results
files' numbers."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import npvae
from npvae.lab.study_table import COLUMNS, read_study

pytestmark = pytest.mark.slow     # an end-to-end file (CI runs it on the default backend only)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, shared_data, cwd=REPO):
    # the lab is found in the checkout the command runs in, or on PYTHONPATH
    env = {**os.environ, "NPVAE_DATA": str(shared_data), "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join(filter(None, [os.path.join(REPO, "scripts"), os.environ.get("PYTHONPATH")]))}
    r = subprocess.run([sys.executable, "-m", "npvae", *args], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_report_from_tiny_runs(shared_data, tmp_path):
    mnist, music = tmp_path / "study-mnist", tmp_path / "study-music"
    _run(["study", "--task", "mnist", "--budget", "tiny", "--out", str(mnist), "--only", "bce_beta1", "l1_beta1",
          "bce_beta0", "nmf"], shared_data)
    _run(["study", "--task", "music", "--budget", "tiny", "--out", str(music), "--only", "l1_raw", "is", "nmf"],
         shared_data)
    run = tmp_path / "mnist-run"
    npvae.train("mnist", {"data_dir": str(shared_data), "out": str(run), "epochs": 1, "train_limit": 300,
                          "eval_limit": 100, "hidden": (32,), "latent_dim": 4, "progress": False}, log=lambda s: None)
    pilot = tmp_path / "mnist-pilot"
    npvae.train("mnist", {"data_dir": str(shared_data), "out": str(pilot), "epochs": 1, "train_limit": 300,
                          "eval_limit": 100, "hidden": (16,), "latent_dim": 4, "progress": False}, log=lambda s: None)
    out = tmp_path / "report"
    (tmp_path / "nothing").mkdir()      # a folder without results is passed over
    _run(["report", str(mnist), str(music), str(run), str(tmp_path / "nothing"), "--pilots", str(pilot),
          "--out", str(out)], shared_data, cwd=tmp_path)

    md = (out / "report.md").read_text()
    for heading in ("Approach and implementation", "Loss study, Part I", "Loss study, Part II",
                    "Part I: separation results", "Baselines, Part I", "Baselines, Part II", "Discussion"):
        assert heading in md
    # every table cell of the studies is the results file's number, formatted
    for study_dir in (mnist, music):
        study = read_study(study_dir)
        for r in study["rows"]:
            cells = " | ".join(format(r[k], fmt) for k, _, fmt in COLUMNS[study["task"]])
            assert f"| {r['label']} | {r['group']} | {cells} |" in md, r["label"]
    # the verdict names the loss configuration with the best number
    best = max((r for r in read_study(mnist)["rows"] if r["group"] == "loss"), key=lambda r: r["mean_psnr"])
    assert f"**{best['label']}** ({best['mean_psnr']:.2f} dB)" in md
    assert "NMF" in md.split("## Discussion")[1]
    from npvae import pretrained
    from npvae.lab.report_shipped import missed_marks
    if missed_marks({n: pretrained.info(n) for n in pretrained.list_models()}):
        marks = md.split("## Missed marks: what was tried, and what limits it")[1].split("\n## ")[0]
        assert "| run: mnist-run | dense 32, latent 4, beta" in marks      # the tiny run, as tried
        assert "| pilot: mnist-pilot | dense 16, latent 4, beta" in marks  # the pilot: a row there
        assert re.search(r"Read from .*mnist-pilot.* \(\d{4}-\d\d-\d\d\)\.", marks)
        assert md.count("mnist-pilot") == 4     # and nowhere else but the header's list and command
    for fig in re.findall(r"\]\((figures/[^)]+\.png)\)", md):
        assert (out / fig).stat().st_size > 1000
    pdf = (out / "report.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page\b", pdf)) >= 3
    # typeset: every cell in the PDF inside the margins, no font under 7 pt, the headings as
    # bookmarks; the HTML page has the same cells
    from _typeset import check_html, check_typeset
    from npvae.lab.document import Doc
    doc = Doc.from_markdown(md, out)
    check_typeset(out / "report.pdf", doc)
    check_html(out / "report.html", doc)
    # made inside tmp_path: the report names its sources relative to it
    assert str(tmp_path) not in md and "from: study-mnist, study-music, mnist-run, mnist-pilot." in md
    assert "`npvae report study-mnist study-music mnist-run nothing --pilots mnist-pilot --out report`" in md
    # each section ends with the files it was read from
    sections = {s.split("\n")[0]: s.rstrip().split("\n")[-1] for s in md.split("\n## ")[1:]}
    for title, last in sections.items():
        if title.startswith(("Loss study, Part I (", "Baselines, Part I:")):
            assert re.fullmatch(r"Read from study-mnist \(\d{4}-\d\d-\d\d\)\.", last), title
        if title.startswith("Part I: separation results"):
            assert re.fullmatch(r"Read from mnist-run \(\d{4}-\d\d-\d\d\)\.", last)
        if title.startswith("Shipped models"):
            assert last.startswith("Read from the shipped model files (")
        if title.startswith("Loss study, Part II ("):
            assert re.fullmatch(r"Read from study-music \(\d{4}-\d\d-\d\d\)\.", last)
    assert not sections["Approach and implementation"].startswith("Read from")


def test_report_refuses_directories_without_results(tmp_path, capsys):
    from npvae.cli import main
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r")]) == 1
    assert "none of the directories holds results" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_report_refuses_a_pilot_that_is_not_a_finished_run(tmp_path, capsys):
    from npvae.lab.report import build_report
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "study.h5").write_bytes(b"")
    with pytest.raises(ValueError, match="pilot .*study is not a finished Part I or Part II run"):
        build_report([tmp_path], tmp_path / "r", pilot_dirs=[tmp_path / "study"], log=lambda s: None)


def test_shipped_section_states_what_each_shipped_file_records():
    from pathlib import Path

    from npvae import pretrained
    from npvae.lab.document import Doc
    from npvae.lab.report_shipped import LATENT_LIMIT, MARKS, published_section, shipped_section

    doc = Doc()
    infos = shipped_section(doc)
    published_section(doc)
    md = doc.markdown(Path("."))
    assert sorted(infos) == pretrained.list_models() and infos
    for name, info in infos.items():
        key = info["headline"]
        assert f"| {name} | `{info['command']}` (commit {info['commit']}" in md
        assert f"{info['scores'][key]:.2f} dB" in md
    # each mark's row names the best shipped model of its task and the right gap
    def score(info, key):
        if key == "prior_mean_loss":       # what the latent carries
            return info["scores"]["mean_psnr"] - info["scores_latent_at_prior_mean"]["mean_psnr"]
        if key == "mse_psnr":              # the MSE over both outputs, as a PSNR
            return -10 * np.log10(info["scores"]["mean_mse"])
        return info["scores"][key]

    def latent(name):
        model = npvae.load_model(name)
        return model.latent_dim * (model.latent_side ** 2 if hasattr(model, "latent_side") else 1)

    for task, key, what, mark in MARKS:
        pool = [n for n, i in infos.items() if i["task"] == task.split("-")[0]
                and (task not in ("mnist-dense", "mnist-vae") or n.startswith(task))
                and (task != "mnist-vae" or latent(n) <= LATENT_LIMIT)]
        if not pool:
            assert f"| {what} | >= {mark:g} dB | no shipped model | - |" in md
            continue
        best = max(pool, key=lambda n: score(infos[n], key))
        value = score(infos[best], key)
        gap = f"met ({value - mark:+.2f} dB)" if value >= mark else f"{mark - value:.2f} dB short"
        assert f"| {what} | >= {mark:g} dB | {value:.2f} dB ({best}) | {gap} |" in md
    assert "Park" in md and "ISMIR 2018" in md and "Not measured by npvae" in md


def _doc(tmp_path, sections):
    """A Doc with a title, an intro and ``sections`` {title: [blocks after the h2]}."""
    from npvae.lab.document import Doc
    doc = Doc()
    doc.h1("Report")
    doc.p("Generated from: a, b.")
    for title, blocks in sections.items():
        doc.h2(title)
        doc.blocks += blocks
    return doc


def test_markdown_reads_back_into_the_same_document(tmp_path):
    from npvae.lab.document import Doc
    doc = _doc(tmp_path, {"Study X": [("p", "text, with: marks (1.0 dB)"), ("table", ["a", "b"], [["1", "2"], ["x y", "-"]]),
                                      ("img", tmp_path / "figures" / "x.png", "caption of x"),
                                      ("audio", [("mixture", tmp_path / "audio" / "r_mixture.wav")], "clip of r")]})
    text = doc.markdown(tmp_path)
    again = Doc.from_markdown(text, tmp_path)
    assert again.blocks == doc.blocks and again.markdown(tmp_path) == text
    with pytest.raises(ValueError, match="3 cells under a header of 2"):
        Doc.from_markdown("| a | b |\n|---|---|\n| 1 | 2 | 3 |\n", tmp_path)


def test_update_keeps_old_sections_and_takes_the_new_ones(tmp_path):
    from npvae.lab.report_update import merge_reports
    fig = lambda name: ("img", tmp_path / "figures" / f"{name}.png", name)   # noqa: E731
    runs_header = ["run", "mean PSNR (dB)"]
    old = _doc(tmp_path, {
        "Loss study, Part I: study-a": [("p", "old study a")],
        "Ablation, Part II: ablate-b": [("p", "old ablation b")],
        "Part I: separation results (full training runs)": [("table", runs_header, [["r1", "20.0"], ["r2", "21.0"]]),
                                                           ("p", "old note"), fig("r1"), fig("r2")],
        "Shipped models, and how far from the marks": [("p", "old shipped")],
        "Discussion: how well": [("p", "old discussion")],
    })
    new = _doc(tmp_path, {
        "Ablation, Part II: ablate-b": [("p", "new ablation b")],
        "Ablation, Part II: ablate-c": [("p", "new ablation c")],
        "Part I: separation results (full training runs)": [("table", runs_header, [["r2", "22.0"], ["r3", "23.0"]]),
                                                           ("p", "new note"), fig("r2"), fig("r3")],
        "Shipped models, and how far from the marks": [("p", "new shipped")],
        "Missed marks: what was tried, and what limits it": [("p", "new marks")],
        "Discussion: how well": [("p", "discussion of the new runs alone")],
    })
    merged = merge_reports(old, new, "Updated from: c.")
    sections = dict(merged.sections()[1:])
    # the sections in the order of a whole build: the new ablation beside the other of its part
    assert list(sections) == ["Loss study, Part I: study-a", "Ablation, Part II: ablate-b",
                              "Ablation, Part II: ablate-c", "Part I: separation results (full training runs)",
                              "Shipped models, and how far from the marks",
                              "Missed marks: what was tried, and what limits it", "Discussion: how well"]
    assert merged.sections()[0][1][-1] == ("p", "Updated from: c.")
    assert sections["Loss study, Part I: study-a"][1] == ("p", "old study a")
    assert sections["Ablation, Part II: ablate-b"][1] == ("p", "new ablation b")
    assert sections["Shipped models, and how far from the marks"][1] == ("p", "new shipped")
    assert sections["Discussion: how well"][1] == ("p", "old discussion")      # compares all runs: kept
    runs = sections["Part I: separation results (full training runs)"]
    assert runs[1] == ("table", runs_header, [["r1", "20.0"], ["r2", "22.0"], ["r3", "23.0"]])
    assert ("p", "new note") in runs and [b[2] for b in runs if b[0] == "img"] == ["r1", "r2", "r3"]


def test_update_replaces_the_discussion_paragraph_of_a_study_given_again(tmp_path):
    from npvae.lab.report_update import merge_reports
    title = "Discussion: how well"
    old = _doc(tmp_path, {title: [("p", "Images (study-a, mean PSNR (dB)): old a."),
                                  ("p", "Music (study-m, vocals GNSDR (dB)): old m."),
                                  ("p", "Full Part I run r1: kept."),
                                  ("p", "Read from runs/study-a, runs/study-m, runs/r1 (d1).")]})
    new = _doc(tmp_path, {title: [("p", "Images (study-a, mean PSNR (dB)): new a."),
                                  ("p", "Images (study-b, mean PSNR (dB)): new b."),
                                  ("p", "Full Part I run r9: of the new runs alone."),
                                  ("p", "Read from runs/study-a, runs/study-b, runs/r9 (d2).")]})
    blocks = dict(merge_reports(old, new, "Updated.").sections()[1:])[title]
    assert blocks[1:] == [("p", "Images (study-a, mean PSNR (dB)): new a."),
                          ("p", "Music (study-m, vocals GNSDR (dB)): old m."),
                          ("p", "Images (study-b, mean PSNR (dB)): new b."),
                          ("p", "Full Part I run r1: kept."),
                          ("p", "Read from runs/study-a, runs/study-b (d2); runs/study-m, runs/r1 (d1).")]


def test_update_adds_the_new_runs_of_a_section_with_a_table_per_run(tmp_path):
    # Part II's runs section: per run a paragraph, its scores by system and source, its figures
    from npvae.lab.report_update import merge_reports
    header = ["system", "source", "GNSDR"]
    title = "Part II: separation results (full training runs)"

    def run(name, score):
        return [("p", f"Run {name}"), ("table", header, [["VAE", "vocals", score], ["VAE", "accompaniment", score]]),
                ("img", tmp_path / "figures" / f"{name}.png", name)]

    old = _doc(tmp_path, {title: run("m1", "9.66"), "Shipped models": [("p", "old shipped")]})
    new = _doc(tmp_path, {title: run("m2", "9.49")})
    runs = dict(merge_reports(old, new, "Updated.").sections()[1:])[title]
    assert runs[1:] == run("m1", "9.66") + run("m2", "9.49")
    # a run given again (evaluated once more, say) replaces its own blocks, in place
    again = _doc(tmp_path, {title: run("m1", "9.70") + run("m3", "9.10")})
    merged = _doc(tmp_path, {title: runs[1:]})
    runs = dict(merge_reports(merged, again, "Updated.").sections()[1:])[title]
    assert runs[1:] == run("m1", "9.70") + run("m2", "9.49") + run("m3", "9.10")


def test_sources_line_names_each_run_read_and_when():
    from npvae.lab import report_sources as src
    sources = [("runs/a", "2026-12-02"), ("runs/p1/b", "2026-12-03"), ("the shipped model files", "2026-12-03")]
    text = src.line(sources)
    assert text == "Read from runs/a (2026-12-02); runs/p1/b, the shipped model files (2026-12-03)."
    assert src.parse(text) == sources
    assert src.split([("h2", "T"), ("p", "x"), ("p", text)]) == ([("h2", "T"), ("p", "x")], sources)
    assert src.split([("h2", "T"), ("p", "Read from the start, a sentence.")])[1] is None
    # a run is named as a whole word: "unet" is not "unet-wide"
    blocks = [("h2", "Runs"), ("table", ["run"], [["run: unet-wide"]])]
    assert src.names(blocks, "runs/p1/unet-wide") and not src.names(blocks, "runs/unet")
    assert src.merged([("a", "d1"), ("b", "d1")], [("b", "d2"), ("c", "d2")]) == [("a", "d1"), ("b", "d2"),
                                                                                  ("c", "d2")]


def test_update_keeps_the_sources_of_sections_it_leaves_and_dates_those_it_rebuilds(tmp_path):
    from npvae.lab import report_sources as src
    from npvae.lab.report_update import merge_reports
    runs_title, header = "Part I: separation results (full training runs)", ["run", "mean PSNR (dB)"]

    def section(blocks, *sources):
        return src.attach(blocks, list(sources))
    old = _doc(tmp_path, {
        "Loss study, Part I: study-a": section([("p", "study-a")], ("runs/study-a", "d1")),
        runs_title: section([("table", header, [["r1", "20.0"]])], ("runs/r1", "d1")),
        "Shipped models": section([("p", "old")], (src.SHIPPED, "d1")),
    })
    new = _doc(tmp_path, {
        runs_title: section([("table", header, [["r2", "22.0"]])], ("runs/r2", "d2")),
        "Shipped models": section([("p", "new")], (src.SHIPPED, "d2")),
    })
    sections = dict(merge_reports(old, new, "Updated.").sections()[1:])
    assert sections["Loss study, Part I: study-a"][-1] == ("p", "Read from runs/study-a (d1).")
    assert sections[runs_title][-1] == ("p", "Read from runs/r1 (d1); runs/r2 (d2).")       # rows of both
    assert sections["Shipped models"][-2:] == [("p", "new"), ("p", f"Read from {src.SHIPPED} (d2).")]
    assert sum(b[0] == "p" and b[1].startswith(src.PREFIX) for b in sections[runs_title]) == 1


def test_update_dates_the_sections_of_a_report_that_logged_its_updates_above_them(tmp_path):
    # a report written before sections named their sources said in paragraphs under its
    # title which runs each build or update read; an update moves that to the sections
    from npvae.lab.report_update import merge_reports
    runs_title, header = "Part I: separation results (full training runs)", ["run", "mean PSNR (dB)"]
    old = _doc(tmp_path, {
        "Loss study, Part I: study-a": [("p", "study-a")],
        runs_title: [("table", header, [["r1", "20.0"], ["r2", "21.0"]])],
        "Discussion: how well": [("p", "study-a and r1 compared")],
    })
    old.blocks[1:1] = [
        ("p", "Generated by `npvae report` on d1 with `npvae report runs/study-a runs/r1 --out r` from: runs/study-a, "
              "runs/r1. Every number below is read from those results files."),
        ("p", "Updated by `npvae report --update` on d2 with `npvae report runs/r2 --out r --update` from: runs/r2. "
              f"Sections rebuilt or added from those files (the shipped models' from the shipped files): {runs_title}. "
              "The others are as the build above made them."),
    ]
    merged = merge_reports(old, _doc(tmp_path, {}), "Updated.")
    assert merged.sections()[0][1][1:] == [("p", "Updated.")]
    sections = dict(merged.sections()[1:])
    assert sections["Loss study, Part I: study-a"][-1] == ("p", "Read from runs/study-a (d1).")
    assert sections[runs_title][-1] == ("p", "Read from runs/r1 (d1); runs/r2 (d2).")
    assert sections["Discussion: how well"][-1] == ("p", "Read from runs/study-a, runs/r1 (d1).")


def test_update_needs_a_report_to_update(tmp_path, capsys):
    from npvae.cli import main
    (tmp_path / "run").mkdir()
    assert main(["report", str(tmp_path / "run"), "--out", str(tmp_path / "r"), "--update"]) == 1
    assert "holds no report.md to update" in capsys.readouterr().err
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "report.md").write_text("# A report\n\n| a | b |\nno rule under the header\n")
    (tmp_path / "run" / "study.h5").write_bytes(b"")        # classified as a study, never read: the report is checked first
    assert main(["report", str(tmp_path / "run"), "--out", str(tmp_path / "r"), "--update"]) == 1
    err = capsys.readouterr().err
    assert "report.md is not a report that npvae report wrote" in err and "--overwrite" in err
    with pytest.raises(SystemExit) as usage:                                                  # one or the other
        main(["report", str(tmp_path / "run"), "--update", "--overwrite"])
    assert usage.value.code == 2


def _history(score, train, val, lr):
    return {"val_psnr": np.asarray(score, float), "train_total": np.asarray(train, float),
            "val_total": np.asarray(val, float), "val_lr": np.asarray(lr, float)}


def test_curve_reading_tells_a_budget_limit_from_a_generalisation_limit():
    from npvae.lab.report_marks import limit_verdict, read_curve
    epochs = np.arange(12)
    lr = [1e-3] * 10 + [5e-4, 1e-4]                       # ten constant epochs, then a tail
    rising = read_curve(_history(25 + 0.3 * epochs, 500 - epochs, 510 - epochs, lr), "val_psnr")
    assert rising.epochs == (6, 10)                        # the last half of the constant epochs
    assert rising.score_rise == pytest.approx(0.3) and rising.train_fall == pytest.approx(1.0)
    assert "the training budget limits it" in limit_verdict(rising, "PSNR")
    # the tail's jump does not count: a flat score at constant lr is flat
    flat = np.r_[np.full(10, 30.0), 31.0, 32.0]
    overfit = read_curve(_history(flat, 500 - epochs, np.full(12, 510.0), lr), "val_psnr")
    assert overfit.score_rise == pytest.approx(0.0, abs=1e-9) and overfit.val_fall == pytest.approx(0.0, abs=1e-9)
    assert "what generalises from the training data limits it" in limit_verdict(overfit, "PSNR")
    level = read_curve(_history(flat, np.full(12, 500.0), np.full(12, 510.0), lr), "val_psnr")
    assert "reached what it can do" in limit_verdict(level, "PSNR")
    assert read_curve(_history([1, 2, 3], [3, 2, 1], [3, 2, 1], [1e-3, 1e-4, 1e-5]), "val_psnr") is None
    assert read_curve({"val_psnr": [1.0]}, "val_psnr") is None


@pytest.mark.parametrize("train_noise, val_noise", [(1e-14, 2e-14), (3e-14, 1e-14), (-2e-14, 0.0), (5e-12, -5e-12)])
def test_curve_reading_takes_a_noise_level_loss_fall_as_flat(train_noise, val_noise):
    """Losses level to rounding: whichever way the noise falls, both read as flat."""
    from npvae.lab.report_marks import limit_verdict, read_curve
    epochs = np.arange(12)
    lr = [1e-3] * 10 + [5e-4, 1e-4]
    flat = np.r_[np.full(10, 30.0), 31.0, 32.0]
    level = read_curve(_history(flat, 500.0 - train_noise * epochs, 510.0 - val_noise * epochs, lr), "val_psnr")
    assert level.train_fall == 0.0 and level.val_fall == 0.0
    assert "reached what it can do" in limit_verdict(level, "PSNR")
    # a real fall, however small beside the loss, still counts
    falling = read_curve(_history(flat, 500.0 - 1e-4 * epochs, np.full(12, 510.0), lr), "val_psnr")
    assert falling.train_fall == pytest.approx(1e-4)
    assert "what generalises from the training data limits it" in limit_verdict(falling, "PSNR")


def test_missed_marks_section_lists_the_shipped_models_and_the_runs(tmp_path):
    from pathlib import Path

    from npvae import pretrained
    from npvae.lab.document import Doc
    from npvae.lab.report_marks import marks_section
    from npvae.lab.report_shipped import missed_marks

    infos = {name: pretrained.info(name) for name in pretrained.list_models()}
    epochs = np.arange(12)
    run = {"dir": Path("runs/wide"), "params": 1234, "history": _history(
               25 + 0.3 * epochs, 500 - epochs, 510 - epochs, [1e-3] * 10 + [5e-4, 1e-4]),
           "config": {"model": "unet", "channels": np.array([8, 16]), "blocks": 2, "beta": 0.0, "sample": False,
                      "epochs": 12, "lr_schedule": "cosine"},
           "metrics": {"mean_psnr": 33.0, "train_seconds_total": 99.0}}
    doc = Doc()
    missed = marks_section(doc, infos, [run], [])
    md = doc.markdown(Path("."))
    if not missed:
        assert md == ""
        return
    assert missed == [m for m in missed_marks(infos) if m["value"] is not None]   # no shipped model: said before
    for m in missed:
        assert f"**{m['what']}** (>= {m['target']:g} dB; {m['value']:.2f} dB by {m['name']}" in md
    part_one = [m for m in missed if m["task"].startswith("mnist")]
    if part_one:
        for name, info in infos.items():
            if info["task"] == "mnist":
                assert f"| shipped: {name} | `{info['command']}` |" in md
        mark = next((m for m in part_one if m["key"] == "mean_psnr"), part_one[0])["target"]
        for m in part_one:        # every missed Part I mark is named with its gap
            assert f"**{m['what']}** (>= {m['target']:g} dB; {m['value']:.2f} dB by {m['name']}" in md
        assert (f"| run: wide | unet 8-16, 2 blocks, beta 0, no sampling, 12 epochs, lr cosine | 1,234 | 99 | 33.00 "
                f"| {33.0 - mark:+.2f} | +0.30 | 1 / 1 |") in md
        assert "best-scoring run with a curve (wide)" in md and "the training budget limits it" in md


def test_the_missed_marks_read_the_plain_validation_scores():
    # a run may also hold Wiener or shifted evaluations: the marks compare the plain one,
    # as the shipped scores are measured
    from npvae.lab.report_marks import _validation_eval

    def ev(split, score, **config):
        return {"config": {"split": split, **config}, "metrics": {"score": score}}
    run = {"evals": [ev("validation", 1.0, wiener=True), ev("validation", 2.0, shifts=8), ev("train", 3.0),
                     ev("validation", 4.0, wiener=False, shifts=1)]}
    assert _validation_eval(run)["score"] == 4.0
    assert _validation_eval({"evals": run["evals"][:3]}) is None
    # an evaluation on another data set (npvae evaluate --label) is not the validation singers'
    labelled = {"evals": [ev("validation", 5.0, label="more-singers"), *run["evals"]]}
    assert _validation_eval(labelled)["score"] == 4.0


def test_the_missed_marks_show_the_labelled_evaluations_beside_the_validation_scores():
    from npvae.lab.report_marks import _labelled_evals

    def ev(label, v, a, **config):
        return {"config": {"split": "validation", "label": label, **config},
                "metrics": {"model_vocals_gnsdr": v, "model_accompaniment_gnsdr": a}}
    run = {"evals": [ev(None, 9.0, 8.0), ev("more-singers", 9.784, 9.476), ev("more-singers", 11.0, 11.0, shifts=8),
                     ev("other", 7.0, 6.5)]}
    assert _labelled_evals(run) == "more-singers 9.78 / 9.48; other 7.00 / 6.50"
    assert _labelled_evals({"evals": run["evals"][:1]}) == "-"


def test_the_missed_marks_name_a_pilots_settings_and_flag_time_past_the_budget():
    from npvae.lab.report_marks import BUDGET_SECONDS, _music_recipe, _seconds
    base = {"channels": [24, 48], "epochs": 10, "loss": "l1", "remix": "cross", "logit_penalty": 1e-3,
            "frames": 64, "latent_channels": 32, "batch_size": 8, "remix_prob": 0.5, "gain_db": 3.0,
            "voice_pitch": 0.0}
    assert _music_recipe(base) == "24-48, 10 epochs, loss l1, remix cross, logit penalty 0.001"
    pilot = dict(base, frames=128, remix_prob=0.8, gain_db=6.0, voice_pitch=2.0)
    assert _music_recipe(pilot) == ("24-48, 10 epochs, loss l1, remix cross, logit penalty 0.001, 128 frames, "
                                    "remix prob 0.8, gain 6 dB, voice pitch 2 st")
    assert _music_recipe(dict(base, ema_decay=0.999, weight_decay=0.05)).endswith(
        "logit penalty 0.001, weight decay 0.05, weight average 0.999")
    stacked = dict(base, norm="batch", rnn_layers=2, rnn_hidden=256, stacks=2, down="stride", dropout=0.0)
    assert _music_recipe(stacked) == ("2 stacks of 24-48, batchnorm, LSTM 2 x 256, 10 epochs, loss l1, remix cross, "
                                      "logit penalty 0.001")
    assert _music_recipe(dict(base, down="max", dropout=0.5, residual=True)).startswith(
        "24-48, max pooling, dropout 0.5, residual, 10 epochs")
    assert _seconds(BUDGET_SECONDS) == "7200" and _seconds(7942.4) == "7942 (over 2 h)"


def test_a_run_that_validated_a_weight_average_is_not_read_for_what_limits_it():
    from npvae.lab.report_marks import _read_run
    epochs = np.arange(12)
    history = _history(25 + 0.3 * epochs, 500 - epochs, 510 - epochs, [1e-3] * 10 + [5e-4, 1e-4])
    assert _read_run({"config": {"ema_decay": 0.0}, "history": history}, "val_psnr").score_rise == pytest.approx(0.3)
    assert _read_run({"config": {"ema_decay": 0.999}, "history": history}, "val_psnr") is None


def test_discussion_takes_a_part_ii_run_scored_without_baselines():
    from pathlib import Path

    from npvae.lab.document import Doc
    from npvae.lab.report import _discussion

    def run(name, metrics):
        return {"dir": Path(f"runs/{name}"), "evals": [{"metrics": metrics}]}

    doc = Doc()
    _discussion(doc, [], [], [run("plain", {"model_vocals_gnsdr": 9.5}),
                              run("full", {"model_vocals_gnsdr": 9.5, "oracle_vocals_gnsdr": 13.5})])
    md = doc.markdown(Path("."))
    assert "Full Part II run plain: vocals GNSDR 9.50 dB." in md
    assert "Full Part II run full: vocals GNSDR 9.50 dB against 13.50 dB for the ideal ratio mask, 4.00 dB" in md


def test_a_pilot_is_a_source_of_the_missed_marks_alone():
    from pathlib import Path
    # a pilot folder named "recipe" must not be listed under every section that says "recipe"
    from npvae.lab.report import with_sources
    from npvae.lab.report_marks import MARKS_TITLE
    doc = _doc(Path("."), {"Ablation, Part I: ablate-a": [("p", "the recipe of ablate-a")],
                           MARKS_TITLE: [("p", "pilot: recipe; run: r1")]})
    sections = dict(with_sources(doc, ["runs/ablate-a", "runs/r1"], "d1", ["runs/x/recipe"]).sections()[1:])
    assert sections["Ablation, Part I: ablate-a"][-1] == ("p", "Read from runs/ablate-a (d1).")
    assert sections[MARKS_TITLE][-1] == ("p", "Read from the shipped model files, runs/r1, runs/x/recipe (d1).")


def test_a_part_one_recipe_names_its_norm_and_pooling():
    from npvae.lab.report_marks import _mnist_recipe
    config = {"model": "unet", "channels": np.array([32, 64]), "blocks": 2, "beta": 0.0, "sample": False,
              "epochs": 12, "lr_schedule": "cosine"}
    assert _mnist_recipe(config) == "unet 32-64, 2 blocks, beta 0, no sampling, 12 epochs, lr cosine"
    assert _mnist_recipe({**config, "norm": "batch", "down": "max"}) == (
        "unet 32-64, 2 blocks, batchnorm, max pooling, beta 0, no sampling, 12 epochs, lr cosine")

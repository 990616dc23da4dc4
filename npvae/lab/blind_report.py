"""The report's blind-separation section: supervised vs blind, and what the groups learn.

``npvae report`` hands it the runs whose ``results.h5`` is of kind ``blind_results``
(from ``npvae train blind-mnist`` and ``npvae train blind-music``) and, when
given, the supervised Part I runs; every number is read from those files. Without a
supervised Part I run (and always for Part II) the supervised side of the comparison
is the shipped models' record (:func:`shipped_runs`): the scores
``npvae ship`` measured on the whole test set, stored in each
``npvae/pretrained/<name>.h5`` under ``/provenance/scores``; the report says so.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import pretrained
from ..files import h5mat
from ..files.model_file import read_model_file

KIND = "blind_results"


def _f(x, fmt=".2f"):
    return format(float(x), fmt)


def read_blind_run(run_dir) -> dict:
    d = Path(run_dir)
    t = h5mat.read_tree(d / "results.h5", expected_kind=KIND)
    part = "music" if str(t["config"].get("mode")) == "blind_music" else "mnist"
    return {"dir": d, "part": part, "config": t["config"], "metrics": t["metrics"], "history": t["history"],
            "examples": t["examples"]}


def _pair(config: dict) -> str:
    """The image pair of a blind images run (``task`` in runs recorded before it was ``pair``)."""
    return config.get("pair", config.get("task", ""))


def shipped_runs(task: str) -> list[dict]:
    """The shipped models of ``task`` ("mnist" or "music") that record whole-test-set scores,
    as report entries: ``name``, ``config`` (the model file's /config), ``metrics`` (its
    ``/provenance/scores``), ``provenance`` (the rest of /provenance) and ``source`` (the file)."""
    out = []
    for name in pretrained.list_models():
        info = pretrained.info(name)
        if info.get("task") != task or not isinstance(info.get("scores"), dict):
            continue
        path = pretrained.path(name)
        config = h5mat.read_tree(path, expected_kind="model", subtree="config")
        out.append({"name": name, "config": config, "metrics": info["scores"], "provenance": info,
                    "source": f"npvae/pretrained/{path.name}"})
    return out


def uses_shipped(runs: list[dict], supervised: list[dict]) -> bool:
    """Whether :func:`blind_section` will take supervised rows from the shipped models."""
    images = [r for r in runs if r["part"] == "mnist" and _pair(r["config"]) == "mnist-fashion"]
    music = [r for r in runs if r["part"] == "music"]
    return bool((images and not supervised and shipped_runs("mnist")) or (music and shipped_runs("music")))


def _name(r: dict) -> str:
    return r.get("name") or r["dir"].name


def _provenance_text(shipped: list[dict]) -> str:
    parts = []
    for r in shipped:
        p, n = r["provenance"], r["metrics"].get("n_pairs", r["metrics"].get("n_clips"))
        what = f"{int(n):,} test pairs" if "n_pairs" in r["metrics"] else f"{int(n)} validation clips"
        parts.append(f"`{r['source']}` (trained with `{p.get('command', '?')}` at commit {p.get('commit', '?')}, "
                     f"scored on {what})")
    return ("The supervised numbers are not from a run given to this report: they are the scores that "
            "`npvae ship` measured for the shipped models and recorded in each file's "
            "`/provenance/scores` (`npvae.pretrained.info(name)['scores']`): " + "; ".join(parts) + ".")


def blind_section(doc, runs: list[dict], supervised: list[dict], figs: Path) -> None:
    """Append the section to ``doc`` (a :class:`npvae.lab.document.Doc`); figures go to ``figs``.

    ``supervised``: supervised Part I runs (:func:`npvae.lab.report.read_mnist_run`);
    when empty, the shipped Part I models' recorded scores stand in (:func:`shipped_runs`)."""
    from ..tasks.blind_mnist.task import save_blind_grid, save_latent_traversal
    from ..plotting import save_loss_curves
    images = [r for r in runs if r["part"] == "mnist"]
    music = [r for r in runs if r["part"] == "music"]
    doc.h2("Blind separation: trained on mixtures alone")
    doc.p("The blind VAE (Neri et al., EUSIPCO 2021) never sees a source while it trains. Its encoder maps the "
          "mixture to K Gaussian latent groups; one shared decoder turns each group into an image; the loss asks "
          "only that the K images mix back to the mixture (the mixing rule applied to them) plus the KL of every "
          "group. Nothing says which group is which source, so each test mixture's groups are matched to its "
          "true sources by the assignment of least MSE (Hungarian algorithm) before scoring. 'Masked' estimates "
          "share the mixture's intensity between the groups in proportion to the decoded images, so that they "
          "mix back exactly. 'Group agreement' is the share of mixtures whose first source went to the group "
          "it goes to most often: 1.0 means a group always holds the same kind of source.")
    if images:
        header = ["run", "task", "rule", "K", "epochs", "source A PSNR / SSIM", "source B PSNR / SSIM",
                  "mean PSNR (dB)", "masked mean PSNR", "mixture floor", "group agreement", "train time (s)"]
        rows = []
        for r in images:
            c, m = r["config"], r["metrics"]
            a, b = ("digit", "fashion") if _pair(c) == "mnist-fashion" else ("digit_a", "digit_b")
            rows.append([r["dir"].name, _pair(c), c["rule"], str(int(c["groups"])), str(int(c["epochs"])),
                         f"{_f(m[a + '_psnr'])} / {_f(m[a + '_ssim'], '.3f')}",
                         f"{_f(m[b + '_psnr'])} / {_f(m[b + '_ssim'], '.3f')}", _f(m["mean_psnr"]),
                         _f(m["masked_mean_psnr"]), _f(m["mixture_as_estimate_mean_psnr"]),
                         _f(m["group_agreement"], ".3f"), _f(m["train_seconds_total"], ".0f")])
        doc.table(header, rows)
    same_task = [r for r in images if _pair(r["config"]) == "mnist-fashion"]
    shipped = [] if supervised else shipped_runs("mnist")
    if (supervised or shipped) and same_task:
        doc.p("Supervised against blind on the same fixed test pairs (MNIST + Fashion-MNIST; the supervised "
              "models learn from the true sources, the blind one from mixtures only):")
        rows = []
        for r in supervised or shipped:
            m = r["metrics"]
            label = f"supervised {r['config']['model']}" + (" (shipped)" if r in shipped else "")
            rows.append([_name(r), label, str(r["config"].get("rule", "")),
                         _f(m["digit_psnr"]), _f(m["fashion_psnr"]), _f(m["mean_psnr"]), _f(m["mean_ssim"], ".3f")])
        for r in same_task:
            m = r["metrics"]
            for prefix, label in (("", "blind, decoded"), ("masked_", "blind, masked")):
                rows.append([r["dir"].name, f"{label} (K={int(r['config']['groups'])})", str(r["config"]["rule"]),
                             _f(m[prefix + "digit_psnr"]), _f(m[prefix + "fashion_psnr"]),
                             _f(m[prefix + "mean_psnr"]), _f(m[prefix + "mean_ssim"], ".3f")])
        doc.table(["run", "model", "rule", "digit PSNR", "fashion PSNR", "mean PSNR (dB)", "mean SSIM"], rows)
        if shipped:
            doc.p(_provenance_text(shipped))
    for r in images:
        name = r["dir"].name
        ex = {k: np.asarray(v)[:8] for k, v in r["examples"].items()}
        doc.image(save_blind_grid(figs / f"{name}_grid.png", ex, title=f"{name} on test pairs"),
                  f"{name}: the mixture, its true sources, the K decoded groups in the model's own order, the "
                  "groups mixed back, and the groups matched to the sources (test pairs).")
        model, _ = read_model_file(r["dir"] / "results.h5")
        doc.image(save_latent_traversal(figs / f"{name}_latent_groups.png", model,
                                        np.asarray(r["examples"]["mixture"], np.float32),
                                        title="shared decoder along the most used latent dimensions"),
                  f"{name}: what a latent group encodes. Each row moves one latent dimension (the most used, by KL) "
                  "from -2.5 to 2.5 through the shared decoder; the last rows decode prior samples. One decoder "
                  "draws both kinds of source; where a code falls decides which.")
        doc.image(save_loss_curves(figs / f"{name}_loss_curves.png",
                                   {k: np.atleast_1d(v).tolist() for k, v in r["history"].items()}),
                  f"{name}: loss terms per epoch (the mixture term, the KL of each group) and the "
                  "permutation-invariant validation PSNR.")
    for r in music:
        m, c, name = r["metrics"], r["config"], r["dir"].name
        doc.p(f"Part II, blind ({name}): K={int(c['groups'])} groups on {int(c['frames'])}-frame magnitude patches "
              f"of the MIR-1K training mixtures, {int(c['epochs'])} epochs; scored on {int(m['n_clips'])} "
              "validation clips with BSS Eval v3, the groups assigned to voice and accompaniment per clip "
              "(best) or once for all clips (fixed).")
        rows = []
        for label, text in (("best", "blind, best per clip"), ("fixed", "blind, one assignment")):
            for src in ("vocals", "accompaniment"):
                p = f"{label}_{src}_"
                rows.append([text, src, _f(m[p + "gnsdr"]), _f(m[p + "gsir"]), _f(m[p + "gsar"]),
                             _f(m[p + "mean_si_sdr"])])
        music_shipped = shipped_runs("music")
        for sup in music_shipped:
            for src in ("vocals", "accompaniment"):
                sm = sup["metrics"]
                rows.append([f"supervised U-Net VAE (shipped {sup['name']})", src, _f(sm[f"{src}_gnsdr"]),
                             _f(sm[f"{src}_gsir"]), _f(sm[f"{src}_gsar"]), _f(sm[f"{src}_mean_si_sdr"])])
        doc.table(["system", "source", "GNSDR", "GSIR", "GSAR", "SI-SDR"], rows)
        if music_shipped:
            doc.p(_provenance_text(music_shipped))
        from ..audio.stft import STFTConfig
        from ..tasks.blind_music.task import plot_example
        cfg = STFTConfig(int(c["stft_sample_rate"]), int(c["stft_n_fft"]), int(c["stft_hop"]), str(c["stft_window"]))
        ex = {k: np.asarray(v) for k, v in r["examples"].items() if k.endswith("_mag") or k == "assignment"}
        doc.image(plot_example(ex, figs / f"{name}_example.png", cfg, name),
                  f"{name}: magnitude spectrograms (dB) of a validation clip: the mixture, the true sources and "
                  "each group's masked share of the mixture, labelled with the source it was assigned to.")

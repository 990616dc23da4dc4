"""``npvae report``, ``npvae study`` and ``npvae bench``: the lab's commands.

The loss studies and the report answer the assignment's questions with the library,
so they are installed with it (:mod:`npvae.lab`). The benchmark against PyTorch is
development tooling (``scripts/npvae_lab``), not installed: ``npvae bench`` finds it in
a source checkout of npvae (the current folder or one of its parents, the folder an
editable install's package lives in, or ``sys.path``, ``PYTHONPATH=scripts``).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import sys
from pathlib import Path

from ..files.atomic import atomic_write_text
from ..files.guard import check_existing_dir, check_output_file
from ..errors import NpvaeError, OutputError
from .common import HelpFormatter, UsageError, nonneg_int, positive_float, positive_int

LAB = "npvae_lab"


# ----------------------------------------------------------------------------- finding the lab

def find_lab(start: str | os.PathLike | None = None) -> Path:
    """The folder that holds ``npvae_lab`` (a checkout's ``scripts``): looked for in
    ``start`` (default: the current folder) and its parents, then beside the installed
    package's folder (an editable install), then on ``sys.path`` (``PYTHONPATH``).
    Raises NpvaeError when there is none."""
    here = Path(start or Path.cwd()).resolve()
    package_parent = Path(__file__).resolve().parents[2]
    for folder in [b / "scripts" for b in (here, *here.parents, package_parent)] + [Path(p or ".") for p in sys.path]:
        if (folder / LAB / "__init__.py").is_file():
            return folder
    raise NpvaeError("npvae bench needs a source checkout of npvae: the benchmark (scripts/npvae_lab, "
                     "with its PyTorch twins) is development tooling, not installed with the "
                     "library. Get the source with `git clone` of the npvae repository and run the command "
                     "from inside the checkout. The library itself is installed and works without it "
                     "(import npvae; npvae train, separate, evaluate, ship, study, report).")


def lab(module: str):
    """Module ``npvae_lab.<module>`` (the benchmark) of the checkout :func:`find_lab` finds."""
    folder = str(find_lab())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    os.environ.setdefault("MPLBACKEND", "Agg")      # figures are files, never windows
    return importlib.import_module(f"{LAB}.{module}")


def shown(path) -> str:
    """``path`` relative to the current folder, as a report names it."""
    try:
        return os.path.relpath(path)
    except ValueError:              # another drive (Windows)
        return str(path)


def check_input_file(path, flag: str) -> Path:
    """A file to read, given by ``flag``: it must exist, be a file and be readable."""
    path = Path(path)
    if not path.exists():
        raise OutputError(f"{flag} {path} does not exist")
    if path.is_dir():
        raise OutputError(f"{flag} {path} is a folder, not a file")
    if not os.access(path, os.R_OK):
        raise OutputError(f"{flag} {path} cannot be read (permission denied)")
    return path


# ----------------------------------------------------------------------------- npvae report

REPORT_HELP = "build report.md, report.pdf and report.html from studies and runs"
REPORT_DESCRIPTION = """\
Build report.md, report.pdf, report.html and figures/ from results files: loss studies
(npvae study), image runs (npvae train mnist) and music runs (npvae train music +
npvae evaluate, whose example clips become audio/ and players in report.html), blind
runs (npvae train blind-mnist, blind-music).

    npvae report runs/study-mnist-default runs/study-music-default \\
        runs/mnist-dense-* runs/music_mir1k --out results/report

Every number in the report is read from the files in those directories. An existing
report in --out is replaced only with --overwrite (its figures folder too), or brought
up to date with --update: its sections stay, and those the given directories feed are
added or replaced (a study's section, the runs' table rows, the shipped models'
section), for when the runs of the first build are no longer at hand:

    npvae report runs/ablate-music-best-default runs/music-best --update

--pilots names short runs of a recipe with one change (npvae train ... --epochs 10 with
the change): each becomes a row of the missed-marks section, beside the full runs.

--from-markdown typesets report.pdf and report.html again from a report.md that npvae
report wrote and the figures and audio it links, with no run folder:

    npvae report --from-markdown results/report/report.md"""


def _add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="study directories and run directories")
    p.add_argument("--out", default="results/report",
                   help="folder for report.md, report.pdf, report.html, figures/ and audio/")
    p.add_argument("--pilots", nargs="+", default=[], metavar="RUN_DIR",
                   help="short runs of a recipe with one change: a row each in the missed-marks section, "
                        "no section or figures of their own")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--overwrite", action="store_true", help="replace a report already in --out")
    what.add_argument("--update", action="store_true",
                      help="keep the report in --out and add or replace the sections these directories feed")
    what.add_argument("--from-markdown", metavar="REPORT_MD", default=None,
                      help="no runs: typeset report.pdf and report.html again beside this report.md")
    p.add_argument("--no-audio", dest="audio", action="store_false",
                   help="no audio/ folder and no players: a report kept in a repository holds no dataset music")
    p.set_defaults(run=run_report)


def run_report(args) -> int:
    os.environ.setdefault("MPLBACKEND", "Agg")      # figures are files, never windows
    from ..lab import report
    if args.from_markdown:
        if args.run_dirs or args.pilots:
            raise UsageError("--from-markdown takes no run folders or --pilots: it typesets the report.md it is "
                             "given; build from runs without it")
        report.retypeset(args.from_markdown, log=lambda s: print(s, flush=True))
        return 0
    if not args.run_dirs:
        raise UsageError("give the study and run folders to build the report from (RUN_DIR ...), or "
                         "--from-markdown REPORT_MD to typeset an existing report again")
    command = "npvae report " + " ".join(shlex.quote(shown(d)) for d in args.run_dirs) \
        + (" --pilots " + " ".join(shlex.quote(shown(d)) for d in args.pilots) if args.pilots else "") \
        + f" --out {shlex.quote(shown(args.out))}" + (" --update" if args.update else "") \
        + ("" if args.audio else " --no-audio")
    report.build_report(args.run_dirs, args.out, command=command, log=lambda s: print(s, flush=True),
                        overwrite=args.overwrite, update=args.update, pilot_dirs=args.pilots, audio=args.audio)
    return 0


# ----------------------------------------------------------------------------- npvae study

STUDY_HELP = "loss study with baselines, or a preset's ablation: one table"
STUDY_DESCRIPTION = """\
Train one model under several loss configurations (same seeds, data and budget), train
the baselines, score everything on the same fixed test set, and write a table (Markdown
and HDF5) and a figure of the validation curves. With --ablate PRESET, train that
preset's recipe and, one at a time, the recipe with one of its settings put back to the
default, or for some presets swapped for another value (--norm group for batch, say; the
same shorter budget for all): the table says what each setting buys.

    npvae study --task mnist                   # about 10 minutes on 2 cores
    npvae study --task music                   # about 40 minutes on 2 cores
    npvae study --task mnist --ablate best     # what each setting of --preset best buys
    npvae study --task mnist --ablate anchor --list    # the configurations, without training
    npvae study --task mnist --ablate compact-vae --sweep latent_dim=2,4 beta=0.01,0.1 --minutes 8
                                               # the preset at every point of a grid, equal time each
    npvae study --task mnist --budget tiny     # a smoke run, about a minute
    mpirun -n 4 npvae study --task music       # configurations dealt to 4 MPI ranks

Every configuration runs in its own process, up to --jobs at a time (default: the number
of cores, one BLAS/Numba thread each). The data is checked before anything starts. After
an interruption, run the same command with --resume: finished configurations are kept,
unfinished ones resume from their checkpoints."""


def _add_study(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", choices=("mnist", "music"), required=True)
    p.add_argument("--budget", choices=("tiny", "default"), default="default")
    p.add_argument("--ablate", default=None, metavar="PRESET",
                   help="ablate this preset (mnist: anchor, best, bn-vae, compact-vae, dense-best, unet, vae; music: best, "
                        "recurrent, stacked, stacked-small) instead of the loss study")
    p.add_argument("--sweep", nargs="+", default=None, metavar="KEY=V1,V2",
                   help="with --ablate: train the preset at every point of this grid instead of its ablation "
                        "(e.g. latent_dim=2,4,8 beta=0.01,0.1; a list's numbers joined by ':', "
                        "channels=32:64,24:48:96)")
    p.add_argument("--out", default=None, help="study directory (default runs/study-<task>-<budget>, "
                                               "with --ablate runs/ablate-<task>-<preset>-<budget>)")
    p.add_argument("--data-dir", default=None, help="data root (default: $NPVAE_DATA, then ~/.cache/npvae)")
    p.add_argument("--jobs", type=positive_int, default=None,
                   help="configurations at a time, at least 1 (default: cores; under mpirun, per rank: "
                        "its share of the cores)")
    p.add_argument("--only", nargs="+", default=None, metavar="NAME", help="run only these configurations")
    p.add_argument("--seed", type=nonneg_int, default=0,
                   help="seed of every configuration's weights and batches (another seed repeats the study "
                        "to show its spread; default out then ends in -seed<N>)")
    p.add_argument("--minutes", type=positive_float, default=None,
                   help="give every trained configuration this many minutes of training (its epochs timed from a "
                        "few steps first) instead of the budget's epochs: a comparison at equal time")
    p.add_argument("--list", action="store_true", help="list the configurations and exit")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue the study in --out: finished configurations are kept")
    again.add_argument("--overwrite", action="store_true",
                       help="start the study in --out again, removing its earlier results")
    p.set_defaults(run=run_study, on_interrupt=lambda args: "finished configurations are kept; run the same "
                   "command with --resume to continue")


def run_study(args) -> int:
    os.environ.setdefault("MPLBACKEND", "Agg")      # figures are files, never windows
    from ..lab import studies
    if args.ablate is not None and args.ablate not in studies.ablatable_presets(args.task):
        raise UsageError(f"--ablate takes a preset of {args.task} that changes settings: "
                         f"{', '.join(studies.ablatable_presets(args.task))}; got {args.ablate!r}")
    try:
        confs = studies.configurations(args.task, args.ablate, args.sweep)
    except ValueError as exc:       # a bad --sweep key, value or point
        raise UsageError(str(exc)) from None
    if args.list:
        print(f"{args.task} {studies.study_kind(args.ablate, args.sweep)} study, budget {args.budget}: expected "
              f"{studies.budget(args.task, args.budget, args.ablate)['expected']}")
        width, group_width = max(len(c.name) for c in confs), max(len(c.group) for c in confs)
        for c in confs:
            print(f"  {c.name:{width}s} {c.group:{group_width}s} {c.label}")
        return 0
    known = [c.name for c in confs]
    unknown = sorted(set(args.only or ()) - set(known))
    if unknown:
        raise UsageError(f"unknown configuration(s) {unknown} for --task {args.task}; known: {known}")
    out = Path(args.out or studies.default_out(args.task, args.budget, args.ablate, args.seed, args.minutes,
                                               args.sweep))
    study = studies.run_study(args.task, args.budget, out, args.data_dir, args.jobs, args.only,
                              log=lambda s: print(s, flush=True), resume=args.resume, overwrite=args.overwrite,
                              ablate=args.ablate, seed=args.seed, minutes=args.minutes, sweep=args.sweep)
    if study.get("rank", 0):        # under mpirun, rank 0 reports
        return 0
    if study["rows"]:
        print((out / "table.md").read_text())
        print(f"wrote {out / 'table.md'}, {out / 'study.h5'}, {out / 'validation_curves.png'}")
    if study["failed"]:
        raise NpvaeError(f"configurations failed: {', '.join(study['failed'])} (see their log.txt in "
                         f"{out}); run the same command with --resume to retry them"
                         + ("" if study["rows"] else "; no table was written"))
    return 0


# ----------------------------------------------------------------------------- npvae bench

BENCH_HELP = "time npvae against PyTorch: training steps and a song's separation (needs a source checkout)"
BENCH_DESCRIPTION = """\
Time npvae against PyTorch (same models, weights, batch and noise) in this one process:
a training step of each model (each npvae kernel backend and PyTorch, stepped in turn)
and the separation of a song.

    npvae bench                      # full sizes, table on stdout (about 5-10 minutes)
    npvae bench --json bench.json    # also write the numbers
    npvae bench --layers             # also each convolution of the pipeline models alone, the
                                     # LSTM, and dropout, pooling and upsampling at the U-Nets' sizes
    npvae bench --quick              # tiny models, a few steps, a 2 s song (a smoke test)
    npvae bench --summarise a.json b.json    # the speed table of docs/speed.md: ranges over runs

Cases: the synthetic steps dense_vae, conv_vae and spectrogram; the models the training
commands build: mnist_dense (npvae train mnist), mnist_unet (--model unet),
mnist_unet_best (--preset best), mnist_dense_best (--preset dense-best), music (npvae
train music) and music_best (--preset best); and separation: a 3-minute 44.1 kHz stereo
song separated end to end with the shipped model music-mir1k, the network run by npvae
or by a PyTorch twin. The ratio is the npvae (Numba backend) median time over PyTorch's;
"% GEMM" is a step's GEMM FLOP rate over the BLAS GEMM rate measured at the start. The
header and the JSON name the BLAS library and kernel that ran. Threads: --threads
(default all CPUs) for BLAS, Numba and torch.set_num_threads alike. Needs a source
checkout of npvae (the benchmark lives in scripts/npvae_lab) and, for the comparison,
PyTorch (pip install ".[bench]")."""


def _add_bench(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cases", default=None, help="comma-separated case names (default: all)")
    p.add_argument("--backends", default=None, help="comma-separated: numba,numpy (default: every available)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="timed steps per model (default 60, 20 for the big ones)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per model first")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="threads for BLAS, Numba and PyTorch (default: all CPUs)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    p.add_argument("--quick", action="store_true", help="tiny models and 3 steps: checks that it all runs")
    p.add_argument("--song-seconds", type=positive_float, default=None,
                   help="length of the separated song (default 180)")
    p.add_argument("--song-repeats", type=positive_int, default=None,
                   help="separations timed per network (default 3)")
    p.add_argument("--layers", action="store_true",
                   help="also time each convolution of the pipeline models alone (forward, backward), "
                        "BatchNorm and GroupNorm on each convolution's output, the LSTM at Open-Unmix's sizes, "
                        "and dropout, pooling and upsampling at the U-Nets' sizes")
    p.add_argument("--json", default=None, metavar="PATH", help="write the report to this JSON file")
    p.add_argument("--overwrite", action="store_true", help="replace the --json file if it exists")
    p.add_argument("--summarise", nargs="+", metavar="JSON", default=None,
                   help="print the Markdown speed table (ranges, as in docs/speed.md) of earlier --json runs "
                        "(those with the most threads), then exit; runs with --layers at 1 thread and at more "
                        "also give each convolution's speed-up from the second thread")
    p.set_defaults(run=run_bench)


def run_bench(args) -> int:
    if args.warmup < 0:
        raise UsageError("--warmup must be 0 or more")
    if args.summarise:
        paths = [check_input_file(p, "--summarise") for p in args.summarise]
        summary = lab("bench_summary")
        reports = summary.load(paths)
        print(summary.markdown([r for r in reports if r["threads"] == max(r["threads"] for r in reports)]))
        scaling = summary.scaling_markdown(reports)
        if scaling:
            print("\nEach convolution alone, forward + backward, median over the runs:\n")
            print(scaling)
        return 0
    if args.json:
        check_existing_dir(Path(args.json).parent, "--json")    # before minutes of timing
        check_output_file(args.json, args.overwrite, "--json")
    benchmark = lab("benchmark")
    threads = args.threads or os.cpu_count()
    if args.threads:
        benchmark.set_threads(threads)
    size = "tiny" if args.quick else "full"
    cases = args.cases.split(",") if args.cases else list(benchmark.DEFAULT_CASES)
    report = benchmark.run_benchmark(cases=cases, backends=args.backends and args.backends.split(","),
                                     steps=3 if args.quick and args.steps is None else args.steps,
                                     warmup=1 if args.quick else args.warmup, threads=threads,
                                     use_torch=not args.no_torch, size=size, song_seconds=args.song_seconds,
                                     separation_repeats=args.song_repeats)
    print(benchmark.format_table(report))
    if args.layers:
        layer_bench = lab("layer_bench")
        pipeline_cases = lab("pipeline_cases")
        rows = []
        for name in [c for c in cases if c in pipeline_cases.PIPELINE_CASES and not c.startswith("mnist_dense")]:
            rows += layer_bench.time_layers(benchmark.build_case(name, size), report["gemm_gflops_reference"],
                                            repeats=2 if args.quick else 10, with_torch=report["torch"] is not None,
                                            settle_s=0.0 if args.quick else 0.2)
        rows += layer_bench.time_recurrent(report["gemm_gflops_reference"], size, repeats=2 if args.quick else 10,
                                           with_torch=report["torch"] is not None, settle_s=0.0 if args.quick else 0.2)
        report["layers"] = rows
        print()
        print(layer_bench.format_layers(rows, report["gemm_gflops_reference"]))
        norm_rows = []
        for name in [c for c in cases if c in pipeline_cases.PIPELINE_CASES and ("unet" in c or c.startswith("music"))]:
            norm_rows += layer_bench.time_norm_layers(benchmark.build_case(name, size), repeats=2 if args.quick else 10,
                                                      with_torch=report["torch"] is not None,
                                                      settle_s=0.0 if args.quick else 0.2)
        report["norm_layers"] = norm_rows
        print()
        print(layer_bench.format_norm_layers(norm_rows))
        report["elementwise_layers"] = layer_bench.time_elementwise(
            size, repeats=2 if args.quick else 10, with_torch=report["torch"] is not None,
            settle_s=0.0 if args.quick else 0.2)
        print()
        print(layer_bench.format_elementwise(report["elementwise_layers"]))
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=1))
        print(f"wrote {args.json}")
    return 0


# ----------------------------------------------------------------------------- the three names

COMMANDS = {"report": (REPORT_HELP, REPORT_DESCRIPTION, _add_report),
            "study": (STUDY_HELP, STUDY_DESCRIPTION, _add_study),
            "bench": (BENCH_HELP, BENCH_DESCRIPTION, _add_bench)}


def add_command(sub, name: str) -> argparse.ArgumentParser:
    """Add the subcommand ``name`` ("report", "study" or "bench") to ``sub``."""
    help_text, description, add = COMMANDS[name]
    p = sub.add_parser(name, help=help_text, description=description, formatter_class=HelpFormatter)
    add(p)
    return p


__all__ = ["add_command", "find_lab", "lab", "check_input_file"]

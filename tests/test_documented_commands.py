"""Every command that README.md and the guides in docs/ show still works.

The commands are read from the Markdown itself: each line of a shell code block (and each
``npvae ...`` or ``python scripts/...`` in backticks in the prose) that runs npvae. Every
one is parsed by the command's own argparse parser, so a subcommand, flag, choice or
number that the command does not take fails here; ``npvae train`` commands also build
their task's settings, which the command checks before any work. The cheap ones then run
end to end in a temporary folder, with a tiny budget appended (:data:`RUN`); the rest are
listed in :data:`PARSE_ONLY` with the reason, and a new command in a code block that is in
neither table fails :func:`test_every_documented_command_is_run_or_listed`.

``NPVAE_DATA`` (``export NPVAE_DATA=../shared/data`` in the docs) is the test's data root:
MNIST and Fashion-MNIST as they are, and three MIR-1K clips (two of the training singers,
one of the validation ones) so that a music run and its evaluation take seconds.
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import io
import json
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from unittest import mock

import numpy as np
import pytest

from npvae import cli

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

# ----------------------------------------------------------------------------- reading the docs

SHELL_BLOCKS = {"", "bash", "sh", "shell", "console"}      # fences whose lines are commands
FENCE = re.compile(r"^( *)```(\w*)[^\n]*\n(.*?)^\1```", re.M | re.S)
INLINE = re.compile(r"(?<!`)`([^`]+)`(?!`)")
# programs the docs show that are not npvae: not run here, each for its reason
OTHER_PROGRAMS = {
    "pip": "installs from the package index; tests/test_packaging.py installs the built wheel offline",
    "apt-get": "installs a system package (Open MPI); needs root and the network",
    "tensorboard": "TensorBoard's viewer, a server; the runs' event files are written by npvae train --tensorboard",
    "pytest": "the test suite itself",
}
LAUNCHERS = {"mpirun", "srun"}      # run npvae under MPI / Slurm: the command after them is parsed


@dataclass(frozen=True)
class Command:
    """One command of the docs: ``env`` (NAME=VALUE before it, ``export``), the
    ``launcher`` tokens before the program (``mpirun -n 2``), ``program`` (``npvae``,
    ``python -c``, ``scripts/X.py`` or another program's name) and its ``args``."""
    text: str
    env: tuple = ()
    launcher: tuple = ()
    program: str = ""
    args: tuple = ()
    where: str = ""


def split_commands(line: str) -> list[list[str]]:
    """The commands of one shell line (``a && b; c``), each as its tokens; comments dropped."""
    lex = shlex.shlex(line, posix=True, punctuation_chars=True)
    lex.whitespace_split, lex.commenters = True, "#"
    pieces, current = [], []
    for token in lex:
        if token in ("&&", "||", ";", "|"):
            pieces.append(current)
            current = []
        else:
            current.append(token)
    return [p for p in pieces + [current] if p]


def command(tokens: list[str], where: str) -> Command | None:
    """``tokens`` as a :class:`Command`, or None when they are not a command (output shown
    in a block, a placeholder line)."""
    text = shlex.join(tokens)
    env, rest = [], list(tokens)
    if rest[0] == "export":
        return Command(text, tuple(rest[1:]), program="export", where=where)
    if rest[0] == "env":                # env -u NAME ... NAME=VALUE ... PROGRAM
        rest.pop(0)
        while rest and rest[0] == "-u":
            env.append(f"-u {rest[1]}")
            del rest[:2]
    while rest and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", rest[0]):
        env.append(rest.pop(0))
    launcher = []
    if rest and rest[0] in LAUNCHERS:
        launcher.append(rest.pop(0))
        while rest and rest[0].startswith("-"):
            option = rest.pop(0)
            launcher.append(option)
            if option in ("-n", "-np") and rest:
                launcher.append(rest.pop(0))
    if not rest:
        return None
    if rest[0] == "npvae" or rest[:3] == ["python", "-m", "npvae"]:
        program, args = "npvae", rest[3 if rest[0] == "python" else 1:]
    elif rest[0] == "python" and len(rest) > 1 and rest[1].startswith("scripts/"):
        program, args = rest[1], rest[2:]
    elif rest[:2] == ["python", "-c"]:
        program, args = "python -c", rest[2:]
    elif rest[:3] == ["python", "-m", "pytest"]:
        program, args = "pytest", rest[3:]
    elif rest[0] in OTHER_PROGRAMS:
        program, args = rest[0], rest[1:]
    else:
        return None
    # the docs' data root is the test's: a command is the same whatever NPVAE_DATA names
    key_tokens = [t for t in tokens if not t.startswith("NPVAE_DATA=")]
    return Command(shlex.join(key_tokens), tuple(env), tuple(launcher), program, tuple(args), where)


def _lines(block: str):
    """(line number offset, logical line) of a block, ``\\``-continued lines joined."""
    held, start = "", None
    for i, line in enumerate(block.splitlines()):
        start = i if not held else start
        if line.rstrip().endswith("\\"):
            held += line.rstrip()[:-1] + " "
            continue
        yield start, held + line
        held = ""


def block_commands() -> tuple[list[Command], list[str]]:
    """The commands of the docs' shell code blocks, in order, and the lines of ``bash``
    (or ``sh``...) blocks that are no command this test knows (each a line to classify)."""
    found, unknown = [], []
    for doc in DOCS:
        text = doc.read_text()
        for fence in FENCE.finditer(text):
            indent, lang, body = fence.groups()
            if lang not in SHELL_BLOCKS:
                continue
            first = text[:fence.start()].count("\n") + 2
            body = "\n".join(line[len(indent):] for line in body.splitlines())
            for offset, line in _lines(body):
                where = f"{doc.relative_to(REPO)}:{first + offset}"
                try:
                    pieces = split_commands(line)
                except ValueError:              # not shell (an error message shown, say)
                    pieces = [[line]]
                for tokens in pieces:
                    c = command(tokens, where)
                    if c is not None:
                        found.append(c)
                    elif lang:                  # an untagged block may show output
                        unknown.append(f"{where}: {line.strip()}")
    return found, unknown


def inline_commands() -> tuple[list[Command], list[str]]:
    """The commands the docs' prose shows in backticks (``npvae train mnist --preset vae``),
    and those this test cannot read."""
    found, unknown = [], []
    for doc in DOCS:
        text = re.sub(r"^( *)```.*?^\1```", "", doc.read_text(), flags=re.M | re.S)
        for m in INLINE.finditer(text):
            span = " ".join(m.group(1).split())
            if not re.match(r"(?:[A-Z_]+=\S+ |env )*(?:npvae(?: |$)|python (?:-m npvae|scripts/))", span):
                continue
            where = f"{doc.relative_to(REPO)} (prose)"
            try:
                c = command(shlex.split(span), where)
            except ValueError:
                c = None
            (found.append(c) if c is not None else unknown.append(f"{where}: {span}"))
    return found, unknown


def unique(commands: list[Command]) -> dict[str, Command]:
    """By text, the first place each appears (the docs repeat some)."""
    out = {}
    for c in commands:
        out.setdefault(c.text, c)
    return out


# ----------------------------------------------------------------------------- parsing a command

class ParseError(Exception):
    pass


class Parsed(Exception):
    def __init__(self, namespace):
        super().__init__()
        self.namespace = namespace


_parse_args = argparse.ArgumentParser.parse_args


@contextlib.contextmanager
def parse_only():
    """Within: every argparse parser raises :class:`ParseError` (with argparse's words)
    for a mistake, and :class:`Parsed` once it has parsed, so a script's ``main`` stops there."""
    def error(self, message):
        raise ParseError(f"{self.prog}: error: {message}")

    def parse_args(self, args=None, namespace=None):
        raise Parsed(_parse_args(self, args, namespace))

    with mock.patch.object(argparse.ArgumentParser, "error", error), \
            mock.patch.object(argparse.ArgumentParser, "parse_args", parse_args), \
            contextlib.redirect_stdout(io.StringIO()):
        yield


def parse(c: Command, args: list[str] | None = None) -> argparse.Namespace | None:
    """``c`` (or its program with ``args``) through its own parser: the namespace, or None
    for --help, which ends there. Raises ParseError naming the mistake."""
    args = list(c.args if args is None else args)
    try:
        with parse_only():
            if c.program == "npvae":
                cli.parser().parse_args(args)
            elif c.program.startswith("scripts/"):
                with mock.patch.object(sys, "argv", [c.program, *args]):
                    runpy.run_path(str(REPO / c.program), run_name="__main__")
                raise ParseError(f"{c.program} ran to its end without parsing its arguments")
            else:
                raise AssertionError(f"no parser for {c.program}")
    except Parsed as done:
        return done.namespace
    except SystemExit as end:           # --help and --version end with 0
        if end.code not in (0, None):
            raise ParseError(f"exit {end.code}") from None
        return None


# Prose names a value by its kind (--seed S); each stands for one such value when parsed.
PLACEHOLDERS = {"TASK": "mnist", "PRESET": "best", "N": "2", "M": "5", "S": "0"}


def parse_prose(c: Command) -> argparse.Namespace | None:
    """A command named in prose: as :func:`parse`, with placeholders filled. It may be a
    mention: a command without what it requires (``npvae train``, ``npvae ship``), a
    pattern cut short by ``...`` (``npvae train ... --epochs 10``) or a flag without its
    value (``npvae bench --summarise``); then what it names must exist."""
    args = [PLACEHOLDERS.get(a, a) for a in c.args]
    if "..." in args:
        return parse(c, args[:args.index("...")] + ["--help"])
    try:
        return parse(c, args)
    except ParseError as exc:
        if "arguments are required" in str(exc) and not any(a.startswith("-") for a in args):
            return parse(c, args + ["--help"])
        if args and re.search(rf"argument {re.escape(args[-1])}\b.*: expected (at least )?one argument", str(exc)):
            return None
        raise


def check_settings(namespace: argparse.Namespace | None) -> None:
    """What the command checks after parsing and before any work: a training's settings
    (a value out of range, flags that do not go together), a study's preset."""
    if namespace is None:
        return
    if getattr(namespace, "command", None) == "train" and not namespace.resume:
        from npvae.engine.config import given_settings
        from npvae.engine.run import make_config
        task = namespace.task_class
        make_config(task, given_settings(namespace, task.Config), namespace.preset or "default")
    if getattr(namespace, "command", None) == "study" and namespace.ablate is not None:
        from npvae.lab import studies
        if namespace.ablate not in studies.ablatable_presets(namespace.task):
            raise ValueError(f"--ablate {namespace.ablate}: not a preset of {namespace.task} that a study ablates "
                             f"({', '.join(studies.ablatable_presets(namespace.task))})")


BLOCK_COMMANDS, UNKNOWN_LINES = block_commands()
BLOCKS = unique(BLOCK_COMMANDS)
PARSED = {t: c for t, c in BLOCKS.items() if c.program == "npvae" or c.program.startswith("scripts/")}


@pytest.mark.parametrize("text", sorted(PARSED))
def test_documented_command_parses(text):
    c = PARSED[text]
    try:
        check_settings(parse(c))
    except (ParseError, ValueError) as exc:
        pytest.fail(f"{c.where}: `{text}` is refused: {exc}")


PROSE_COMMANDS, UNKNOWN_SPANS = inline_commands()
PROSE = {t: c for t, c in unique(PROSE_COMMANDS).items() if t not in BLOCKS}


def test_every_shell_line_of_the_docs_is_a_command_this_test_reads():
    """A line of a shell block that is not npvae, a script, ``python -c`` or a program of
    :data:`OTHER_PROGRAMS` would escape the checks below: name it there, or fix the line."""
    assert not UNKNOWN_LINES + UNKNOWN_SPANS, UNKNOWN_LINES + UNKNOWN_SPANS


@pytest.mark.parametrize("text", sorted(PROSE))
def test_command_named_in_prose_parses(text):
    c = PROSE[text]
    try:
        check_settings(parse_prose(c))
    except (ParseError, ValueError) as exc:
        pytest.fail(f"{c.where}: `{text}` is refused: {exc}")


# ----------------------------------------------------------------------------- running them

TINY = "--epochs 1 --train-limit 200 --eval-limit 100 --no-progress"     # an image run of seconds
TINY_MUSIC = "--epochs 1 --no-progress"          # a music run on the data root's three clips


@dataclass(frozen=True)
class Run:
    """How a documented command runs here: in a fresh folder given ``needs`` (see
    :data:`MADE`), with ``add`` appended (a tiny budget: the last value of a flag wins),
    then every glob of ``expect`` must match a file, the output must match ``says`` and
    ``check(folder)`` must pass.
    ``process``: run the installed ``npvae`` command in its own process (always so for a
    command with environment variables, which npvae reads when it is imported)."""
    add: str = ""
    needs: tuple = ()
    expect: tuple = ()
    says: str = ""
    process: bool = False
    check: Callable[[Path], None] | None = None


def continued_to_epoch_2(folder: Path) -> None:
    """The resumed run's history holds its first epoch and the one trained on resuming."""
    epochs = json.loads((folder / "runs/best/history.json").read_text())["epoch"]
    assert epochs == [1, 2], f"runs/best/history.json holds epochs {epochs}, not [1, 2]"


RUN = {
    "npvae train mnist": Run(TINY, expect=("runs/*/model.h5", "runs/*/results.h5")),
    "npvae train mnist --preset best --out runs/best": Run(TINY, expect=("runs/best/model.h5",)),
    "npvae train music --dataset mir1k --out runs/music": Run(TINY_MUSIC, expect=("runs/music/model.h5",)),
    "npvae train blind-mnist --epochs 23": Run(TINY, expect=("runs/*/model.h5",)),
    "npvae train blind-music --epochs 3": Run(TINY_MUSIC, expect=("runs/*/model.h5",)),
    "npvae train mnist --out runs/best --resume": Run("--epochs 2 --no-progress", needs=("runs/best",),
                                                      expect=("runs/best/model.h5",), check=continued_to_epoch_2),
    "npvae train music --out runs/music --tensorboard": Run(TINY_MUSIC, expect=("runs/music/events.out.tfevents.*",)),
    "NPVAE_BACKEND=numpy npvae train mnist": Run(TINY, expect=("runs/*/model.h5",), says="backend numpy"),
    "npvae separate song.wav --out separated/": Run(
        needs=("song.wav",), expect=("separated/song_vocals.wav", "separated/song_accompaniment.wav")),
    "npvae separate album/ --out separated/ --format flac --bits 24": Run(
        needs=("album",), expect=("separated/a_vocals.flac", "separated/a_accompaniment.flac")),
    "npvae separate song.wav --model runs/music --out separated/": Run(
        needs=("song.wav", "runs/music"), expect=("separated/song_vocals.wav", "separated/song_accompaniment.wav")),
    "npvae separate SONG.wav --model runs/music --out separated/": Run(
        needs=("SONG.wav", "runs/music"), expect=("separated/SONG_vocals.wav", "separated/SONG_accompaniment.wav")),
    "npvae separate SONG.wav --out separated/ --html": Run(
        needs=("SONG.wav",), expect=("separated/index.html", "separated/SONG_vocals.wav")),
    "npvae separate --formats": Run(says=r"(?m)^wav ", process=True),
    "npvae evaluate runs/music --dataset mir1k --split validation": Run(
        needs=("runs/music",), expect=("runs/music/eval_mir1k_validation.h5", "runs/music/eval_mir1k_validation.txt"),
        says="GNSDR"),
    "npvae mix-records --split validation --out records/": Run(
        expect=("records/mixtures/*.wav", "records/vocals/*.wav", "records/accompaniment/*.wav",
                "records/records.json")),
    "npvae study --task mnist --ablate best --list": Run(says=r"(?m)^  recipe "),
    "npvae study --task mnist --ablate anchor --minutes 20 --list": Run(says=r"(?m)^  recipe "),
    "npvae study --task mnist --ablate compact-vae --sweep latent_dim=2,4,8 beta=0.003,0.01,0.03,0.1 --list": Run(
        says=r"(?m)^  latent_dim=4,beta=0.01 +sweep +--latent-dim 4 --beta 0.01 \(--preset compact-vae as it is\)"),
    "npvae report --from-markdown results/report/report.md": Run(
        needs=("results/report",), expect=("results/report/report.pdf", "results/report/report.html")),
    "npvae report --from-markdown results/blind_report/report.md": Run(
        needs=("results/blind_report",),
        expect=("results/blind_report/report.pdf", "results/blind_report/report.html")),
    "python -c 'import npvae; print(npvae.pretrained.models_table())'": Run(says="music-mir1k"),
    "python -c 'import npvae; print(npvae.backend())'": Run(says=r"^(numba|numpy)\s*$"),
}

# Why the other commands are parsed (and their settings checked) but not run.
LONG = "a full run or study: minutes to hours (the same command runs above with a tiny budget, or its task does)"
RECIPE = ("another recipe of a command that runs above: parsed and its settings built (10-40 s more each "
          "at a tiny budget)")
MPI = "under mpirun: tests/test_distributed.py trains the image and music models and deals a study to 2 ranks"
PLACEHOLDER = "names its inputs by placeholders (RUN_DIR, NAME, RUN_DIRS, [MORE.flac DIR ...])"
STUDY_RUNS = "builds the report from the default-budget studies and full runs, hours of training"
SHIP = ("scores the model on the whole 10,000-pair test set three times (minutes for a U-Net); "
        "tests/test_ship_model.py ships a small run end to end")
TENSORBOARD = "the records are the engine's for every task: npvae train music --out runs/music --tensorboard runs"
BENCH = ("a benchmark: minutes, and its timings mean nothing on a shared test machine (tests/test_benchmark.py "
         "and tests/test_distributed.py run the benchmarks at tiny sizes)")
PARSE_ONLY = {
    "npvae mix-records --data-dir ../shared/data --split validation --out records/":
        "npvae mix-records --split validation --out records/ runs above, its data root from NPVAE_DATA",
    "npvae evaluate runs/music --dataset mir1k --split validation --data-dir ../shared/mir1k-more-singers "
    "--label more-singers": "the evaluation above on a second data folder beside the project (tests/"
                            "test_separate_script.py evaluates with --label and reads the label back)",
    "npvae train mnist --model unet": RECIPE,
    "npvae train mnist --preset unet --out runs/unet": RECIPE,
    "npvae train mnist --preset bn-vae --out runs/vae": RECIPE,
    "npvae train mnist --preset dense-best": RECIPE,
    "npvae train mnist --preset compact-vae --out runs/compact-vae": RECIPE,
    "npvae train music --dataset mir1k --preset best --out runs/music-best": RECIPE,
    "npvae train music --preset best --out runs/music-best": RECIPE,
    "npvae train blind-mnist": "the run above with --epochs 23, which the tiny budget replaces",
    "npvae train blind-music": "the run above with --epochs 3, which the tiny budget replaces",
    "npvae train blind-mnist --pair mnist-mnist --epochs 23": RECIPE,
    "npvae train blind-mnist --rule sum --epochs 23": RECIPE,
    "npvae train mnist --out runs/dense --tensorboard": TENSORBOARD,
    "npvae train mnist --preset best --out runs/best --tensorboard": TENSORBOARD,
    "NPVAE_CONV_ALGO=im2col npvae train mnist": "the dense run above: its model has no convolution to choose for",
    "mpirun -n 2 npvae train mnist --out runs/x": MPI,
    "mpirun -n 2 npvae train mnist --out runs/mnist-mpi": MPI,
    "mpirun -n 2 npvae train music --dataset mir1k --out runs/music-mpi": MPI,
    "mpirun -n 2 npvae study --task music": LONG,
    "srun --mpi=pmix npvae train music --dataset irmas --batch-size 32 --out runs/irmas-4nodes":
        "a Slurm job script on four nodes, with IRMAS",
    "npvae study --task mnist": LONG,
    "npvae study --task music": LONG,
    "npvae study --task mnist --ablate best": LONG,
    "npvae study --task mnist --ablate vae": LONG,
    "npvae study --task mnist --ablate compact-vae --sweep latent_dim=2,4,8 beta=0.003,0.01,0.03,0.1 --minutes 8": LONG,
    "npvae study --task music --ablate best": LONG,
    "npvae study --task music --ablate recurrent --minutes 20": LONG,
    "npvae train music --dataset mir1k --preset stacked --channels 16 32 48 64 64 --rnn-hidden 96": LONG,
    "npvae train music --dataset mir1k --preset stacked --channels 16 32 64 96 80 --rnn-layers 0": LONG,
    "npvae report RUN_DIRS --out results/report": PLACEHOLDER,
    "npvae report runs/study-mnist-default runs/study-music-default --out results/report --overwrite": STUDY_RUNS,
    "npvae report runs/ablate-music-best-default --out results/report --update": STUDY_RUNS,
    "npvae report runs/study-mnist-default runs/study-music-default runs/ablate-mnist-best-default "
    "runs/ablate-mnist-vae-default runs/ablate-music-best-default runs/mnist-vae --out results/report --overwrite":
        STUDY_RUNS,
    "npvae report runs-blind/mnist-fashion-average runs-blind/mnist-mnist-average runs-blind/mnist-fashion-sum "
    "runs-blind/mnist-mnist-sum runs-blind/mnist-fashion-sum-latent8 runs-blind/mnist-mnist-sum-latent8 "
    "runs-blind/music-mir1k --out results/blind_report --overwrite": STUDY_RUNS,
    "npvae separate SONG.wav '[MORE.flac' DIR '...]' --out separated/": PLACEHOLDER,
    "npvae ship runs/best my-model": SHIP,
    "npvae ship RUN_DIR NAME": SHIP,
    "npvae bench": BENCH,
    "python scripts/bench_mpi.py --steps 20 --json results/bench/mpi.jsonl": BENCH,
    "NPVAE_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python scripts/bench_mpi.py --steps 20 "
    "--json results/bench/mpi.jsonl": BENCH,
    "mpirun -n 2 python scripts/bench_mpi.py --steps 20 --json results/bench/mpi.jsonl": BENCH,
}


def test_every_documented_command_is_run_or_listed():
    """A command added to a code block is run here (:data:`RUN`) or listed with the reason
    it is not (:data:`PARSE_ONLY`); one the docs no longer show leaves both tables."""
    shown = {t for t, c in BLOCKS.items() if c.program not in OTHER_PROGRAMS and c.program != "export"}
    neither = sorted(shown - set(RUN) - set(PARSE_ONLY))
    assert not neither, f"documented commands neither run nor listed in PARSE_ONLY with a reason: {neither}"
    both = sorted(set(RUN) & set(PARSE_ONLY))
    assert not both, f"in both RUN and PARSE_ONLY: {both}"
    stale = sorted((set(RUN) | set(PARSE_ONLY)) - shown)
    assert not stale, f"no longer in the docs (drop them from the tables): {stale}"


@pytest.fixture(scope="module")
def data_root(shared_data, tmp_path_factory) -> Path:
    """MNIST and Fashion-MNIST as they are, and three MIR-1K clips: two of the training
    singers (abjones, amy), one of the others (validation)."""
    root = tmp_path_factory.mktemp("data")
    for name in ("mnist", "fashion-mnist"):
        (root / name).symlink_to(shared_data / name, target_is_directory=True)
    clips = sorted((shared_data / "MIR-1K" / "Wavfile").glob("*.wav"))
    chosen = [next(c for c in clips if c.name.startswith(f"{s}_")) for s in ("abjones", "amy")]
    chosen.append(next(c for c in clips if not c.name.startswith(("abjones_", "amy_"))))
    (root / "MIR-1K" / "Wavfile").mkdir(parents=True)
    for clip in chosen:
        shutil.copy(clip, root / "MIR-1K" / "Wavfile" / clip.name)
    return root


def _song(path: Path, seconds: float, rate: int, channels: int, seed: int) -> None:
    import soundfile as sf
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 220 * t)[:, None] + 0.05 * rng.standard_normal((t.size, channels))
    sf.write(path, tone.astype(np.float32), rate)


def _run_folder(task: str, add: str):
    def make(path: Path, data: Path) -> None:
        assert cli.main(["train", task, "--out", str(path), "--data-dir", str(data), *add.split()]) == 0
    return make


def _report(name: str):
    def make(path: Path, data: Path) -> None:       # the built report's Markdown and figures, not its PDF or HTML
        shutil.copytree(REPO / "results" / name, path, ignore=shutil.ignore_patterns("report.pdf", "report.html"))
    return make


# What a command needs in its folder first, and how each is made (once, then copied).
MADE = {
    "song.wav": lambda path, data: _song(path, 3.0, 44100, 2, 0),
    "SONG.wav": lambda path, data: _song(path, 3.0, 44100, 2, 1),
    "album": lambda path, data: (path.mkdir(), _song(path / "a.wav", 2.0, 22050, 1, 2)),
    "runs/music": _run_folder("music", f"--dataset mir1k {TINY_MUSIC}"),
    "runs/best": _run_folder("mnist", TINY),
    "results/report": _report("report"),
    "results/blind_report": _report("blind_report"),
}


@pytest.fixture(scope="module")
def made(data_root, tmp_path_factory):
    """``made(name, into)`` copies ``MADE[name]`` into the folder ``into`` (made once)."""
    store = tmp_path_factory.mktemp("made")

    def copy(name: str, into: Path) -> None:
        kept = store / name
        if not kept.exists():
            kept.parent.mkdir(parents=True, exist_ok=True)
            MADE[name](kept, data_root)
        (into / name).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if kept.is_dir() else shutil.copy)(kept, into / name)
    return copy


def _npvae_process() -> list[str]:
    """The installed ``npvae`` command beside this Python, else ``python -m npvae``."""
    script = Path(sys.executable).parent / "npvae"
    return [str(script)] if script.exists() else [sys.executable, "-m", "npvae"]


def run_command(c: Command, run: Run, folder: Path, data: Path, monkeypatch, capsys) -> tuple[int, str]:
    """Run ``c`` with ``run.add`` in ``folder``; its exit status and output."""
    args = [*c.args, *shlex.split(run.add)]
    env = dict(os.environ, NPVAE_DATA=str(data), NPVAE_MODELS=str(folder / "models"), MPLBACKEND="Agg")
    own = [e for e in c.env if not e.startswith("NPVAE_DATA=")]
    if c.program == "npvae" and not run.process and not own:
        monkeypatch.chdir(folder)
        with mock.patch.dict(os.environ, env):
            try:
                status = cli.main(args)
            except SystemExit as end:       # a usage error found after parsing
                status = end.code
        out = capsys.readouterr()
        return status, out.out + out.err
    for e in own:
        if e.startswith("-u "):
            env.pop(e[3:], None)
        else:
            env.update([e.split("=", 1)])
    program = _npvae_process() if c.program == "npvae" else [sys.executable, "-c"]
    r = subprocess.run([*program, *args], cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    return r.returncode, r.stdout + r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("text", sorted(RUN))
def test_documented_command_runs(text, tmp_path, data_root, made, monkeypatch, capsys):
    c, run = BLOCKS[text], RUN[text]
    for name in run.needs:
        made(name, tmp_path)
    status, out = run_command(c, run, tmp_path, data_root, monkeypatch, capsys)
    shown = f"{c.where}: `{text}` with `{run.add}`" if run.add else f"{c.where}: `{text}`"
    assert status == 0, f"{shown} exited with {status}:\n{out[-3000:]}"
    missing = [p for p in run.expect if not glob.glob(str(tmp_path / p))]
    assert not missing, f"{shown} did not write {missing}; the folder holds {sorted(os.listdir(tmp_path))}"
    assert re.search(run.says, out), f"{shown} does not say {run.says!r}:\n{out[-3000:]}"
    if run.check is not None:
        run.check(tmp_path)

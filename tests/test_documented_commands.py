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


def block_commands(path: Path = None) -> list[Command]:
    """The commands of the shell code blocks of the docs (or of ``path``), in order."""
    found = []
    for doc in [path] if path else DOCS:
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
                    continue
                for tokens in pieces:
                    c = command(tokens, where)
                    if c is not None:
                        found.append(c)
                    elif lang:
                        raise AssertionError(f"{where}: {line.strip()!r} in a {lang} block is no command this "
                                             "test knows: add its program to OTHER_PROGRAMS or LAUNCHERS")
    return found


def inline_commands() -> list[Command]:
    """The commands the docs' prose shows in backticks (``npvae train mnist --preset vae``)."""
    found = []
    for doc in DOCS:
        text = re.sub(r"^( *)```.*?^\1```", "", doc.read_text(), flags=re.M | re.S)
        for m in INLINE.finditer(text):
            span = " ".join(m.group(1).split())
            if not re.match(r"(?:[A-Z_]+=\S+ |env )*(?:npvae(?: |$)|python (?:-m npvae|scripts/))", span):
                continue
            where = f"{doc.relative_to(REPO)} (prose)"
            c = command(shlex.split(span), where)
            assert c is not None, f"{where}: cannot read {span!r}"
            found.append(c)
    return found


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


BLOCKS = unique(block_commands())
PARSED = {t: c for t, c in BLOCKS.items() if c.program == "npvae" or c.program.startswith("scripts/")}


@pytest.mark.parametrize("text", sorted(PARSED))
def test_documented_command_parses(text):
    c = PARSED[text]
    try:
        check_settings(parse(c))
    except (ParseError, ValueError) as exc:
        pytest.fail(f"{c.where}: `{text}` is refused: {exc}")


PROSE = {t: c for t, c in unique(inline_commands()).items() if t not in BLOCKS}


@pytest.mark.parametrize("text", sorted(PROSE))
def test_command_named_in_prose_parses(text):
    c = PROSE[text]
    try:
        check_settings(parse_prose(c))
    except (ParseError, ValueError) as exc:
        pytest.fail(f"{c.where}: `{text}` is refused: {exc}")

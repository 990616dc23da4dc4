"""The ``npvae`` command: one installed entry point with a subcommand per job.

    npvae train mnist [flags]         images: digit + fashion mixtures
    npvae train music [flags]         music: singing voice vs accompaniment
    npvae train blind-mnist [flags]   blind images: the same mixtures, learnt from mixtures alone
    npvae train blind-music [flags]   blind music: songs, learnt from mixtures alone
    npvae separate SONG ...           separate songs with a trained or shipped model
    npvae evaluate MODEL              BSS Eval scores of a music model on a dataset
    npvae mix-records --out DIR       record-style stereo mixes of MIR-1K clips, with stems
    npvae ship RUN_DIR NAME           make a run's model a shipped model
    npvae study | report              the loss studies and the report
    npvae bench                       npvae timed against PyTorch (a source checkout)

``python -m npvae`` is the same command. Every subcommand exits with 0 when it
succeeded, 2 for a usage mistake (a bad flag or value, reported before any work),
1 when the work failed (the message names the problem and the fix), 130 when
interrupted by Ctrl-C and 143 by SIGTERM (``kill``, a batch system's time limit), each
after the same clean-up and hint; a user's mistake never prints a traceback.

A subcommand's module (:data:`COMMANDS` maps each name to one) gives
``add_command(subparsers, name) -> parser``, which adds its parser (with
:class:`~.common.HelpFormatter` and the argument types of :mod:`.common`) and sets the
function that runs it, ``parser.set_defaults(run=...)`` with ``run(args) -> int`` (or
None for 0), and optionally ``on_interrupt(args) -> str``, the hint printed after Ctrl-C
or SIGTERM. ``run`` reports a usage mistake that argparse alone cannot see (flags that
exclude each other, a value the model refuses) by raising :class:`~.common.UsageError`,
before any work; it never prints an error or exits itself: :func:`~.common.run_command`
turns what it raises into the message and the exit status.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .common import HelpFormatter, run_command

COMMANDS = {            # name: module under npvae.cli
    "train": "train",
    "separate": "separate",
    "evaluate": "evaluate",
    "mix-records": "records",
    "ship": "ship",
    "report": "lab",
    "study": "lab",
    "bench": "lab",
}


def parser() -> argparse.ArgumentParser:
    from .. import __version__
    p = argparse.ArgumentParser(prog="npvae", description=__doc__.split("\n\n")[0] + "\n\n" +
                                __doc__.split("\n\n")[1], formatter_class=HelpFormatter)
    p.add_argument("--version", action="version", version=f"npvae {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"{__name__}.{module_name}")
        module.add_command(sub, name)
    return p


def main(argv=None) -> int:
    """Run ``npvae ARGV``; returns the exit status."""
    p = parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    args.argv = argv            # the command as typed, which a training run records
    return run_command(args)


__all__ = ["main", "parser", "COMMANDS"]

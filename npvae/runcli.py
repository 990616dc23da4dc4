"""The command line of a training script whose settings are one flat dataclass.

The blind scripts (``scripts/train_blind.py``, ``scripts/train_blind_music.py``) are
each a settings class, a ``train(cfg, resume, overwrite)`` function and a few help
texts; everything else is here, once:

* :func:`parser`: a flag per field (:func:`npvae.configflags.add_config_flags`) plus
  ``--resume`` and ``--overwrite``;
* :func:`parse_args`: ``(cfg, resume, overwrite)``, the settings checked by the class
  itself (a bad value exits with status 2 and the class's message), ``--resume``
  without ``--out`` and ``--resume`` with ``--overwrite`` refused;
* :func:`run`: calls ``train``; a refused input prints ``error: ...`` and returns 2,
  Ctrl-C prints the command that resumes and returns 130.
"""
from __future__ import annotations

import argparse
import sys

from .configflags import add_config_flags, parse_config
from .errors import NpvaeError


def parser(doc: str, cls, choices: dict | None = None, help: dict | None = None) -> argparse.ArgumentParser:
    """The script's parser: ``doc`` as its description, a flag per field of ``cls``,
    ``--resume`` and ``--overwrite``."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(p, cls, choices, help)
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run in an --out that holds an old run (its files are replaced)")
    return p


def parse_args(p: argparse.ArgumentParser, cls, argv=None) -> tuple[object, bool, bool]:
    """``(cls(**flags), resume, overwrite)``; exits with status 2 on a bad combination."""
    cfg, rest = parse_config(p, cls, argv)
    if rest.resume and not cfg.out:
        p.error("--resume needs --out RUN_DIR (the run to continue)")
    if rest.resume and rest.overwrite:
        p.error("--resume continues a run and --overwrite replaces it; pass one of them")
    return cfg, rest.resume, rest.overwrite


def run(train, cfg, resume: bool, overwrite: bool, script: str) -> int:
    """``train(cfg, resume=..., overwrite=...)`` as a command: the exit status (0, 2 or 130)."""
    try:
        train(cfg, resume=resume, overwrite=overwrite)
    except (NpvaeError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted; continue with: python {script} --out {cfg.out or 'RUN_DIR'} --resume",
              file=sys.stderr)
        return 130
    return 0

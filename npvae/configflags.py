"""Command-line flags generated from a config dataclass: one ``--field-name`` per field.

So a script lists its settings once (the dataclass) and every one of them is
reachable from the command line; the dataclass's ``__post_init__`` validates values.
Tuples of ints are written ``64,32``; a boolean field that defaults to True becomes
``--no-<name>``.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing


def ints(text: str) -> tuple:
    return tuple(int(t) for t in text.split(",") if t)


def add_config_flags(parser: argparse.ArgumentParser, cls, choices: dict | None = None,
                     help: dict | None = None) -> None:
    """Add a flag for every field of the dataclass ``cls`` (defaults from ``cls()``)."""
    hints = typing.get_type_hints(cls)
    default = cls()
    choices, help = choices or {}, help or {}
    for f in dataclasses.fields(cls):
        name, value, hint = f.name.replace("_", "-"), getattr(default, f.name), hints[f.name]
        if hint is bool:
            parser.add_argument(f"--no-{name}" if value else f"--{name}", dest=f.name,
                                action="store_false" if value else "store_true", help=help.get(f.name))
            continue
        args = typing.get_args(hint)
        kind = ints if (hint is tuple or tuple in args) else next(
            (t for t in (int, float, str) if t is hint or t in args), str)
        parser.add_argument(f"--{name}", dest=f.name, type=kind, default=value, choices=choices.get(f.name),
                            help=(help.get(f.name, "") + f" (default {value})").strip())


def parse_config(parser: argparse.ArgumentParser, cls, argv=None) -> tuple:
    """Parse ``argv`` into ``(cls(**fields), other_args)``; an invalid value is reported by
    the parser (exit status 2) with the config's own message."""
    ns = vars(parser.parse_args(argv))
    fields = {f.name for f in dataclasses.fields(cls)}
    try:
        cfg = cls(**{k: v for k, v in ns.items() if k in fields})
    except ValueError as exc:
        parser.error(str(exc))
    return cfg, argparse.Namespace(**{k: v for k, v in ns.items() if k not in fields})

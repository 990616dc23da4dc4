"""Command-line flags generated from a settings dataclass: every setting of a run has a
flag, named after its field (``frames`` -> ``--frames``, ``remix_prob`` -> ``--remix-prob``),
with the field's default; booleans get ``--x`` / ``--no-x``; tuples take ``16,32,64`` or
``16 32 64``. The scripts only add help texts and choices; the values are checked by
the dataclass itself.

Two entry points: :func:`add_flags` / :func:`flag_values` over ``(name, type, default)``
specs (a config may flatten nested settings, as Part II's TrainConfig does with its
LossConfig), and :func:`add_config_flags` / :func:`parse_config` straight over a flat
dataclass (the blind scripts).
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import MISSING, fields


def dataclass_fields(cls, skip=()) -> list[tuple[str, str, object]]:
    """``(name, type annotation as text, default)`` of each field of dataclass ``cls``."""
    out = []
    for f in fields(cls):
        if f.name in skip:
            continue
        default = f.default if f.default is not MISSING else f.default_factory()
        out.append((f.name, f.type if isinstance(f.type, str) else f.type.__name__, default))
    return out


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t]


def add_flags(parser: argparse.ArgumentParser, specs, help: dict | None = None,
              choices: dict | None = None) -> None:
    """One flag per ``(name, type, default)`` in ``specs``; ``help``/``choices`` by name."""
    help, choices = help or {}, choices or {}
    for name, type_text, default in specs:
        flag = "--" + name.replace("_", "-")
        base = type_text.replace(" | None", "").replace("Optional[", "").rstrip("]").strip()
        kw = {"default": default, "help": help.get(name), "dest": name}
        if base == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif base == "tuple":
            parser.add_argument(flag, nargs="+", type=_ints, metavar="N", **kw)
        elif base in ("int", "float", "str"):
            parser.add_argument(flag, type={"int": int, "float": float, "str": str}[base],
                                choices=choices.get(name), **kw)
        else:
            raise TypeError(f"no flag for field {name} of type {type_text}")


def flag_values(args: argparse.Namespace, specs) -> dict:
    """The parsed values of the flags :func:`add_flags` made (tuples flattened back)."""
    out = {}
    for name, type_text, _ in specs:
        value = getattr(args, name)
        if type_text.replace(" | None", "").strip() == "tuple" and isinstance(value, list):
            value = tuple(v for part in value for v in (part if isinstance(part, list) else [part]))
        out[name] = value
    return out


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The script's docstring as written, and each flag's default in its help (unless the
    help already speaks of it, or there is none)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "default" not in text:
            text += " (default: %(default)s)"
        return text


# ----------------------------------------------------------------------------- flat dataclasses

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

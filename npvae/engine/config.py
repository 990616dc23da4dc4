"""The settings of a training run: one dataclass per task, every field a flag.

:class:`RunConfig` holds what every task has (how long and how fast to train, the KL
weight's schedule, clipping, seed, data and output folders); a task's config subclasses
it with its model, data and objective settings and may change a default (music
trains with a cosine tail and clipped gradients, say). Each config validates itself in
``__post_init__``, naming the flag of every bad value.

:func:`add_config_flags` makes the flags of any config class, the same way for every
task (``latent_dim`` -> ``--latent-dim``; booleans ``--x``/``--no-x``; tuples take
``16 32 64`` or ``16,32,64``). Their parsed values hold only the flags a user gave
(:func:`given_settings`), so a preset or a resumed run's own settings fill the rest.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass

from ..schedules import SCHEDULES
from ..inputs import check_settings


@dataclass
class RunConfig:
    """What every training run has.

    epochs : full passes over the training data. batch_size : items per optimiser step
    (split between the ranks under MPI). lr, lr_schedule : Adam's learning rate, constant
    or with a cosine tail (constant for 60% of the epochs, then down to lr / 10).
    clip_norm : largest global gradient norm (0: no clipping). weight_decay : Adam's
    decoupled weight decay (AdamW: each step also takes lr * weight_decay * w off every
    weight; 0: plain Adam). ema_decay : d > 0 keeps a running average of the weights
    (``avg <- d avg + (1 - d) w`` after every step, about 1 / (1 - d) steps long); the run
    validates and ships the average (0: the last weights). beta, kl_warmup : the KL
    term's weight and the epochs over which it ramps up from 0. seed : data order,
    initial weights and latent noise. display_every : print the loss terms and draw the
    figures every N epochs. tensorboard : also write TensorBoard event files into the run
    folder at each display (:mod:`npvae.watch.board`; needs ``npvae[tensorboard]``). html :
    rewrite the run folder's ``index.html`` at each display (:mod:`npvae.watch.run_page`).
    data_dir : the data's folder (else ``$NPVAE_DATA``). out : the
    run folder (None: a new one under ``runs/``). train_limit, eval_limit : the first N
    training / evaluation items only (quick runs). progress : a progress bar.
    """
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    lr_schedule: str = "constant"
    clip_norm: float = 0.0
    weight_decay: float = 0.0
    ema_decay: float = 0.0
    beta: float = 0.5
    kl_warmup: float = 0.0
    seed: int = 0
    display_every: int = 5
    tensorboard: bool = False
    html: bool = True
    data_dir: str | None = None
    out: str | None = None
    train_limit: int | None = None
    eval_limit: int | None = None
    progress: bool = True

    def __post_init__(self):
        check_settings(self, counts=("epochs", "batch_size", "display_every"),
                       positive_int=("train_limit", "eval_limit"),
                       nonneg_int=("seed",), positive=("lr",),
                       nonneg=("clip_norm", "weight_decay", "ema_decay", "beta", "kl_warmup"),
                       choices={"lr_schedule": SCHEDULES},
                       optional=("epochs", "train_limit", "eval_limit"))
        if self.ema_decay >= 1:
            raise ValueError(f"--ema-decay must be below 1 (0.999 averages over about 1000 steps; 0 for "
                             f"none), got {self.ema_decay!r}")

    def record(self) -> dict:
        """The settings as plain JSON values (tuples as lists): a run's ``config.json``."""
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def defaults(cls) -> dict:
    """The default of every field of config class ``cls``."""
    out = {}
    for f in dataclasses.fields(cls):
        out[f.name] = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return out


# Names that earlier versions of npvae recorded for a setting (old name -> name now).
RENAMED = {"warmup": "kl_warmup", "recon": "loss", "max_train_tracks": "train_limit",
           "max_val_tracks": "eval_limit", "task": "pair"}


def from_record(cls, record: dict) -> dict:
    """The fields of ``cls`` found in a run's recorded config (older names translated;
    entries that are not settings, such as the backend or the data folder, left out)."""
    names = set(field_names(cls))
    out = {}
    for key, value in record.items():
        key = RENAMED.get(key, key) if RENAMED.get(key) in names and key not in names else key
        if key in names:
            out[key] = tuple(value) if isinstance(value, list) else value
    return out


# ----------------------------------------------------------------------------- flags

def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers such as 16 32 64 or 16,32,64, got {text!r}")


def _kind(hint) -> type:
    """The value type a flag parses for a field annotated ``hint``."""
    args = typing.get_args(hint)
    if hint is tuple or tuple in args or typing.get_origin(hint) is tuple:
        return tuple
    for t in (bool, int, float, str):
        if hint is t or t in args:
            return t
    raise TypeError(f"no flag for a field of type {hint}")


BOOL_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def parse_setting(cls, name: str, text: str, choices: dict | None = None, parts: str = ","):
    """The value of field ``name`` of config class ``cls`` written as ``text``, parsed as
    its flag parses it (:func:`add_config_flags`): an int, a float, a string (one of
    ``choices[name]`` if given), a switch as true/false (yes/no, on/off), a tuple as whole
    numbers separated by ``parts`` ("16,32,64"). Raises ValueError naming the setting and
    what it takes."""
    kind, flag = _kind(typing.get_type_hints(cls)[name]), "--" + name.replace("_", "-")
    text = text.strip()
    if kind is bool:
        if text.lower() not in BOOL_WORDS:
            raise ValueError(f"{flag} is a switch: true or false, not {text!r}")
        return BOOL_WORDS[text.lower()]
    if kind is tuple:
        try:
            return tuple(int(t) for t in text.split(parts))
        except ValueError:
            raise ValueError(f"{flag} takes whole numbers such as {parts.join(('16', '32', '64'))}, "
                             f"not {text!r}") from None
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"{flag} takes {'a whole number' if kind is int else 'a number'}, not {text!r}") from None
    allowed = (choices or {}).get(name)
    if allowed and value not in allowed:
        raise ValueError(f"{flag} takes one of {', '.join(map(str, allowed))}, not {text!r}")
    return value


def add_config_flags(parser, cls, help: dict | None = None, choices: dict | None = None,
                     skip: tuple = ()) -> None:
    """A flag per field of config class ``cls`` on ``parser`` (a parser or an argument
    group). A flag not given leaves no value (:func:`given_settings`); its help shows
    the field's default."""
    hints = typing.get_type_hints(cls)
    help, choices = help or {}, choices or {}
    for name, default in defaults(cls).items():
        if name in skip:
            continue
        flag, kind = "--" + name.replace("_", "-"), _kind(hints[name])
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        text = help.get(name, "")
        text = f"{text} (default: {shown})" if default is not None and "default" not in text else text
        kw = {"dest": name, "default": argparse.SUPPRESS, "help": text.replace("%", "%%").strip() or None}
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif kind is tuple:
            parser.add_argument(flag, nargs="+", type=_ints, metavar="N", **kw)
        else:
            parser.add_argument(flag, type=kind, choices=choices.get(name), **kw)


def given_settings(args: argparse.Namespace, cls) -> dict:
    """The settings of ``cls`` that the command line named (tuple flags joined)."""
    out = {}
    for name in field_names(cls):
        if hasattr(args, name):
            value = getattr(args, name)
            if isinstance(value, list):
                value = tuple(v for part in value for v in (part if isinstance(part, list) else [part]))
            out[name] = value
    return out


__all__ = ["RunConfig", "add_config_flags", "given_settings", "defaults", "field_names",
           "from_record", "parse_setting"]

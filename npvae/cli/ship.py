"""``npvae ship``: make a finished training run a shipped model, <dest>/NAME.h5
(by default in the user's models folder, $NPVAE_MODELS or ~/.local/share/npvae/models,
which npvae.load_model and list_models search too).

    npvae ship RUN_DIR my-model

copies RUN_DIR's model.h5 and adds a /provenance group: the name, the training
command, commit and seed, the run's training time, and the scores measured here on
the task's whole test set (images: the 10,000 fixed evaluation pairs; music: the
MIR-1K validation singers), on the small slice that tests/test_pretrained.py
re-scores, and on the whole test set again with the latent's posterior mean set to 0
(what the latent contributes). The command and commit are RUN_DIR/provenance.json's
({"command": ..., "commit": ...}), which npvae train writes; --command and --commit give
or replace them.

Checked before the scoring starts: RUN_DIR is a finished run (it holds model.h5 and no
run is training in it); a name starting mnist- holds an image model and music- a music
separator; --dest is an existing folder; an existing NAME.h5 is replaced only with
--overwrite. --quantize int8 stores the weights as 8-bit integers with one scale per
output slice (a quarter of the bytes; the scores are those of the weights so stored).
The same from Python: npvae.pretrained.shipping.ship(run_dir, name, ...).
"""
from __future__ import annotations

import argparse

from .common import HelpFormatter, UsageError


def add_command(sub, name):
    from .. import pretrained
    p = sub.add_parser(name, help="make a finished run a shipped model (with its scores)", description=__doc__,
                       formatter_class=HelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished run folder of `npvae train mnist|music` "
                                                      "(holds model.h5)")
    p.add_argument("name", nargs="?", metavar="NAME",
                   help="shipped name, e.g. mnist-unet or music-mir1k (letters, digits, '-')")
    p.add_argument("--name", dest="name_flag", metavar="NAME", help="the same as NAME")
    # not dest "command": that is the subcommand's name (npvae ship), which messages print
    p.add_argument("--command", dest="train_command", metavar="COMMAND", help="the command that trained the run")
    p.add_argument("--commit", help="the commit the run was trained from")
    p.add_argument("--data-dir", default=None, help="data root (default: $NPVAE_DATA)")
    p.add_argument("--dest", default=None, help="existing folder to write NAME.h5 into (default: the user's "
                   f"models folder, ${pretrained.USER_ENV} or ~/.local/share/npvae/models, made if missing)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing NAME.h5 in --dest")
    p.add_argument("--quantize", choices=("int8",), default=None,
                   help="store the weights as int8 with one scale per output slice (a quarter of the bytes; "
                        "the scores are measured on the weights so stored)")
    p.set_defaults(run=run)
    return p


def run(a: argparse.Namespace) -> int:
    import os
    os.environ.setdefault("MPLBACKEND", "Agg")
    from ..pretrained.shipping import ship
    if a.name and a.name_flag and a.name != a.name_flag:
        raise UsageError(f"two names given ({a.name} and --name {a.name_flag}); give one")
    name = a.name or a.name_flag
    if not name:
        raise UsageError("give the shipped name: npvae ship RUN_DIR NAME (e.g. mnist-unet)")
    if not all(c.isalnum() or c == "-" for c in name):
        raise UsageError(f"NAME must be letters, digits and '-', got {name!r}")
    ship(a.run_dir, name, a.train_command, a.commit, a.dest, a.data_dir, a.overwrite, quantize=a.quantize)
    return 0

"""``npvae train TASK``: train a separation model (one subcommand per task, one engine).

    npvae train mnist                        # images, the dense VAE, about 10 minutes
    npvae train mnist --preset best          # the best image recipe
    npvae train music --dataset mir1k        # music on MIR-1K
    npvae train blind-mnist --pair mnist-mnist --rule sum
    npvae train music --out runs/x --resume  # continue an interrupted run exactly
    mpirun -n 2 npvae train mnist --out runs/x   # data-parallel over 2 MPI ranks

Every setting of the task's config is a flag of the same name; the flags shared by
every task (epochs, learning rate and its schedule, KL weight and warm-up, clipping,
seed, folders) mean the same everywhere. A preset fills what the flags do not name.
``--resume`` keeps the run's own settings; a flag given with it names a change, and
only those that leave what was learnt intact may change (more ``--epochs``, a lower
``--lr``, ``--clip-norm``...).
"""
from __future__ import annotations

import argparse

from ..engine.config import RunConfig, add_config_flags, field_names, given_settings
from ..schedules import SCHEDULES
from .common import HelpFormatter, UsageError

COMMON_HELP = {
    "epochs": "training epochs",
    "batch_size": "items per batch (split between the ranks under MPI)",
    "lr": "Adam learning rate",
    "lr_schedule": "constant, or cosine: constant for 60% of the epochs, then down to lr/10",
    "clip_norm": "largest global gradient norm, 0 for no clipping",
    "weight_decay": "Adam's decoupled weight decay (AdamW), 0 for none",
    "ema_decay": "keep a running average of the weights over about 1/(1-D) steps, and validate and ship it "
                 "(0.999 is usual; 0 for none)",
    "beta": "weight of the KL term",
    "kl_warmup": "epochs over which the KL weight ramps up from 0",
    "seed": "seed of the data order, the initial weights and the latent noise",
    "display_every": "print the loss terms and draw the figures every N epochs",
    "tensorboard": 'also write TensorBoard event files into the run folder every --display-every epochs '
                   '(needs pip install "npvae[tensorboard]"; view with tensorboard --logdir runs/)',
    "html": "rewrite the run folder's index.html (loss curves, figures, audio players) every --display-every epochs",
    "data_dir": "the data's folder (else $NPVAE_DATA)",
    "out": "run folder (default: a new folder under runs/)",
    "train_limit": "the first N training items only (quick runs)",
    "eval_limit": "the first N evaluation items only",
    "progress": "a progress bar with the running loss",
}


def add_command(sub, name: str) -> argparse.ArgumentParser:
    from ..tasks import TASKS
    p = sub.add_parser(name, help="train a separation model: " + ", ".join(TASKS),
                       description=__doc__, formatter_class=HelpFormatter)
    tasks = p.add_subparsers(dest="train_task", metavar="TASK", required=True)
    for task in TASKS.values():
        add_task_parser(tasks, task)
    return p


def add_task_parser(sub, task) -> argparse.ArgumentParser:
    """The parser of ``npvae train <task.name>``: the task's settings, the shared ones, the run's."""
    doc = (task.Config.__doc__ or "").strip()
    p = sub.add_parser(task.name, help=task.summary, formatter_class=HelpFormatter,
                       description=f"{task.summary}.\n\n{doc}")
    common = set(field_names(RunConfig))
    own = p.add_argument_group(f"{task.name} settings")
    add_config_flags(own, task.Config, {**COMMON_HELP, **task.help}, task.choices, skip=tuple(common))
    shared = p.add_argument_group("training settings (the same for every task)")
    add_config_flags(shared, task.Config, {**COMMON_HELP, **task.help}, {"lr_schedule": SCHEDULES, **task.choices},
                     skip=tuple(set(field_names(task.Config)) - common))
    run = p.add_argument_group("the run")
    run.add_argument("--preset", choices=sorted(task.presets), default=None,
                     help="start from a named recipe (flags override it; default: default)")
    run.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    run.add_argument("--overwrite", action="store_true",
                     help="start a new run in an --out that holds an old run (its files are replaced)")
    for old in task.renamed_flags:
        run.add_argument(old, dest=_renamed_dest(old), default=None, help=argparse.SUPPRESS)
    p.set_defaults(run=run_training, on_interrupt=interrupted_hint, task_class=task)
    return p


def _renamed_dest(flag: str) -> str:
    return "renamed_" + flag.lstrip("-").replace("-", "_")


def run_training(args) -> int:
    from ..engine.run import check_request, train
    task = args.task_class
    for old, new in task.renamed_flags.items():
        if getattr(args, _renamed_dest(old), None) is not None:
            raise UsageError(f"{old} is now {new}: npvae train {task.name} {new} {getattr(args, _renamed_dest(old))}")
    settings = given_settings(args, task.Config)
    if args.resume and args.preset:
        raise UsageError("--preset starts a new run; --resume keeps the run's own settings: drop --preset")
    try:        # what the engine refuses before any work (a bad value, --resume without --out...) is a usage error
        check_request(task, settings, preset=args.preset or "default", resume=args.resume, overwrite=args.overwrite)
    except ValueError as exc:
        raise UsageError(str(exc)) from None

    def started(run_dir):
        args.run_dir = run_dir
        if not args.resume:        # what npvae ship records as the command that trained it
            record_command(run_dir, getattr(args, "argv", None))

    result = train(task, settings, preset=args.preset or "default", resume=args.resume, overwrite=args.overwrite,
                   started=started)
    return 0 if result is not None else 1


def record_command(run_dir, argv) -> None:
    """Write the run's provenance.json (rank 0 alone): ``npvae ARGV``, behind ``mpirun -n
    N`` when the run is data-parallel."""
    import shlex

    from .. import distributed
    from ..pretrained.shipping import write_provenance
    comm = distributed.world()
    if argv is None or not comm.is_root:
        return
    command = "npvae " + shlex.join(argv)
    write_provenance(run_dir, f"mpirun -n {comm.size} {command}" if comm.parallel else command)


def interrupted_hint(args) -> str:
    from ..engine.checkpoint import CHECKPOINT_FILE
    run_dir = getattr(args, "run_dir", None)
    if run_dir is None:
        return "nothing was written"
    if not (run_dir / CHECKPOINT_FILE).exists():
        return (f"no epoch was complete, so there is nothing to resume: start again (with --out {run_dir} "
                "--overwrite to reuse its folder)")
    return f"continue with: npvae train {args.task_class.name} --out {run_dir} --resume"


__all__ = ["add_command", "add_task_parser", "run_training"]

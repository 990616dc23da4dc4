#!/usr/bin/env python
"""Train one model under several loss configurations (same seeds, data and budget),
train the baselines, score everything on the same fixed test set, and write a table
(Markdown and HDF5) and a figure of the validation curves.

    python scripts/compare_losses.py --task mnist                  # about 25 minutes on 2 cores
    python scripts/compare_losses.py --task music                  # about 40 minutes on 2 cores
    python scripts/compare_losses.py --task mnist --budget tiny    # a smoke run, about a minute
    mpirun -n 4 python scripts/compare_losses.py --task music      # configurations dealt to 4 MPI ranks

Every configuration runs in its own process, up to --jobs at a time (default: the number
of cores, one BLAS/Numba thread each). Run the same command again after an
interruption: finished configurations are kept, unfinished ones resume from their
checkpoints.
"""
import argparse
import os
import sys

from npvae_lab.studies import BUDGETS, TASKS, configurations, run_study


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=TASKS, required=True)
    p.add_argument("--budget", choices=("tiny", "default"), default="default")
    p.add_argument("--out", default=None, help="study directory (default runs/study-<task>-<budget>)")
    p.add_argument("--data-dir", default=None, help="data root (default: $NPVAE_DATA, then ~/.cache/npvae)")
    p.add_argument("--jobs", type=int, default=None,
                   help="configurations at a time (default: cores; under mpirun, per rank: its share of the cores)")
    p.add_argument("--only", nargs="+", default=None, metavar="NAME", help="run only these configurations")
    p.add_argument("--list", action="store_true", help="list the configurations and exit")
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    if a.list:
        print(f"{a.task}, budget {a.budget}: expected {BUDGETS[a.task][a.budget]['expected']}")
        for c in configurations(a.task):
            print(f"  {c.name:12s} {c.group:9s} {c.label}")
        return
    known = {c.name for c in configurations(a.task)}
    if a.only and set(a.only) - known:
        sys.exit(f"error: unknown configuration(s) {sorted(set(a.only) - known)}; known: {sorted(known)}")
    study = run_study(a.task, a.budget, a.out, a.data_dir, a.jobs, a.only, log=lambda s: print(s, flush=True))
    if study.get("rank", 0):    # under mpirun, rank 0 reports
        return
    out = a.out or f"runs/study-{a.task}-{a.budget}"
    print(open(os.path.join(out, "table.md")).read())
    print(f"wrote {out}/table.md, {out}/study.h5, {out}/validation_curves.png")
    if study["failed"]:
        sys.exit(f"error: configurations failed: {', '.join(study['failed'])} (see their log.txt); "
                 "run the same command again to retry them")


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    main()

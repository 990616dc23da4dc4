"""Runs one pipeline's ``train`` with a JSON config: ``python tests/_mpi_train.py TASK JSON [--resume]``.

The MPI tests start it alone and under ``mpirun`` (the scripts' flags do not reach
every setting a tiny run needs, e.g. ``max_train_tracks``). Errors end the job as the
scripts do (:func:`npvae.distributed.fail`).
"""
import json
import os
import sys

os.environ.setdefault("MPLBACKEND", "Agg")

from npvae.distributed import fail  # noqa: E402
from npvae.errors import NpvaeError  # noqa: E402


def main(argv):
    task, settings = argv[0], json.loads(argv[1])
    if task == "mnist":
        from npvae.pipelines import mnist as pipe
    else:
        from npvae.pipelines import music as pipe
    for key in ("hidden", "channels"):
        if isinstance(settings.get(key), list):
            settings[key] = tuple(settings[key])
    try:
        pipe.train(pipe.TrainConfig(**settings), resume="--resume" in argv, log=lambda s: print(s, flush=True))
    except (NpvaeError, ValueError) as exc:
        return fail(f"error: {exc}", 2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

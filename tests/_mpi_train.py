"""Runs one training task with JSON settings: ``python tests/_mpi_train.py TASK JSON [--resume]``.

The MPI tests start it alone and under ``mpirun``: it calls ``npvae.train(TASK, settings)``
as a Python user would (with ``--resume`` the settings name only the changes, plus
``out``). Errors end the job as ``npvae train`` does (:func:`npvae.distributed.fail`).
"""
import json
import os
import sys

os.environ.setdefault("MPLBACKEND", "Agg")

import npvae  # noqa: E402
from npvae.distributed import fail  # noqa: E402
from npvae.errors import NpvaeError  # noqa: E402


def main(argv):
    task, settings = argv[0], json.loads(argv[1])
    for key in ("hidden", "channels"):
        if isinstance(settings.get(key), list):
            settings[key] = tuple(settings[key])
    try:
        npvae.train(task, settings, resume="--resume" in argv, log=lambda s: print(s, flush=True))
    except (NpvaeError, ValueError) as exc:
        return fail(f"error: {exc}", 2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

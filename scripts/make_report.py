#!/usr/bin/env python
"""Build report.md and report.pdf from results files: loss studies (compare_losses.py),
Part I runs (train_mnist.py) and Part II runs (train_music.py + evaluate_music.py).

    python scripts/make_report.py runs/study-mnist-default runs/study-music-default \\
        runs/mnist-dense-* runs/music_mir1k --out docs/report

Every number in the report is read from the files in those directories.
"""
import argparse
import os
import shlex
import sys

from npvae.errors import FileFormatError
from npvae_lab.report import build_report


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+", help="study directories and run directories")
    p.add_argument("--out", default="docs/report", help="folder for report.md, report.pdf and figures/")
    a = p.parse_args(argv)
    command = "python scripts/make_report.py " + " ".join(shlex.quote(x) for x in (argv or sys.argv[1:]))
    try:
        build_report(a.run_dirs, a.out, command=command, log=lambda s: print(s, flush=True))
    except (ValueError, FileFormatError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    main()

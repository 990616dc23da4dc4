"""``npvae mix-records``: record-style stereo mixes of MIR-1K clips, with their stems.

    npvae mix-records --data-dir ../shared/data --split validation --out records/

Each clip of the split becomes a 44.1 kHz stereo record (:mod:`npvae.audio.records`:
the voice panned and reverberated, the accompaniment equalised and widened, a band
above 8 kHz added to both by an exciter), written as float WAV files:

    OUT/mixtures/<clip>.wav        the mix, to separate (npvae separate OUT/mixtures ...)
    OUT/vocals/<clip>.wav          the voice as it sounds in the mix
    OUT/accompaniment/<clip>.wav   the accompaniment as it sounds in the mix
    OUT/records.json               the seed and each clip's drawn settings

so that mixture = vocals + accompaniment sample for sample, and OUT is also a stems
folder (``--dataset stems --data-dir OUT``). The settings of a clip depend only on its
name and --seed. Nothing is replaced without --overwrite; every output is checked
before any work.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import HelpFormatter, nonneg_int

FOLDERS = ("mixtures", "vocals", "accompaniment")
MANIFEST = "records.json"


def add_command(sub, name):
    p = sub.add_parser(name, help="record-style stereo mixes of MIR-1K clips, with their stems",
                       description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--data-dir", default=None, help="data root holding MIR-1K/Wavfile (default: $NPVAE_DATA)")
    p.add_argument("--split", default="validation", help="train, validation, test or all")
    p.add_argument("--out", required=True, help="output folder (created if needed)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the clips' settings")
    p.add_argument("--no-exciter", action="store_true", help="add no band above 8 kHz (the stems stay band-limited)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    p.set_defaults(run=run)
    return p


def record_paths(out: Path, name: str) -> dict[str, Path]:
    """Where clip ``name``'s mixture and stems go, by folder name (:data:`FOLDERS`)."""
    return {folder: out / folder / f"{name}.wav" for folder in FOLDERS}


def write_records(data_dir, split: str, out, seed: int = 0, exciter: bool = True, overwrite: bool = False,
                  log=print) -> list[dict]:
    """Write the records of MIR-1K's ``split`` under ``out`` (layout in this module's doc);
    returns the manifest's clip entries. Raises DatasetError for a folder without MIR-1K
    and OutputError (before any work) for outputs that exist without ``overwrite``."""
    from ..audio.datasets import DEFAULT_SNR_DB, list_mir1k, mir1k_track
    from ..audio.io import write_audio
    from ..audio.records import RECORD_RATE, record_of_track
    from ..errors import OutputError
    from ..files.atomic import atomic_write_text
    from ..files.guard import check_output_file
    out = Path(out)
    clips = list_mir1k(split, data_dir)
    problems = []
    for path in [p for c in clips for p in record_paths(out, c.stem).values()] + [out / MANIFEST]:
        try:
            check_output_file(path, overwrite, "--out", inputs=clips)
        except OutputError as e:
            problems.append(str(e))
    if problems:
        more = f"\n  ... and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise OutputError("nothing was written, because:\n  " + "\n  ".join(problems[:5]) + more)
    entries = []
    for clip in clips:
        record = record_of_track(mir1k_track(clip, snr_db=DEFAULT_SNR_DB["mir1k"]), seed, exciter)
        paths = record_paths(out, clip.stem)
        for folder, x in zip(FOLDERS, (record.mixture, record.vocals, record.accompaniment)):
            paths[folder].parent.mkdir(parents=True, exist_ok=True)
            write_audio(paths[folder], x, record.sr, subtype="FLOAT")
        entries.append({"name": clip.stem, "seconds": round(record.mixture.shape[0] / record.sr, 4),
                        "settings": record.settings.to_dict()})
        log(paths["mixtures"])
    manifest = {"source": "MIR-1K", "split": split, "seed": seed, "exciter": exciter, "sample_rate": RECORD_RATE,
                "snr_db": DEFAULT_SNR_DB["mir1k"], "clips": entries}
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return entries


def run(a: argparse.Namespace) -> int:
    entries = write_records(a.data_dir, a.split, a.out, a.seed, not a.no_exciter, a.overwrite,
                            log=lambda p: print(p, flush=True))
    print(f"wrote {len(entries)} records and {Path(a.out) / MANIFEST}")
    return 0


__all__ = ["write_records", "record_paths", "FOLDERS", "MANIFEST"]

#!/usr/bin/env python
"""How `npvae separate`'s --stereo and --high-band options score on record-style stereo mixes.

    python scripts/measure_records.py --model music-mir1k \\
        --set validation=../shared/data --set more-singers=../shared/mir1k-more-singers \\
        --out results/records/stereo_options

For each data root (its MIR-1K validation split) every clip is made into the 44.1 kHz
stereo record of `npvae mix-records --seed SEED` (the same function, in memory:
npvae.audio.records.record_of_track), separated with every combination of --stereo and
--high-band, and scored against the record's stems: BSS Eval v3 SDR of each channel
(npvae.metrics.audio.separation_scores, equal to mir_eval's bss_eval_sources), averaged
over the two channels, NSDR = SDR - SDR of the mixture, and GNSDR / GSDR = the clips'
NSDR / SDR weighted by their lengths. The band above 8 kHz holds little of the energy, so
it is also scored alone: the SNR of each estimate's part above 8.5 kHz against the
stem's (both channels; 0 dB for an estimate that has nothing there), weighted by length.
Writes OUT.md (the table, the command, the date and the machine) and OUT.json (every
clip's numbers).
"""
import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("NPVAE_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from scipy.signal import butter, sosfiltfilt  # noqa: E402

from npvae import pretrained  # noqa: E402
from npvae.audio.datasets import DEFAULT_SNR_DB, list_mir1k, mir1k_singer, mir1k_track  # noqa: E402
from npvae.audio.records import record_of_track  # noqa: E402
from npvae.files.atomic import atomic_write_text  # noqa: E402
from npvae.files.model_file import load_separator  # noqa: E402
from npvae.metrics.audio import gnsdr, separation_scores, weighted_mean  # noqa: E402
from npvae.separation.separator import HIGH_BAND_MODES, STEREO_MODES  # noqa: E402

COMBOS = [(s, h) for s in STEREO_MODES for h in HIGH_BAND_MODES]
HIGH_HZ = 8500.0          # the high band scored alone: above the model's 8 kHz and its resampler's edge


def machine() -> str:
    """The CPU model and the number of CPUs, as lscpu says them."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        info = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        return f"{info.get('Model name', '?').strip()}, {info.get('CPU(s)', '?').strip()} CPUs (lscpu)"
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or platform.machine()


def score_clip(record, estimates) -> dict:
    """SDR and NSDR (vocals, accompaniment) of ``estimates`` (2, n, 2) against ``record``'s
    stems, each the mean of the two channels' BSS Eval numbers."""
    sdr, nsdr = [], []
    for c in range(2):
        refs = np.stack([record.vocals[:, c], record.accompaniment[:, c]])
        s = separation_scores(refs, estimates[:, :, c], record.mixture[:, c])
        sdr.append(s["sdr"])
        nsdr.append(s["nsdr"])
    high = butter(8, HIGH_HZ, "highpass", fs=record.sr, output="sos")
    snr = []
    for ref, est in ((record.vocals, estimates[0]), (record.accompaniment, estimates[1])):
        r, e = sosfiltfilt(high, ref, axis=0), sosfiltfilt(high, est, axis=0)
        snr.append(10 * np.log10(np.sum(r ** 2) / np.sum((r - e) ** 2)))
    return {"sdr": np.mean(sdr, axis=0).tolist(), "nsdr": np.mean(nsdr, axis=0).tolist(), "high_snr": snr}


def measure_set(sep, data_dir, seed: int, limit: int | None, log, combos=COMBOS) -> dict:
    clips = list_mir1k("validation", data_dir)[:limit]
    out = {"clips": [], "seconds": {f"{s}/{h}": 0.0 for s, h in combos}}
    for k, path in enumerate(clips):
        record = record_of_track(mir1k_track(path, snr_db=DEFAULT_SNR_DB["mir1k"]), seed)
        entry = {"name": path.stem, "singer": mir1k_singer(path), "length": record.mixture.shape[0] / record.sr}
        for stereo, high in combos:
            t0 = time.perf_counter()
            est = sep.separate(record.mixture, record.sr, stereo=stereo, high_band=high)
            out["seconds"][f"{stereo}/{high}"] += time.perf_counter() - t0
            try:
                entry[f"{stereo}/{high}"] = score_clip(record, est)
            except ValueError as e:         # a silent reference channel: no SDR defined
                entry["skipped"] = str(e)
                break
        out["clips"].append(entry)
        log(f"  [{k + 1}/{len(clips)}] {path.stem}")
    return out


def summary(result: dict) -> dict:
    clips = [c for c in result["clips"] if "skipped" not in c]
    lengths = [c["length"] for c in clips]
    rows = {}
    for key in result["seconds"]:
        rows[key] = {"gnsdr": gnsdr([c[key]["nsdr"] for c in clips], lengths).tolist(),
                     "gsdr": weighted_mean([c[key]["sdr"] for c in clips], lengths).tolist(),
                     "high_snr": weighted_mean([c[key]["high_snr"] for c in clips], lengths).tolist(),
                     "seconds": result["seconds"][key]}
    return {"rows": rows, "clips": len(clips), "audio_seconds": float(sum(lengths)),
            "skipped": [c["name"] for c in result["clips"] if "skipped" in c]}


def table(name: str, s: dict) -> str:
    lines = [f"### {name}: {s['clips']} clips, {s['audio_seconds']:.0f} s of audio"
             + (f" ({len(s['skipped'])} left out: {', '.join(s['skipped'])})" if s["skipped"] else ""), "",
             "| `--stereo` | `--high-band` | vocals GNSDR | accompaniment GNSDR | vocals GSDR | "
             "accompaniment GSDR | vocals / accompaniment SNR above 8.5 kHz | separation time |",
             "|---|---|---|---|---|---|---|---|"]
    for key, r in s["rows"].items():
        stereo, high = key.split("/")
        lines.append(f"| {stereo} | {high} | {r['gnsdr'][0]:.2f} | {r['gnsdr'][1]:.2f} | {r['gsdr'][0]:.2f} | "
                     f"{r['gsdr'][1]:.2f} | {r['high_snr'][0]:.2f} / {r['high_snr'][1]:.2f} | {r['seconds']:.0f} s |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=pretrained.DEFAULT_MUSIC_MODEL, help="a shipped model's name or a model file")
    p.add_argument("--set", action="append", required=True, metavar="NAME=DATA_DIR",
                   help="a name and a data root holding MIR-1K/Wavfile (its validation split is measured)")
    p.add_argument("--seed", type=int, default=0, help="the records' seed (npvae mix-records --seed)")
    p.add_argument("--limit", type=int, default=None, help="only the first N clips of each set (a quick check)")
    p.add_argument("--combos", nargs="+", default=[f"{s}/{h}" for s, h in COMBOS],
                   choices=[f"{s}/{h}" for s, h in COMBOS], metavar="STEREO/HIGH_BAND",
                   help="the --stereo/--high-band combinations to measure (default: all; "
                        "mid/mask is npvae separate's default)")
    p.add_argument("--out", required=True, help="output path without extension: OUT.md and OUT.json")
    a = p.parse_args(argv)
    combos = [tuple(c.split("/")) for c in dict.fromkeys(a.combos)]
    sets = []
    for item in a.set:
        name, sep_, folder = item.partition("=")
        if not sep_ or not name or not folder:
            p.error(f"--set {item!r}: give NAME=DATA_DIR")
        sets.append((name, folder))
    sep = load_separator(pretrained.path(a.model) if pretrained.is_name(a.model) else a.model)
    sep.separate(np.zeros((44100, 2), np.float32), 44100)       # compiles the kernels before any timing
    started = datetime.datetime.now(datetime.timezone.utc)
    results, summaries = {}, {}
    for name, folder in sets:
        print(f"{name} ({folder})", flush=True)
        results[name] = measure_set(sep, folder, a.seed, a.limit, lambda text: print(text, flush=True), combos)
        summaries[name] = summary(results[name])
    command = "python scripts/measure_records.py " + " ".join(shlex.quote(x) for x in (argv or sys.argv[1:]))
    text = [f"# `npvae separate --stereo/--high-band` on record-style stereo mixes", "",
            f"Model `{a.model}`; records of `npvae mix-records --seed {a.seed}` (44.1 kHz stereo) of each set's "
            "MIR-1K validation clips. BSS Eval v3 SDR per channel (the project's `separation_scores`, equal to "
            "mir_eval's `bss_eval_sources`), the mean of the two channels per clip; GNSDR and GSDR weight the "
            "clips' NSDR and SDR by their lengths (dB). The band above 8 kHz holds little of the energy, so it is also "
            "scored alone: the SNR of each estimate's part above 8.5 kHz against the stem's (both channels, "
            "length-weighted; 0 dB for an estimate with nothing there). Separation time: `Separator.separate` alone, one thread, "
            "on a machine shared with other work.", "",
            f"- command: `{command}`",
            f"- date: {started:%Y-%m-%d %H:%M} UTC",
            f"- machine: {machine()}", ""]
    for name in summaries:
        text += [table(name, summaries[name]), ""]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out.with_suffix(".md"), "\n".join(text))
    atomic_write_text(out.with_suffix(".json"), json.dumps({"summary": summaries, "clips": results}, indent=1) + "\n")
    print("\n".join(text))
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Singing-voice separation datasets: MIR-1K, IRMAS and folders of stems.

Every dataset yields :class:`Track` records, a mono voice and a mono
accompaniment of equal length at one sample rate (16 kHz by default, see
:data:`npvae.audio.stft.PRESETS`). :func:`load_tracks` / :func:`iter_tracks`
are the entry points; the per-dataset functions below them are public too.

Data roots are searched with :func:`npvae.datapath.find_dataset`: an explicit
``data_dir``, then ``$NPVAE_DATA``, then the user cache. Under a root the
folders are ``MIR-1K/Wavfile`` and ``IRMAS-TrainingData`` (or
``IRMAS-sample/IRMAS-TrainingData``); ``data_dir`` may also point straight at
one of those folders. A stems folder is always given by its path.

(About 400 lines: the three datasets share the Track record, the split rule and
the root search, and each family is a few short functions; splitting them into
modules would scatter that shared part.)
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import soundfile as sf

from npvae.audio.io import read_audio
from npvae.audio.stft import STFTConfig
from npvae.datapath import data_roots, find_dataset
from npvae.errors import DatasetError, FileFormatError

SPLITS = ("train", "validation", "test", "all")
DEFAULT_SR = STFTConfig().sample_rate  # 16 kHz working rate for every dataset


# ----------------------------------------------------------------------------- records

@dataclass
class Track:
    """One song excerpt as two sources.

    name : identifier, e.g. ``"abjones_1_01"``.
    voice, accompaniment : float32 ndarrays of shape (n_samples,), full scale 1.0.
    sr : sample rate in Hz.
    """
    name: str
    voice: np.ndarray = field(repr=False)
    accompaniment: np.ndarray = field(repr=False)
    sr: int = DEFAULT_SR

    def __post_init__(self):
        self.voice = np.asarray(self.voice, dtype=np.float32)
        self.accompaniment = np.asarray(self.accompaniment, dtype=np.float32)
        if self.voice.ndim != 1 or self.voice.shape != self.accompaniment.shape:
            raise ValueError(f"track {self.name}: voice {self.voice.shape} and accompaniment "
                             f"{self.accompaniment.shape} must be 1-D and of equal length")

    @property
    def n_samples(self) -> int:
        return self.voice.shape[0]

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.n_samples / self.sr

    def mixture(self) -> np.ndarray:
        """voice + accompaniment, float32 (n_samples,)."""
        return self.voice + self.accompaniment

    def sources(self) -> np.ndarray:
        """The references in the order metrics expect: float32 (2, n_samples), [voice, accompaniment]."""
        return np.stack([self.voice, self.accompaniment])

    def at_snr(self, snr_db: float) -> "Track":
        """A copy whose accompaniment is rescaled so that voice/accompaniment energy is ``snr_db``."""
        voice, acc = mix_at_snr(self.voice, self.accompaniment, snr_db, name=self.name)
        return Track(self.name, voice, acc, self.sr)


def mix_at_snr(voice: np.ndarray, accompaniment: np.ndarray, snr_db: float = 0.0,
               name: str = "track") -> tuple[np.ndarray, np.ndarray]:
    """Rescale the accompaniment so that ``10 log10(|voice|^2 / |acc|^2) = snr_db``.

    The voice is left as it is; 0 dB (equal energies) is the MIR-1K evaluation
    protocol. Returns float32 (voice, accompaniment), both (n_samples,).
    """
    voice = np.asarray(voice, dtype=np.float32)
    acc = np.asarray(accompaniment, dtype=np.float32)
    ev = float(np.sum(voice.astype(np.float64) ** 2))
    ea = float(np.sum(acc.astype(np.float64) ** 2))
    if ev == 0 or ea == 0:
        which = "voice" if ev == 0 else "accompaniment"
        raise DatasetError(f"{name}: the {which} is silent, so it cannot be mixed at "
                           f"{snr_db} dB; remove this excerpt from the data folder")
    gain = np.sqrt(ev / (ea * 10.0 ** (snr_db / 10.0)))
    return voice, (acc * gain).astype(np.float32)


def circular_remix(track: Track, rng: np.random.Generator) -> Track:
    """Training augmentation: a new mixture from the same sources.

    The accompaniment is rotated (``np.roll``) by a random shift in
    [1, n_samples) drawn from ``rng``, so voice and accompaniment line up
    differently while both keep their energy.
    """
    n = track.n_samples
    shift = int(rng.integers(1, n)) if n > 1 else 0
    return Track(f"{track.name}@{shift}", track.voice.copy(),
                 np.roll(track.accompaniment, shift), track.sr)


def _split_slice(n: int, split: str, seed: int, fractions: Sequence[float]) -> np.ndarray:
    """Indices of ``split`` among n sorted items: a seeded permutation cut at ``fractions``
    (train, validation, test), so the three splits never overlap."""
    if split == "all":
        return np.arange(n)
    f = np.asarray(fractions, dtype=float)
    if f.shape != (3,) or np.any(f < 0) or not np.isclose(f.sum(), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1 "
                         f"(train, validation, test), got {fractions}")
    order = np.random.default_rng(seed).permutation(n)
    n_val, n_test = int(round(n * f[1])), int(round(n * f[2]))
    n_train = n - n_val - n_test
    bounds = {"train": (0, n_train), "validation": (n_train, n_train + n_val),
              "test": (n_train + n_val, n)}[split]
    return np.sort(order[bounds[0]:bounds[1]])


def _check_split(split: str) -> str:
    split = {"val": "validation", "valid": "validation"}.get(split, split)
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}'; use one of {', '.join(SPLITS)}")
    return split


def _audio_files(folder: Path) -> list[Path]:
    exts = {"." + f.lower() for f in sf.available_formats()}
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in exts
                  and not p.name.startswith("."))


def _load_mono(path: Path, sr: int) -> np.ndarray:
    return read_audio(path, sr=sr, mono=True)[0][:, 0]


# ----------------------------------------------------------------------------- MIR-1K

MIR1K_TRAIN_SINGERS = ("abjones", "amy")
MIR1K_URL = "http://mirlab.org/dataset/public/MIR-1K.zip"


def mir1k_root(data_dir=None) -> Path:
    """The folder of MIR-1K's stereo clips (``.../MIR-1K/Wavfile``)."""
    root = find_dataset("MIR-1K/Wavfile", data_dir)
    if root is None and data_dir and any(Path(data_dir).glob("*_*_*.wav")):
        root = Path(data_dir)
    if root is None:
        looked = ", ".join(str(r / "MIR-1K" / "Wavfile") for r in data_roots(data_dir))
        raise DatasetError(f"MIR-1K not found; looked in: {looked}. Download {MIR1K_URL}, "
                           "unzip it, and set NPVAE_DATA (or --data-dir) to the folder that "
                           "holds MIR-1K/")
    return root


def mir1k_singer(path) -> str:
    """Singer of a clip named ``singer_song_clip.wav`` (``"abjones"``)."""
    return Path(path).stem.split("_")[0]


def list_mir1k(split: str = "all", data_dir=None,
               train_singers: Sequence[str] = MIR1K_TRAIN_SINGERS,
               validation_singers: Sequence[str] | None = None) -> list[Path]:
    """MIR-1K clip paths of ``split``, sorted.

    The split is by singer: "train" = ``train_singers`` (abjones and amy, as in the
    literature); "validation" = ``validation_singers``, by default every other
    singer. "test" is the same set as "validation" (the published protocol
    evaluates on all clips of the non-training singers); "all" is every clip.
    """
    split = _check_split(split)
    root = mir1k_root(data_dir)
    clips = sorted(root.glob("*.wav"))
    train = set(train_singers)
    if split == "train":
        keep = [p for p in clips if mir1k_singer(p) in train]
    elif split in ("validation", "test"):
        held = set(validation_singers) if validation_singers is not None else None
        keep = [p for p in clips if (mir1k_singer(p) in held if held is not None
                                     else mir1k_singer(p) not in train)]
    else:
        keep = clips
    if not keep:
        raise DatasetError(f"no MIR-1K clips for split '{split}' in {root} (training singers "
                           f"{sorted(train)}, validation singers "
                           f"{validation_singers or 'the others'}); check the folder or the "
                           "singer lists")
    return keep


def load_mir1k_clip(path, sr: int = DEFAULT_SR) -> tuple[np.ndarray, np.ndarray]:
    """(voice, accompaniment) of one MIR-1K clip, float32 (n_samples,) each at ``sr`` Hz.

    MIR-1K stores the accompaniment on the left channel and the voice on the right.
    """
    x, _ = read_audio(path, sr=sr)
    if x.shape[1] != 2:
        raise FileFormatError(f"{path} has {x.shape[1]} channel(s); MIR-1K clips are stereo "
                              "(left = accompaniment, right = voice). Use the original Wavfile/ "
                              "clips, not mixtures")
    return np.ascontiguousarray(x[:, 1]), np.ascontiguousarray(x[:, 0])


def mir1k_track(path, sr: int = DEFAULT_SR, snr_db: float | None = 0.0) -> Track:
    """One MIR-1K clip as a Track, accompaniment rescaled to ``snr_db`` (None: as recorded)."""
    voice, acc = load_mir1k_clip(path, sr)
    track = Track(Path(path).stem, voice, acc, sr)
    return track if snr_db is None else track.at_snr(snr_db)


# ----------------------------------------------------------------------------- IRMAS

IRMAS_URL = "https://zenodo.org/records/1290750"
IRMAS_INSTRUMENTS = ("cel", "cla", "flu", "gac", "gel", "org", "pia", "sax", "tru", "vio", "voi")
IRMAS_GENRES = ("cla", "cou_fol", "jaz_blu", "lat_sou", "pop_roc")
_IRMAS_NAME = re.compile(r"^(?:(?P<number>\d+)__)?(?P<tags>(?:\[[^\[\]]+\])+)"
                         r"(?P<song>\d*)(?:__(?P<excerpt>\d+))?$")


@dataclass(frozen=True)
class IrmasName:
    """What an IRMAS training file name says, e.g. ``031__[cel][nod][cla]0020__1.wav``.

    instrument : the first tag, the predominant instrument ("cel").
    tags : every bracketed tag in order (("cel", "nod", "cla")).
    genre : the last tag if it is a genre code ("cla" = classical), else None.
    drums : True for [dru], False for [nod], None when the name does not say.
    number : the optional leading number (31) or None.
    song : the number after the tags ("0020"), "" if absent.
    excerpt : the ``__N`` suffix (1) or None.
    """
    instrument: str
    tags: tuple[str, ...]
    genre: str | None
    drums: bool | None
    number: int | None
    song: str
    excerpt: int | None


def parse_irmas_name(name) -> IrmasName:
    """Parse an IRMAS training file name (a path or a bare name, extension optional)."""
    stem = Path(str(name)).name
    stem = stem[: -len(Path(stem).suffix)] if Path(stem).suffix.lower() in (".wav", ".flac") else stem
    m = _IRMAS_NAME.match(stem)
    if not m:
        raise FileFormatError(f"'{name}' is not an IRMAS training file name "
                              "(like '[cla][cla]0189__2.wav' or '031__[cel][nod][cla]0020__1.wav')")
    tags = tuple(re.findall(r"\[([^\[\]]+)\]", m["tags"]))
    drums = True if "dru" in tags[1:] else False if "nod" in tags[1:] else None
    genre = tags[-1] if len(tags) > 1 and tags[-1] in IRMAS_GENRES else None
    return IrmasName(instrument=tags[0], tags=tags, genre=genre, drums=drums,
                     number=int(m["number"]) if m["number"] else None, song=m["song"],
                     excerpt=int(m["excerpt"]) if m["excerpt"] else None)


def irmas_root(data_dir=None) -> Path:
    """The IRMAS training folder (holding ``cel/``, ``cla/``, ..., ``voi/``)."""
    root = find_dataset("IRMAS-TrainingData", data_dir) or \
        find_dataset("IRMAS-sample/IRMAS-TrainingData", data_dir)
    if root is None and data_dir and any((Path(data_dir) / i).is_dir() for i in IRMAS_INSTRUMENTS):
        root = Path(data_dir)
    if root is None:
        looked = ", ".join(f"{r / 'IRMAS-TrainingData'} (or {r / 'IRMAS-sample'}/...)"
                           for r in data_roots(data_dir))
        raise DatasetError(f"IRMAS not found; looked in: {looked}. Download "
                           f"IRMAS-TrainingData.zip from {IRMAS_URL}, unzip it, and set "
                           "NPVAE_DATA (or --data-dir) to the folder that holds "
                           "IRMAS-TrainingData/")
    return root


def irmas_pairs(split: str = "train", data_dir=None,
                music_instruments: Sequence[str] | None = None, seed: int = 0,
                fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> list[tuple[Path, Path]]:
    """(voice excerpt, music excerpt) paths of ``split``, deterministic for a given seed.

    Voice excerpts come from ``voi/``; music from ``music_instruments`` (default:
    every instrument folder present except ``voi``). Voice and music files are
    each split into train/validation/test by a permutation seeded with ``seed``
    and cut at ``fractions``, so no excerpt appears in two splits; within a
    split, voice excerpt k (sorted) is paired with music excerpt k (cycling) of
    a seeded shuffle of the music files.
    """
    split = _check_split(split)
    root = irmas_root(data_dir)
    if not (root / "voi").is_dir() or not _audio_files(root / "voi"):
        raise DatasetError(f"IRMAS at {root} has no singing-voice excerpts in voi/ (looked in "
                           f"{root / 'voi'}); the full IRMAS training set has them. Download "
                           f"IRMAS-TrainingData.zip from {IRMAS_URL} and unzip it there")
    if music_instruments is None:
        music_instruments = [i for i in IRMAS_INSTRUMENTS if i != "voi" and (root / i).is_dir()]
    missing = [i for i in music_instruments if not (root / i).is_dir()]
    if missing or not music_instruments:
        raise DatasetError(f"IRMAS at {root} lacks instrument folder(s) {missing or '(none given)'}; "
                           f"present: {sorted(p.name for p in root.iterdir() if p.is_dir())}")
    voices = _audio_files(root / "voi")
    music = [p for i in sorted(music_instruments) for p in _audio_files(root / i)]
    voices = [voices[k] for k in _split_slice(len(voices), split, seed, fractions)]
    music = [music[k] for k in _split_slice(len(music), split, seed + 1, fractions)]
    if not voices or not music:
        raise DatasetError(f"IRMAS split '{split}' is empty ({len(voices)} voice, {len(music)} "
                           f"music excerpts) with fractions {tuple(fractions)}; use more data or "
                           "other fractions")
    music = [music[k] for k in np.random.default_rng([seed, SPLITS.index(split)]).permutation(len(music))]
    return [(v, music[k % len(music)]) for k, v in enumerate(voices)]


def irmas_track(voice_path, music_path, sr: int = DEFAULT_SR,
                snr_db: float | None = 0.0) -> Track:
    """Mix a voice excerpt and a music excerpt (mono, ``sr`` Hz, trimmed to the shorter)
    with the music rescaled to ``snr_db`` (None: as recorded).

    IRMAS excerpts are mixtures with one predominant instrument, so the "voice" is a
    voice-dominated excerpt, not an isolated stem.
    """
    voice_path, music_path = Path(voice_path), Path(music_path)
    voice, music = _load_mono(voice_path, sr), _load_mono(music_path, sr)
    n = min(len(voice), len(music))
    name = f"{voice_path.parent.name}/{voice_path.stem}+{music_path.parent.name}/{music_path.stem}"
    track = Track(name, voice[:n], music[:n], sr)
    return track if snr_db is None else track.at_snr(snr_db)


# ----------------------------------------------------------------------------- stems

def stems_pairs(root, split: str = "all", seed: int = 0,
                fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> list[tuple[Path, Path]]:
    """(vocals, accompaniment) paths from ``root/vocals/`` and ``root/accompaniment/``.

    Files pair by name without extension (``vocals/song1.wav`` with
    ``accompaniment/song1.flac``); an unmatched name is a DatasetError. Splits are
    a seeded permutation cut at ``fractions``; the default "all" keeps every pair.
    """
    split = _check_split(split)
    root = Path(root).expanduser()
    dirs = {k: root / k for k in ("vocals", "accompaniment")}
    for k, d in dirs.items():
        if not d.is_dir():
            raise DatasetError(f"stems folder {root} has no {k}/ sub-folder; it needs vocals/ "
                               "and accompaniment/ with one file per song under the same name")
    files = {k: {p.stem: p for p in _audio_files(d)} for k, d in dirs.items()}
    only_v = sorted(files["vocals"].keys() - files["accompaniment"].keys())
    only_a = sorted(files["accompaniment"].keys() - files["vocals"].keys())
    if only_v or only_a:
        raise DatasetError(f"stems in {root} do not pair up: only in vocals/: {only_v[:5]}"
                           f"{'...' if len(only_v) > 5 else ''}; only in accompaniment/: "
                           f"{only_a[:5]}{'...' if len(only_a) > 5 else ''}. Give both folders "
                           "the same file names")
    names = sorted(files["vocals"])
    if not names:
        raise DatasetError(f"stems folder {root} holds no audio files in vocals/")
    return [(files["vocals"][names[k]], files["accompaniment"][names[k]])
            for k in _split_slice(len(names), split, seed, fractions)]


def stems_track(vocals_path, accompaniment_path, sr: int = DEFAULT_SR,
                snr_db: float | None = None) -> Track:
    """A pair of stems as a Track (mono, ``sr`` Hz). Their durations must agree within 10 ms."""
    v, a = _load_mono(Path(vocals_path), sr), _load_mono(Path(accompaniment_path), sr)
    if abs(len(v) - len(a)) > sr // 100:
        raise FileFormatError(f"stems differ in length: {vocals_path} is {len(v) / sr:.3f} s, "
                              f"{accompaniment_path} is {len(a) / sr:.3f} s; trim them to match")
    n = min(len(v), len(a))
    track = Track(Path(vocals_path).stem, v[:n], a[:n], sr)
    return track if snr_db is None else track.at_snr(snr_db)


# ----------------------------------------------------------------------------- entry point

_ALIASES = {"mir1k": "mir1k", "irmas": "irmas", "stems": "stems"}
#: Default mixing SNR (dB) per dataset; None keeps the recorded levels.
DEFAULT_SNR_DB = {"mir1k": 0.0, "irmas": 0.0, "stems": None}


def iter_tracks(dataset: str, split: str = "train", data_dir=None, *, sr: int | None = None,
                snr_db: float | None | str = "default", **options) -> Iterator[Track]:
    """Yield the Tracks of ``dataset`` ("mir1k", "irmas" or "stems") and ``split``, one file at a time.

    sr : sample rate in Hz (default: the dataset's STFT preset, 16 kHz).
    snr_db : voice-to-accompaniment ratio to mix at; "default" uses
        :data:`DEFAULT_SNR_DB` (0 dB for MIR-1K and IRMAS, as recorded for stems),
        None keeps the recorded levels.
    options : passed on to :func:`list_mir1k` (train_singers, validation_singers),
        :func:`irmas_pairs` (music_instruments, seed, fractions) or
        :func:`stems_pairs` (seed, fractions). For "stems", ``data_dir`` is the
        folder holding vocals/ and accompaniment/.
    """
    key = _ALIASES.get(dataset.lower().replace("-", "").replace("_", ""))
    if key is None:
        raise ValueError(f"unknown dataset '{dataset}'; use mir1k, irmas or stems")
    sr = int(sr or STFTConfig.for_dataset(key).sample_rate)
    snr = DEFAULT_SNR_DB[key] if isinstance(snr_db, str) and snr_db == "default" else snr_db
    if key == "mir1k":
        for path in list_mir1k(split, data_dir, **options):
            yield mir1k_track(path, sr, snr)
    elif key == "irmas":
        for v, m in irmas_pairs(split, data_dir, **options):
            yield irmas_track(v, m, sr, snr)
    else:
        if data_dir is None:
            raise DatasetError("stems need data_dir: the folder holding vocals/ and accompaniment/")
        for v, a in stems_pairs(data_dir, split, **options):
            yield stems_track(v, a, sr, snr)


def load_tracks(dataset: str, split: str = "train", data_dir=None, **kwargs) -> list[Track]:
    """All Tracks of ``dataset`` and ``split`` in memory; see :func:`iter_tracks`."""
    return list(iter_tracks(dataset, split, data_dir, **kwargs))


def dataset_folder(dataset: str, data_dir=None) -> Path:
    """The folder the tracks of ``dataset`` are read from (for the run's record)."""
    key = _ALIASES.get(dataset.lower().replace("-", "").replace("_", ""))
    if key == "mir1k":
        return mir1k_root(data_dir).resolve()
    if key == "irmas":
        return irmas_root(data_dir).resolve()
    if key == "stems" and data_dir is not None:
        return Path(data_dir).resolve()
    raise DatasetError(f"unknown dataset '{dataset}' or no folder for it; use mir1k, irmas or stems "
                       "(stems need --data-dir)")

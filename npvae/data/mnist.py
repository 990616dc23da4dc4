"""MNIST and Fashion-MNIST: find, download and load the four IDX files.

Each dataset lives in a folder named after it (``mnist/``, ``fashion-mnist/``)
under a data root, holding the standard file names, gzip-compressed or not::

    train-images-idx3-ubyte[.gz]   train-labels-idx1-ubyte[.gz]
    t10k-images-idx3-ubyte[.gz]    t10k-labels-idx1-ubyte[.gz]

Roots are searched in the order of :func:`npvae.datapath.data_roots`
(``data_dir``, ``$NPVAE_DATA``, the user cache), then :data:`EXTRA_DIRS`
(Debian's ``dataset-fashion-mnist`` package). A split found nowhere is
downloaded from :data:`MIRRORS` into the cache, checked against the official
MD5 of the ``.gz`` file (:data:`CHECKSUMS`) and moved into place only when good.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

from ..files.atomic import TMP_TAG, sweep_stale_temporaries
from ..datapath import ENV_VAR, cache_dir, data_roots
from ..errors import DatasetError
from .idx import read_idx

DATASETS = ("mnist", "fashion-mnist")
SPLITS = ("train", "test")
N_IMAGES = {"train": 60000, "test": 10000}
IMAGE_SHAPE = (28, 28)
N_CLASSES = 10

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# Where the official .gz files are served, tried in order. Tests point these at file:// URLs.
MIRRORS = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ],
    "fashion-mnist": [
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ],
}

# MD5 of the official .gz downloads (not of their content: other packagings differ).
CHECKSUMS = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}

# System-wide copies searched after the data roots (Debian: apt install dataset-fashion-mnist).
EXTRA_DIRS = {
    "mnist": [],
    "fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")],
}

TIMEOUT = 30.0  # seconds per connection attempt


def _check(dataset: str, split: str) -> None:
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {DATASETS}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")


def candidate_dirs(dataset: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for ``dataset``'s files, in order."""
    extra = [] if data_dir else list(EXTRA_DIRS.get(dataset, []))
    return [root / dataset for root in data_roots(data_dir)] + extra


def _find_file(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def find_files(dataset: str, split: str,
               data_dir: str | os.PathLike | None = None) -> tuple[Path, Path] | None:
    """Paths of the (images, labels) files of one split: the first folder holding both, or None."""
    _check(dataset, split)
    for folder in candidate_dirs(dataset, data_dir):
        found = [_find_file(folder, stem) for stem in FILES[split]]
        if all(found):
            return found[0], found[1]
    return None


def _half_found(dataset: str, split: str, data_dir) -> tuple[Path, list[str]] | None:
    """The first folder searched that holds some but not all of the split's files, and
    the stems of those it lacks; None when no folder holds any."""
    for folder in candidate_dirs(dataset, data_dir):
        found = [_find_file(folder, stem) for stem in FILES[split]]
        if any(found):
            return folder, [stem for stem, f in zip(FILES[split], found) if f is None]
    return None


def md5sum(path: str | os.PathLike) -> str:
    """Hex MD5 of a file's bytes."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_file(name: str, md5: str, dest_dir: str | os.PathLike, mirrors: list[str],
                  timeout: float = TIMEOUT) -> Path:
    """Download ``name`` from the first mirror that serves it with the right MD5.

    The bytes go to a temporary file in ``dest_dir`` and are moved onto
    ``dest_dir/name`` with :func:`os.replace` only once the checksum matches, so
    a failed or corrupt download never replaces (or leaves behind) a file.

    Parameters
    ----------
    name : file name, appended to each mirror's base URL (which should end in ``/``)
    md5 : expected hex MD5 of the downloaded bytes
    dest_dir : folder to put the file in (created if needed)
    mirrors : base URLs, tried in order (``https://``, ``http://`` or ``file://``)

    Raises
    ------
    DatasetError if no mirror gave a good copy; the message lists each failure.
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    failures = []
    for base in mirrors:
        url = base + name
        sweep_stale_temporaries(dest_dir)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.{os.getpid()}.", suffix=TMP_TAG + ".part", dir=dest_dir)
        try:
            h = hashlib.md5()
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                for block in iter(lambda: resp.read(1 << 16), b""):
                    h.update(block)
                    out.write(block)
            if h.hexdigest() != md5:
                failures.append(f"{url}: MD5 {h.hexdigest()} does not match the expected {md5}")
                continue
            os.replace(tmp, dest_dir / name)
            return dest_dir / name
        except (OSError, ValueError) as e:  # URLError and timeouts are OSErrors
            failures.append(f"{url}: {e}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise DatasetError(f"could not download {name} into {dest_dir}:\n  " + "\n  ".join(failures))


def download(dataset: str, split: str, dest_dir: str | os.PathLike | None = None,
             mirrors: list[str] | None = None, timeout: float = TIMEOUT) -> tuple[Path, Path]:
    """Download one split's two ``.gz`` files into ``dest_dir`` (default ``cache_dir()/dataset``).

    Files already there are kept: those with the official checksum, and any other file of
    the same name, packed or not (other packagings of the data differ in their bytes; a
    damaged file is found when it is read, whose message says to delete it). So a folder
    that lacks one file gets that file alone. Returns (images, labels) paths.
    """
    _check(dataset, split)
    dest_dir = Path(dest_dir) if dest_dir is not None else cache_dir() / dataset
    mirrors = MIRRORS[dataset] if mirrors is None else mirrors
    paths = []
    for stem in FILES[split]:
        name = stem + ".gz"
        md5 = CHECKSUMS[dataset][name]
        target = _find_file(dest_dir, stem) or dest_dir / name
        if not target.is_file():
            download_file(name, md5, dest_dir, mirrors, timeout=timeout)
        paths.append(target)
    return paths[0], paths[1]


def _missing_message(dataset: str, split: str, data_dir, reason: str) -> str:
    half = _half_found(dataset, split, data_dir)
    if half:
        has = "images" if FILES[split][0] not in half[1] else "labels"
        what = f"{half[0]} holds its {has} but not {', '.join(stem + '[.gz]' for stem in half[1])}"
    else:
        what = "missing " + ", ".join(stem + "[.gz]" for stem in FILES[split])
    looked = "\n  ".join(str(d) for d in candidate_dirs(dataset, data_dir))
    urls = ", ".join(MIRRORS[dataset])
    return (f"{dataset} {split} split not found: {what}.\nLooked in:\n  {looked}\n"
            f"{reason}\nTo fix: put the four {dataset} IDX files in a folder named '{dataset}/' under a "
            f"data root and set {ENV_VAR}=<that root> (or pass --data-dir / data_dir=<root>), or "
            f"download them by hand from {urls} into {cache_dir() / dataset}.")


def load_images(dataset: str, split: str, data_dir: str | os.PathLike | None = None,
                download: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of MNIST or Fashion-MNIST.

    Parameters
    ----------
    dataset : ``"mnist"`` or ``"fashion-mnist"``
    split : ``"train"`` (60,000 images) or ``"test"`` (10,000)
    data_dir : a data root holding ``<dataset>/``, searched first
    download : fetch the files into the cache if they are found nowhere

    Returns
    -------
    images : uint8 ndarray of shape (N, 28, 28), pixel values 0..255
    labels : uint8 ndarray of shape (N,), classes 0..9

    Raises
    ------
    DatasetError if the files are missing (and cannot be downloaded) or are corrupt.
    """
    _check(dataset, split)
    paths = find_files(dataset, split, data_dir)
    if paths is None:
        if not download:
            raise DatasetError(_missing_message(dataset, split, data_dir, "Downloading was switched off."))
        try:
            # With an explicit data folder the files go there, not into the cache.
            paths = _download(dataset, split, Path(data_dir) / dataset if data_dir else None)
        except DatasetError as e:
            raise DatasetError(_missing_message(dataset, split, data_dir,
                                                f"Downloading failed: {e}")) from None
    img_path, lab_path = paths
    fix = (f"delete it (and let npvae download it again) or put a good copy in {img_path.parent}; "
           f"see {ENV_VAR} / --data-dir")
    images = read_idx(img_path, fix=fix)
    labels = read_idx(lab_path, fix=fix)
    n = N_IMAGES[split]
    if images.dtype != np.uint8 or images.shape != (n,) + IMAGE_SHAPE:
        raise DatasetError(f"{img_path}: expected uint8 images of shape {(n,) + IMAGE_SHAPE}, "
                           f"found {images.dtype} {images.shape}; {fix}")
    if labels.dtype != np.uint8 or labels.shape != (n,):
        raise DatasetError(f"{lab_path}: expected {n} uint8 labels, found {labels.dtype} "
                           f"{labels.shape}; {fix}")
    if labels.max() >= N_CLASSES:
        raise DatasetError(f"{lab_path}: label {labels.max()} out of range 0..{N_CLASSES - 1}; {fix}")
    return images, labels


# load_images' ``download`` flag shadows the function of that name inside it.
_download = download

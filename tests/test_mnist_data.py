"""The data layer: IDX files, MNIST/Fashion-MNIST loading and download, digit/fashion mixtures."""
import gzip
import hashlib
import os

import numpy as np
import pytest

from npvae.data import mnist
from npvae.data.idx import idx_bytes, read_idx, write_idx
from npvae.data.mixtures import MixtureData, load_mixture_data, mix, to_unit
from npvae.errors import DatasetError

MNIST_TRAIN_IMAGES_MD5 = "6bbc9ace898e44ae57da46a324031adb"  # of the decompressed original release
MNIST_TRAIN_LABEL_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@pytest.fixture(scope="module")
def real(shared_data):
    """All four real splits, loaded once for this module: {(dataset, split): (images, labels)}."""
    return {(d, s): mnist.load_images(d, s, data_dir=shared_data, download=False)
            for d in mnist.DATASETS for s in mnist.SPLITS}


@pytest.fixture
def no_data(tmp_path, monkeypatch):
    """No dataset anywhere: empty NPVAE_DATA and cache, no system-wide copies."""
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("NPVAE_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(mnist, "EXTRA_DIRS", {"mnist": [], "fashion-mnist": []})
    return tmp_path


def test_data_dir_typo_is_an_error_not_a_fallback(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("NPVAE_DATA", str(shared_data))
    with pytest.raises(DatasetError, match=r"--data-dir\) does not exist; check the spelling"):
        mnist.load_images("mnist", "test", data_dir=tmp_path / "typo", download=False)
    monkeypatch.setenv("NPVAE_DATA", str(tmp_path / "typo"))
    with pytest.raises(DatasetError, match="NPVAE_DATA=.* is not a folder"):
        mnist.load_images("mnist", "test", download=False)
    monkeypatch.delenv("NPVAE_DATA")
    (tmp_path / "empty").mkdir()                      # exists but lacks mnist/: no fallback either
    with pytest.raises(DatasetError, match=str(tmp_path / "empty" / "mnist")):
        mnist.load_images("mnist", "test", data_dir=tmp_path / "empty", download=False)


# ---------------------------------------------------------------- real files

def test_real_splits_have_standard_shapes_and_labels(real):
    for (dataset, split), (images, labels) in real.items():
        n = 60000 if split == "train" else 10000
        assert images.shape == (n, 28, 28) and images.dtype == np.uint8, (dataset, split)
        assert labels.shape == (n,) and labels.dtype == np.uint8
        assert labels.min() == 0 and labels.max() == 9
        assert images.min() == 0 and images.max() == 255


def test_real_label_counts(real):
    assert np.bincount(real["mnist", "train"][1]).tolist() == MNIST_TRAIN_LABEL_COUNTS
    # Fashion-MNIST is balanced: 6,000 training and 1,000 test items per class.
    assert np.bincount(real["fashion-mnist", "train"][1]).tolist() == [6000] * 10
    assert np.bincount(real["fashion-mnist", "test"][1]).tolist() == [1000] * 10


def test_mnist_train_images_match_original_release(real, shared_data, tmp_path):
    # Re-encoding what we loaded must give back the original file byte for byte.
    assert hashlib.md5(idx_bytes(real["mnist", "train"][0])).hexdigest() == MNIST_TRAIN_IMAGES_MD5
    raw = gzip.decompress((shared_data / "mnist" / "train-images-idx3-ubyte.gz").read_bytes())
    assert hashlib.md5(raw).hexdigest() == MNIST_TRAIN_IMAGES_MD5


def test_env_var_is_searched(shared_data, monkeypatch):
    monkeypatch.setenv("NPVAE_DATA", str(shared_data))
    images, labels = mnist.load_images("mnist", "test", download=False)
    assert images.shape == (10000, 28, 28)
    assert mnist.find_files("mnist", "test")[0].parent == shared_data / "mnist"


# ---------------------------------------------------------------- IDX format

def test_idx_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    for a in (rng.integers(0, 256, (3, 4, 5), dtype=np.uint8), rng.standard_normal((2, 3)).astype(np.float32),
              np.arange(-5, 5, dtype=np.int32)):
        for name in ("a.idx", "a.idx.gz"):
            b = read_idx(write_idx(tmp_path / name, a))
            assert b.dtype == a.dtype and np.array_equal(a, b)
    assert (tmp_path / "a.idx.gz").read_bytes()[:2] == b"\x1f\x8b"


def test_truncated_idx_names_file_and_problem(tmp_path):
    images = np.zeros((10, 28, 28), np.uint8)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(images)[:-100]))
    with pytest.raises(DatasetError, match="truncated") as err:
        read_idx(path)
    assert str(path) in str(err.value) and "download" in str(err.value)
    assert isinstance(err.value, FileNotFoundError)


def test_truncated_gzip_stream(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.arange(10000, dtype=np.uint8) % 10))[:-30])
    with pytest.raises(DatasetError, match="gzip") as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_trailing_bytes_rejected(tmp_path):
    path = tmp_path / "x.idx"
    path.write_bytes(idx_bytes(np.zeros(4, np.uint8)) + b"\0\0")
    with pytest.raises(DatasetError, match="2 bytes of trailing data"):
        read_idx(path)


def test_wrong_magic_number(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(b"<!DOCTYPE html><html>Access denied</html>"))
    with pytest.raises(DatasetError, match="magic number") as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_unknown_dtype_code(tmp_path):
    path = tmp_path / "x.idx"
    path.write_bytes(bytes([0, 0, 0x07, 1]) + (3).to_bytes(4, "big") + b"abc")
    with pytest.raises(DatasetError, match="dtype code 0x07"):
        read_idx(path)


def test_wrong_shape_in_dataset_folder(tmp_path):
    # A well-formed IDX file that is not MNIST: 10,000 images of 32x32.
    folder = tmp_path / "mnist"
    folder.mkdir()
    write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((10000, 32, 32), np.uint8))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(10000, np.uint8))
    with pytest.raises(DatasetError, match=r"\(10000, 28, 28\)"):
        mnist.load_images("mnist", "test", data_dir=tmp_path, download=False)


def test_missing_dataset_message(no_data):
    with pytest.raises(DatasetError) as err:
        mnist.load_images("fashion-mnist", "train", download=False)
    msg = str(err.value)
    assert "train-images-idx3-ubyte" in msg and "train-labels-idx1-ubyte" in msg
    assert str(no_data / "data" / "fashion-mnist") in msg      # where we looked
    assert str(no_data / "cache" / "npvae" / "fashion-mnist") in msg
    assert "NPVAE_DATA" in msg and "--data-dir" in msg          # how to fix


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown dataset"):
        mnist.load_images("kmnist", "train")
    with pytest.raises(ValueError, match="unknown split"):
        mnist.load_images("mnist", "validation")


# ---------------------------------------------------------------- download

@pytest.fixture
def mirror(tmp_path):
    """A file:// mirror serving a fake MNIST test split (right sizes, all-zero pixels)."""
    root = tmp_path / "mirror"
    root.mkdir()
    labels = (np.arange(10000) % 10).astype(np.uint8)
    write_idx(root / "t10k-images-idx3-ubyte.gz", np.zeros((10000, 28, 28), np.uint8))
    write_idx(root / "t10k-labels-idx1-ubyte.gz", labels)
    md5 = {p.name: mnist.md5sum(p) for p in root.iterdir()}
    return root.as_uri() + "/", md5, labels


def test_download_file_good_checksum(mirror, tmp_path):
    url, md5, _ = mirror
    name = "t10k-labels-idx1-ubyte.gz"
    dest = tmp_path / "dest"
    bad_mirror = (tmp_path / "nowhere").as_uri() + "/"
    path = mnist.download_file(name, md5[name], dest, [bad_mirror, url])  # falls through to the good one
    assert path == dest / name and mnist.md5sum(path) == md5[name]
    assert os.listdir(dest) == [name]  # no temporary file left


def test_download_file_bad_checksum_leaves_nothing(mirror, tmp_path):
    url, md5, _ = mirror
    name = "t10k-labels-idx1-ubyte.gz"
    dest = tmp_path / "dest"
    with pytest.raises(DatasetError, match="does not match") as err:
        mnist.download_file(name, "0" * 32, dest, [url])
    assert name in str(err.value)
    assert os.listdir(dest) == []


def test_failed_download_keeps_existing_file(mirror, tmp_path):
    url, _, _ = mirror
    name = "t10k-labels-idx1-ubyte.gz"
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / name).write_bytes(b"the good copy")
    with pytest.raises(DatasetError):
        mnist.download_file(name, "0" * 32, dest, [url])
    assert (dest / name).read_bytes() == b"the good copy"
    assert os.listdir(dest) == [name]


def test_load_images_downloads_into_cache(mirror, no_data, monkeypatch):
    url, md5, labels = mirror
    monkeypatch.setitem(mnist.MIRRORS, "mnist", [url])
    monkeypatch.setitem(mnist.CHECKSUMS, "mnist", md5)
    images, got = mnist.load_images("mnist", "test")
    assert images.shape == (10000, 28, 28) and np.array_equal(got, labels)
    cache = no_data / "cache" / "npvae" / "mnist"
    assert sorted(os.listdir(cache)) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


def test_load_images_download_failure_message(no_data, monkeypatch):
    monkeypatch.setitem(mnist.MIRRORS, "mnist", [(no_data / "nowhere").as_uri() + "/"])
    with pytest.raises(DatasetError, match="Downloading failed") as err:
        mnist.load_images("mnist", "test")
    assert "t10k-images-idx3-ubyte" in str(err.value) and "NPVAE_DATA" in str(err.value)
    cache = no_data / "cache" / "npvae" / "mnist"
    assert not cache.exists() or os.listdir(cache) == []


# ---------------------------------------------------------------- mixtures

def test_mix_rules():
    d = np.array([[[0.2, 0.7]]], np.float32)
    f = np.array([[[0.6, 0.6]]], np.float32)
    avg = mix(d, f, "average")
    assert avg.dtype == np.float32 and np.allclose(avg, [[[0.4, 0.65]]])
    assert np.allclose(mix(d, f, "sum"), [[[0.8, 1.0]]])
    with pytest.raises(ValueError, match="rule"):
        mix(d, f, "max")
    with pytest.raises(ValueError, match="shape"):
        mix(d, f[..., :1])


def test_to_unit_scales_uint8():
    x = to_unit(np.array([0, 51, 255], np.uint8))
    assert x.dtype == np.float32 and np.array_equal(x, np.float32([0.0, 0.2, 1.0]))


def _tagged(n, offset):
    """n uint8 images whose constant pixel value tells which image it is."""
    return np.repeat(np.arange(offset, offset + n, dtype=np.uint8), 4).reshape(n, 2, 2)


@pytest.fixture
def small():
    # Digits tagged 0..59 (train) and 60..79 (test); fashion 100..159 and 160..179.
    return MixtureData(_tagged(60, 0), _tagged(60, 100), _tagged(20, 60), _tagged(20, 160),
                       rule="sum", seed=3, n_validation=10, n_eval=15)


def _tags(batch_images):
    return np.rint(batch_images[:, 0, 0] * 255).astype(int)


def test_batches_shapes_and_mixture(small):
    batches = list(small.batches(np.random.default_rng(0), batch_size=16))
    assert len(batches) == small.n_batches(16) == 4  # 50 pairs: 16+16+16+2
    for m, d, f in batches:
        assert m.shape == d.shape == f.shape and m.dtype == d.dtype == f.dtype == np.float32
        assert np.array_equal(m, np.clip(d + f, 0, 1)) and m.min() >= 0 and m.max() <= 1
    assert [len(b[0]) for b in batches] == [16, 16, 16, 2]
    assert len(list(small.batches(np.random.default_rng(0), 16, drop_last=True))) == small.n_batches(16, True) == 3


def test_each_epoch_pairs_afresh_and_uses_all_training_images(small):
    rng = np.random.default_rng(7)
    epochs = []
    for _ in range(2):
        digits, fashion = zip(*[(_tags(d), _tags(f)) for _, d, f in small.batches(rng, 8)])
        digits, fashion = np.concatenate(digits), np.concatenate(fashion)
        assert sorted(digits) == list(range(50))          # the 10 held-out digits never appear
        assert sorted(fashion) == list(range(100, 150))
        epochs.append(set(zip(digits, fashion)))
    assert epochs[0] != epochs[1]


def test_validation_and_evaluation_pairs_are_fixed_by_seed(small):
    val = _tags(small.validation_set()[1]), _tags(small.validation_set()[2])
    assert sorted(val[0]) == list(range(50, 60)) and sorted(val[1]) == list(range(150, 160))
    ev = small.evaluation_set()
    assert ev[0].shape == (15, 2, 2) and np.array_equal(ev[0], np.clip(ev[1] + ev[2], 0, 1))
    assert set(_tags(ev[1])) <= set(range(60, 80)) and set(_tags(ev[2])) <= set(range(160, 180))
    # Training draws do not move them, and a new object with the same seed gives the same pairs.
    list(small.batches(np.random.default_rng(1), 8))
    again = MixtureData(_tagged(60, 0), _tagged(60, 100), _tagged(20, 60), _tagged(20, 160),
                        rule="sum", seed=3, n_validation=10, n_eval=15)
    for a, b in zip(ev, again.evaluation_set()):
        assert np.array_equal(a, b)
    assert np.array_equal(small.validation_pairs()[0], again.validation_pairs()[0])
    other = MixtureData(_tagged(60, 0), _tagged(60, 100), _tagged(20, 60), _tagged(20, 160),
                        rule="sum", seed=4, n_validation=10, n_eval=15)
    assert not np.array_equal(other.evaluation_pairs()[0], again.evaluation_pairs()[0])
    assert not ev[0].flags.writeable


def test_real_mixture_data(real):
    data = MixtureData(real["mnist", "train"][0], real["fashion-mnist", "train"][0],
                       real["mnist", "test"][0], real["fashion-mnist", "test"][0])
    assert data.n_train == 55000 and data.n_batches(100) == 550
    m, d, f = data.evaluation_set()
    assert m.shape == (10000, 28, 28) and m.dtype == np.float32
    assert np.allclose(m, (d + f) / 2) and 0 <= m.min() and m.max() <= 1
    # Each test digit and each test fashion item is used exactly once.
    di, fi = data.evaluation_pairs()
    assert sorted(di) == list(range(10000)) and sorted(fi) == list(range(10000))
    v = data.validation_set()
    assert v[0].shape == (5000, 28, 28)
    assert np.array_equal(v[1], to_unit(real["mnist", "train"][0][55000:][data.validation_pairs()[0]]))


def test_load_mixture_data(shared_data):
    data = load_mixture_data(data_dir=shared_data, rule="sum", seed=1, n_eval=100, download=False)
    m, d, f = data.evaluation_set()
    assert m.shape == (100, 28, 28) and data.rule == "sum" and data.n_train == 55000
    assert np.array_equal(m, np.clip(d + f, 0, 1))

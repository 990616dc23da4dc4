"""HDF5 / MATLAB v7.3 tree files: round trip, MAT header, MATLAB attributes, clear errors."""
import h5py
import numpy as np
import pytest

from npvae.errors import FileFormatError
from npvae.files.h5mat import SCHEMA_VERSION, file_kind, matlab_name, read_tree, write_tree


def sample_tree(rng):
    return {
        "examples": {
            "mixture": rng.random((3, 28, 28), dtype=np.float32),
            "labels": np.array([7, 1, 0], dtype=np.int32),
            "mask": rng.random((3, 4)) > 0.5,
            "pixels": np.arange(12, dtype=np.uint8).reshape(3, 4),
        },
        "history": {"epoch": np.arange(1, 6, dtype=np.int64), "train_total": rng.random(5)},
        "model": {
            "spec": '{"type": "Sequential", "layers": []}',
            "layers": ["encoder.0 Dense(784, 256)", "encoder.1 ReLU()"],
            "params": {"encoder.0.W": rng.standard_normal((784, 256)).astype(np.float32),
                       "encoder.0.b": np.zeros(256, np.float32)},
        },
        "config": {"lr": 1e-3, "epochs": 20, "normalise": True, "name": "héllo wörld €",
                   "empty_text": "", "no_tags": [], "one_blank": [""], "nested": {"deeper": {"x": 1.5}}},
        "empties": {"e2": np.zeros((0, 3), np.float32), "e1": np.zeros(0, np.int32),
                    "e3": np.zeros((2, 0, 4)), "group": {}},
        "scalars": {"f32": np.float32(0.25), "i0": np.array(3, dtype=np.int16), "u64": np.uint64(2**63)},
    }


def assert_tree_equal(got, want, where="/"):
    assert isinstance(got, dict), where
    assert list(got) == list(want), where
    for key, w in want.items():
        g, here = got[key], f"{where}{key}/"
        if isinstance(w, dict):
            assert_tree_equal(g, w, here)
        elif isinstance(w, (str, list)):
            assert g == w and type(g) is type(w), here
        elif isinstance(w, np.ndarray) and w.ndim > 0:
            assert isinstance(g, np.ndarray), here
            assert g.dtype == w.dtype and g.shape == w.shape, (here, g.dtype, g.shape)
            np.testing.assert_array_equal(g, w)
        else:  # 0-d values come back as Python scalars
            assert not isinstance(g, np.ndarray) and g == w, (here, g, w)


def test_round_trip(tmp_path, rng):
    tree = sample_tree(rng)
    path = write_tree(tmp_path / "m.h5", tree, "model")
    assert_tree_equal(read_tree(path), tree)
    assert_tree_equal(read_tree(path, expected_kind=("mnist_results", "model")), tree)
    assert file_kind(path) == ("model", SCHEMA_VERSION)
    assert isinstance(read_tree(path)["config"]["epochs"], int)
    assert isinstance(read_tree(path)["config"]["normalise"], bool)


def test_subtree_and_no_temp_files_left(tmp_path, rng):
    tree = sample_tree(rng)
    write_tree(tmp_path / "m.h5", tree, "model")
    write_tree(tmp_path / "m.h5", tree, "model")  # overwrite in place
    assert [p.name for p in tmp_path.iterdir()] == ["m.h5"]
    assert_tree_equal(read_tree(tmp_path / "m.h5", subtree="model/params"), tree["model"]["params"])
    with pytest.raises(FileFormatError, match="has no 'nothing'"):
        read_tree(tmp_path / "m.h5", subtree="nothing")


def test_mat_header_and_matlab_attributes(tmp_path, rng):
    path = write_tree(tmp_path / "m.mat", sample_tree(rng), "model")
    head = path.read_bytes()[:512]
    text = head[:116].decode("ascii")
    assert text.startswith("MATLAB 7.3 MAT-file, Platform: ") and "Created on: " in text
    assert text.rstrip().endswith("HDF5 schema 1.00 .")
    assert head[116:124] == bytes(8)
    assert head[124:126] == b"\x00\x02" and head[126:128] == b"IM"
    assert path.read_bytes()[512:520] == b"\x89HDF\r\n\x1a\n"
    with h5py.File(path, "r") as f:
        assert f.userblock_size == 512
        assert f.attrs["npvae_kind"] == b"model" and f.attrs["npvae_schema_version"] == SCHEMA_VERSION
        cls = lambda p: f[p].attrs["MATLAB_class"].decode()  # noqa: E731
        assert cls("examples") == "struct" and cls("model/params") == "struct"
        assert cls("examples/mixture") == "single" and cls("history/train_total") == "double"
        assert cls("examples/labels") == "int32" and cls("examples/pixels") == "uint8"
        assert cls("examples/mask") == "logical" and f["examples/mask"].dtype == np.uint8
        # C order unchanged: MATLAB sees 28x28x3; 1-D (n,) is stored (1, n), an n-by-1 column.
        assert f["examples/mixture"].shape == (3, 28, 28)
        assert f["history/epoch"].shape == (1, 5) and f["config/lr"].shape == (1, 1)
        s = f["config/name"]
        assert cls("config/name") == "char" and s.dtype == np.uint16 and s.attrs["MATLAB_int_decode"] == 2
        assert s[()].ravel().tobytes().decode("utf-16-le") == "héllo wörld €"
        e = f["empties/e2"]
        assert e.attrs["MATLAB_empty"] == 1 and cls("empties/e2") == "single"
        assert list(e[()]) == [3, 0]  # MATLAB dims of NumPy (0, 3)
        # Names MATLAB cannot take are mangled; the original key is kept for Python.
        w = f["model/params/encoder_0_W"]
        assert w.attrs["npvae_name"] == b"encoder.0.W"
        # Octave's load reads no attributes: kind, version and manifest are datasets too.
        assert f["npvae_kind"][()].ravel().tobytes().decode("utf-16-le") == "model"
        assert f["npvae_schema_version"][()].item() == SCHEMA_VERSION
        manifest = f["npvae_manifest"][()].ravel().tobytes().decode("utf-16-le").split("\n")
        assert "/examples/mixture single 3 3 28 28" in manifest
        assert "/model/params/encoder_0_W single 2 784 256" in manifest


def test_matlab_name():
    assert matlab_name("train_total") == "train_total"
    assert matlab_name("encoder.0.W") == "encoder_0_W"
    assert matlab_name("0") == "x0" and matlab_name("_tmp") == "x_tmp" and matlab_name("") == "x"
    assert len(matlab_name("a" * 100)) == 63


def test_write_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="both map to MATLAB name 'a_b'"):
        write_tree(tmp_path / "x.h5", {"a.b": 1, "a_b": 2}, "model")
    with pytest.raises(TypeError, match="cannot store a NoneType"):
        write_tree(tmp_path / "x.h5", {"a": None}, "model")
    with pytest.raises(TypeError, match="complex128 has no MATLAB class"):
        write_tree(tmp_path / "x.h5", {"a": np.ones(2, complex)}, "model")
    with pytest.raises(ValueError, match="reserved"):
        write_tree(tmp_path / "x.h5", {"npvae_kind": "x"}, "model")
    with pytest.raises(ValueError, match="newline"):
        write_tree(tmp_path / "x.h5", {"a": ["two\nlines"]}, "model")
    with pytest.raises(ValueError, match="kind must be"):
        write_tree(tmp_path / "x.h5", {}, "Model results")
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind


def test_wrong_kind(tmp_path):
    path = write_tree(tmp_path / "r.h5", {"a": 1}, "mnist_results")
    with pytest.raises(FileFormatError, match="expected a model file, got mnist_results: .*pass the model file"):
        read_tree(path, expected_kind="model")
    with pytest.raises(FileFormatError, match="expected a model or music_results file"):
        read_tree(path, expected_kind=("model", "music_results"))


def test_newer_schema_version(tmp_path):
    path = write_tree(tmp_path / "r.h5", {"a": 1}, "model")
    with h5py.File(path, "r+") as f:
        f.attrs["npvae_schema_version"] = np.int32(SCHEMA_VERSION + 1)
    with pytest.raises(FileFormatError, match=f"schema version {SCHEMA_VERSION + 1}.*update npvae"):
        read_tree(path)


def test_plain_hdf5_is_not_an_npvae_file(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.ones(3)
    with pytest.raises(FileFormatError, match="not an npvae file"):
        read_tree(tmp_path / "other.h5")


def test_truncated_and_random_files(tmp_path, rng):
    path = write_tree(tmp_path / "m.h5", sample_tree(rng), "model")
    data = path.read_bytes()
    (tmp_path / "half.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(FileFormatError, match="half.h5 is not a readable HDF5 file"):
        read_tree(tmp_path / "half.h5")
    (tmp_path / "noise.h5").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(FileFormatError, match="noise.h5 is not a readable HDF5 file"):
        read_tree(tmp_path / "noise.h5")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_tree(tmp_path / "missing.h5")


def test_damaged_bytes_give_file_format_error_or_data(tmp_path, rng):
    """Damage anywhere past the user block: h5py's many exception types all become FileFormatError."""
    path = write_tree(tmp_path / "m.h5", {"a": {"b": rng.random((5, 5)), "s": "text", "l": ["x"]}, "c": 3}, "model")
    data = path.read_bytes()
    failures = 0
    for offset in range(512, len(data), 48):
        damaged = bytearray(data)
        damaged[offset:offset + 16] = rng.integers(0, 256, 16, dtype=np.uint8).tobytes()
        (tmp_path / "d.h5").write_bytes(bytes(damaged))
        try:
            read_tree(tmp_path / "d.h5")
        except FileFormatError:
            failures += 1
    assert failures > 0


def test_tree_reader_describes_before_reading(tmp_path, rng):
    from npvae.files.h5mat import Leaf, TreeReader
    path = write_tree(tmp_path / "m.h5", sample_tree(rng), "model")
    with TreeReader(path, expected_kind="model") as tree:
        assert tree.kind == "model" and "model/params" in tree and "nope" not in tree
        d = tree.describe("model/params")
        assert d == {"encoder.0.W": Leaf((784, 256), np.dtype(np.float32), 784 * 256 * 4),
                     "encoder.0.b": Leaf((256,), np.dtype(np.float32), 256 * 4)}
        e = tree.describe("empties")
        assert e["e2"].shape == (0, 3) and e["e2"].nbytes == 0 and e["group"] == {}
        assert tree.describe("config")["name"].shape is None            # text
        assert tree.read("model/params")["encoder.0.b"].shape == (256,)
        with pytest.raises(FileFormatError, match=r"'model' declares [\d,]+ bytes of data \(the largest, "
                                                  r"/model/params/encoder\.0\.W, 802,816\), more than the 1,000"):
            tree.read("model", max_bytes=1000)
    assert read_tree(path, subtree="model/params", max_bytes=10**6)["encoder.0.W"].shape == (784, 256)


def test_damaged_empty_convention_is_refused(tmp_path, rng):
    path = write_tree(tmp_path / "m.h5", {"e": np.zeros((0, 3), np.float32)}, "model")
    with h5py.File(path, "r+") as f:          # dims without a zero: 40000 x 20000 "empty" floats
        del f["e"]
        ds = f.create_dataset("e", data=np.array([20000, 40000], np.uint64))
        ds.attrs["MATLAB_class"] = np.bytes_("single")
        ds.attrs["MATLAB_empty"] = np.uint8(1)
    with pytest.raises(FileFormatError, match="corrupt.*MATLAB_empty"):
        read_tree(path)

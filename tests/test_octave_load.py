"""matlab/npvae_load.m under GNU Octave reads our files in NumPy's dimension order.

Octave reads the file, then saves what it got to a -v7 .mat that scipy reads back:
MATLAB x(n, i, j) is then NumPy out[n-1, i-1, j-1], so equality with the written
arrays checks the dimension order.
"""
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from npvae.files.h5mat import write_tree

OCTAVE = shutil.which("octave-cli")
MATLAB_DIR = Path(__file__).resolve().parents[1] / "matlab"
pytestmark = pytest.mark.skipif(OCTAVE is None, reason="octave-cli not on PATH")


def octave(code: str, cwd: Path) -> subprocess.CompletedProcess:
    script = f"addpath('{MATLAB_DIR}'); {code}"
    return subprocess.run([OCTAVE, "--no-gui", "--norc", "--eval", script], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_octave_reads_numpy_order(tmp_path, rng):
    images = rng.random((4, 28, 28), dtype=np.float32)
    matrix = rng.standard_normal((3, 5))
    vector = np.arange(6, dtype=np.float64) * 0.5
    tree = {"examples": {"mixture": images, "mask": images > 0.5},
            "weights": matrix, "history": {"epoch": np.arange(1, 7, dtype=np.int64), "val_total": vector},
            "epochs": 7, "name": "mnist run", "layers": ["encoder.0 Dense", "encoder.1 ReLU"],
            "params": {"encoder.0.W": matrix.astype(np.float32)}, "empty": np.zeros((0, 3))}
    write_tree(tmp_path / "r.h5", tree, "mnist_results")
    code = ("[S, info] = npvae_load('r.h5', 'mnist_results');"
            "fprintf('kind=%s version=%d\\n', info.kind, info.schema_version);"
            "fprintf('probe=%.9g\\n', S.examples.mixture(2, 3, 4));"
            "save('-v7', 'out.mat', 'S');")
    res = octave(code, tmp_path)
    assert res.returncode == 0, res.stderr
    assert "kind=mnist_results version=1" in res.stdout
    probe = float(res.stdout.split("probe=")[1].split()[0])
    assert probe == pytest.approx(float(images[1, 2, 3]), rel=1e-7)  # x(2,3,4) == x[1,2,3]

    S = scipy.io.loadmat(tmp_path / "out.mat", squeeze_me=False)["S"][0, 0]
    ex = S["examples"][0, 0]
    assert ex["mixture"].dtype == np.float32 and ex["mixture"].shape == (4, 28, 28)
    np.testing.assert_array_equal(ex["mixture"], images)
    assert ex["mask"].shape == (4, 28, 28)  # Octave saves logical as uint8 in -v7
    np.testing.assert_array_equal(ex["mask"].astype(bool), images > 0.5)
    np.testing.assert_array_equal(S["weights"], matrix)
    hist = S["history"][0, 0]
    assert hist["val_total"].shape == (6, 1)  # 1-D -> column vector
    np.testing.assert_array_equal(hist["val_total"][:, 0], vector)
    assert hist["epoch"].dtype == np.int64
    np.testing.assert_array_equal(hist["epoch"][:, 0], np.arange(1, 7))
    assert S["epochs"].shape == (1, 1) and S["epochs"][0, 0] == 7
    assert S["name"][0] == "mnist run"
    assert [c[0] for c in S["layers"][:, 0]] == ["encoder.0 Dense", "encoder.1 ReLU"]
    np.testing.assert_array_equal(S["params"][0, 0]["encoder_0_W"], matrix.astype(np.float32))
    assert S["empty"].shape == (0, 3)


def test_octave_errors_clearly(tmp_path):
    (tmp_path / "noise.h5").write_bytes(np.random.default_rng(0).integers(0, 256, 2048, np.uint8).tobytes())
    write_tree(tmp_path / "model.h5", {"a": 1}, "model")
    cases = {
        "npvae_load('missing.h5')": "npvae:fileNotFound",
        "npvae_load('noise.h5')": "npvae:notHdf5",
        "npvae_load('model.h5', 'mnist_results')": "npvae:wrongKind",
    }
    for call, ident in cases.items():
        res = octave(f"try, {call}; disp('no error'); catch err, fprintf('%s|%s\\n', err.identifier, err.message); end",
                     tmp_path)
        assert f"{ident}|" in res.stdout, (call, res.stdout, res.stderr)
    res = octave("try, npvae_load('model.h5', 'mnist_results'); catch err, disp(err.message); end", tmp_path)
    assert "expected a mnist_results file, got model" in res.stdout


def test_octave_rejects_plain_hdf5(tmp_path):
    import h5py
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["x"] = np.ones((2, 2))
    res = octave("try, npvae_load('plain.h5'); catch err, fprintf('%s|%s\\n', err.identifier, err.message); end",
                 tmp_path)
    assert "npvae:notNpvae|" in res.stdout and "not an npvae file" in res.stdout, res.stdout

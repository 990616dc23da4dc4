"""Fault cases of silent changes: one bit of a weight or of the normaliser changed on disk.
Model and results files carry HDF5's fletcher32 checksums, checkpoints a CRC-32 per array;
each is refused naming the tensor."""
import shutil
import zipfile

import h5py
import numpy as np
import pytest
from _faults import expect_error, lib_error

import npvae
from npvae.engine.checkpoint import load_checkpoint


def flipped(src, folder, dataset, name="flipped.h5"):
    """A copy of the HDF5 file ``src`` with the lowest mantissa bit of the first value of
    ``dataset`` flipped in its stored bytes."""
    with h5py.File(src, "r") as f:
        ds = f[dataset]
        offset = ds.id.get_offset() if ds.chunks is None else ds.id.get_chunk_info(0).byte_offset
    raw = bytearray(open(src, "rb").read())
    raw[offset] ^= 1
    path = folder / name
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.fault("model file", "load_model of a model file with one mantissa bit of a weight flipped",
                   "clear error")
def test_weight_bit_flipped(mnist_model, tmp_path):
    path = flipped(mnist_model, tmp_path, "/model/params/enc1_W")
    with lib_error(r"flipped\.h5: tensor model/params/enc1\.W fails its checksum"):
        npvae.load_model(path)


@pytest.mark.fault("separate", "npvae separate --model with one bit of the normaliser's mean flipped",
                   "clear error")
def test_normaliser_bit_flipped(cli, music_model, song, tmp_path):
    path = flipped(music_model, tmp_path, "/config/normalizer/mean")
    out = tmp_path / "out"
    r = cli("separate", song(), "--model", path, "--out", out, "--no-progress")
    expect_error(r, r"flipped\.h5: tensor config/normalizer/mean fails its checksum")
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.fault("model file", "load_model of a run's results.h5 with one bit of a weight flipped", "clear error")
def test_results_bit_flipped(music_run, tmp_path):
    with h5py.File(music_run / "results.h5", "r") as f:
        name = sorted(f["model/params"])[0]
    path = flipped(music_run / "results.h5", tmp_path, f"/model/params/{name}", "results.h5")
    with lib_error(r"results\.h5: tensor model/params/.* fails its checksum"):
        npvae.load_model(path)


def _rezipped(src, dst, member, edit):
    """A copy of checkpoint ``src`` whose ``member`` array is changed by ``edit`` and stored
    again, a well-formed zip (its own CRC made anew)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename == member:
                with zin.open(item) as f:
                    a = np.lib.format.read_array(f)
                edit(a)
                with zout.open(item.filename, "w") as f:
                    np.lib.format.write_array(f, a)
                continue
            zout.writestr(item, data)
    return dst


@pytest.mark.fault("checkpoint", "resume from a checkpoint whose weight lost one mantissa bit (re-zipped)",
                   "clear error")
def test_checkpoint_array_changed(cli, music_run, music_args, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(music_run, d)
    with zipfile.ZipFile(d / "checkpoint.npz") as z:
        member = sorted(n for n in z.namelist() if n.startswith("a/model/"))[0]
    src = d / "checkpoint.npz"
    shutil.move(src, tmp_path / "good.npz")
    _rezipped(tmp_path / "good.npz", src, member, lambda a: a.reshape(-1).view(np.uint32).__ixor__(1))
    name = member[2:-4]
    r = cli("train", "music", *music_args(d, 2), "--resume")
    expect_error(r, rf"checkpoint\.npz: array {name.replace('.', '[.]')} fails its checksum")


@pytest.mark.fault("checkpoint", "load_checkpoint of a checkpoint with a bit flipped in a stored array",
                   "clear error")
def test_checkpoint_raw_bit_flipped(music_run, tmp_path):
    path = tmp_path / "checkpoint.npz"
    shutil.copy(music_run / "checkpoint.npz", path)
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.startswith("a/model/"))
    raw = bytearray(path.read_bytes())
    at = info.header_offset         # the local header: 30 bytes, then the name and the extra field
    start = at + 30 + int.from_bytes(raw[at + 26:at + 28], "little") + int.from_bytes(raw[at + 28:at + 30], "little")
    raw[start + info.compress_size // 2] ^= 1           # a bit inside the array's stored bytes
    path.write_bytes(bytes(raw))
    with lib_error(rf"checkpoint\.npz.*{info.filename[2:-4].replace('.', '[.]')}"):
        load_checkpoint(path)

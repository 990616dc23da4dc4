"""200 randomly damaged model files: each loads and separates into finite output, or is
refused with an error that names the file; none takes more than 1 GB or 10 s.

The damaged files come from seven small real model files built here (a Part I dense VAE,
a Part I U-Net VAE, a Part II separator, a Part II separator of two stacked hourglasses
with BatchNorm, the same stored with int8 weights and their scales, a convolutional stack with BatchNorm and GroupNorm, trained a few steps
so that its running statistics hold values, and a bare layer stack of residual,
concatenation, pooling, dropout and upsampling blocks), seeded.
A bare layer stack has no input contract in its file: it runs a batch of (N, 1, 28, 28)
images, and an edited geometry that no longer fits them (a pooling kernel larger than the
map, branches of different sizes) may instead be refused by the forward pass with a
ValueError naming the layer and the shapes. Damages: flipped bits in a tensor's stored bytes, flipped exponent bits, NaN/inf values, a zero or NaN normaliser, truncated
files and tensors, edited specs (other sizes, huge sizes, deep nesting, wrong types,
damaged JSON), wrong dtypes, huge declared shapes, damaged STFT settings, damaged or
stray int8 scales.

Each file is loaded in a subprocess (four of them, 50 files each, every file timed). A
child first loads and runs the three intact models (so that kernels are compiled and
thread pools started), then limits its address space (RLIMIT_AS) to what it holds then
plus 1 GiB: a file that needs more fails its load with MemoryError, which counts as a
failure here. A file gets 10 s (an interval timer); a child that dies or hangs fails the
test naming the file it was on.
"""
import copy
import json
import shutil
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from npvae.files import h5mat
from npvae.audio.stft import STFTConfig
from npvae.files.model_file import save_model, save_separator
from npvae.layers import (AvgPool2d, Concat, Conv2d, Dropout, Identity, LeakyReLU, MaxPool2d, Residual, Sequential,
                          Upsample)
from npvae.models.mnist import build_model
from npvae.models.music import SpectrogramUNetVAE
from npvae.models.stacked import StackedSpectrogramUNetVAE
from npvae.separation.separator import Normalizer, Separator

N_FILES = 200
PER_CHILD = 50
SECONDS = 10
EXTRA_BYTES = 1 << 30

pytestmark = pytest.mark.slow

CHILD = r"""
import json, resource, signal, sys, time
import numpy as np
import npvae
from npvae.errors import NpvaeError

cases, results, bases = json.loads(open(sys.argv[1]).read()), open(sys.argv[2], "w"), json.loads(sys.argv[3])
AUDIO = (0.1 * np.random.default_rng(0).standard_normal(4000)).astype(np.float32)
MIX = np.random.default_rng(1).uniform(size=(4, 28, 28)).astype(np.float32)

class Timeout(Exception):
    pass

class InputRefused(Exception):
    pass

def on_alarm(*_):
    raise Timeout()

def use(path):
    obj = npvae.load_model(path)
    if hasattr(obj, "stft_cfg"):
        outs = [obj.separate(AUDIO, 8000)]
    elif hasattr(obj, "separate"):
        outs = list(obj.separate(MIX))
    else:                                  # a bare layer stack (the norm layers, the blocks)
        try:
            outs = [obj.forward(MIX[:, None])]
        except ValueError as e:
            raise InputRefused(str(e)) from None
    return all(np.isfinite(o).all() for o in outs)

for path in bases:                       # kernels compiled, threads started: then the limit
    assert use(path), path
vm = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmSize"))
resource.setrlimit(resource.RLIMIT_AS, (vm + int(sys.argv[4]), resource.getrlimit(resource.RLIMIT_AS)[1]))
signal.signal(signal.SIGALRM, on_alarm)
for case in cases:
    path = case["path"]
    results.write(json.dumps({"start": path}) + "\n")
    results.flush()
    t = time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, float(sys.argv[5]))
    try:
        outcome = "finite output" if use(path) else "NON-FINITE OUTPUT"
    except Timeout:
        outcome = "TIMEOUT"
    except MemoryError:
        outcome = "MORE THAN THE MEMORY LIMIT"
    except InputRefused as e:
        named = any(name in str(e) for name in ("Conv2d", "Pool2d", "Upsample", "Residual", "Concat", "Dropout"))
        outcome = "input refused" if named else f"INPUT REFUSED UNCLEARLY: {e}"
    except (NpvaeError, ValueError, OSError) as e:
        outcome = "refused" if path in str(e) else f"UNNAMED FILE: {type(e).__name__}: {e}"
    except Exception as e:
        outcome = f"UNCLEAR {type(e).__name__}: {e}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    results.write(json.dumps({"path": path, "outcome": outcome[:400], "seconds": time.perf_counter() - t}) + "\n")
    results.flush()
"""


# -- the intact files ------------------------------------------------------------------------
def base_files(folder):
    rng = np.random.default_rng(0)
    dense = build_model("dense", rng=rng, hidden=(16, 8), latent_dim=4)
    unet = build_model("unet", rng=rng, channels=(4, 4, 8), latent_dim=4)
    model = SpectrogramUNetVAE(channels=(4, 4, 8), latent_channels=4, rng=rng)
    norm = Normalizer(mean=rng.uniform(-1, 1, 128), std=rng.uniform(0.5, 2, 128), mag_scale=0.7)
    sep = Separator(model, STFTConfig(sample_rate=8000, n_fft=256, hop=64), norm)
    stacked = StackedSpectrogramUNetVAE(2, channels=(4, 4, 8), latent_channels=2, norm="batch", rng=rng)
    for _ in range(2):      # running statistics away from their initial values
        stacked.forward(rng.standard_normal((2, 1, 128, 16)).astype(np.float32))
    stacked_sep = Separator(stacked.eval(), sep.stft_cfg, norm)
    stacked_int8 = Separator(StackedSpectrogramUNetVAE(2, channels=(4, 8, 16), latent_channels=2, norm="batch",
                                                       rng=rng).eval(), sep.stft_cfg, norm)
    blocks = Sequential(
        Conv2d(1, 4, 3, padding=1, rng=rng),
        Residual(Sequential(Conv2d(4, 4, 3, padding=1, rng=rng), LeakyReLU(0.2), Dropout(0.3, channels=True),
                            Conv2d(4, 4, 3, padding=1, rng=rng))),
        Concat(Identity(), Sequential(MaxPool2d(2), Conv2d(4, 4, 3, padding=1, rng=rng), Dropout(0.2),
                                      Upsample(size=(28, 28), mode="bilinear"))),
        AvgPool2d(2), Upsample(scale_factor=2), Conv2d(8, 2, 1, rng=rng))
    return {"norm": save_model(folder / "norm.h5", _norm_stack(rng), {"model": "norm"}),
            "blocks": save_model(folder / "blocks.h5", blocks),
            "dense": save_model(folder / "dense.h5", dense, {"model": "dense"}),
            "unet": save_model(folder / "unet.h5", unet, {"model": "unet"}),
            "separator": save_separator(folder / "separator.h5", sep, {"epochs": 0}),
            "stacked": save_separator(folder / "stacked.h5", stacked_sep, {"epochs": 0}),
            "quantized": save_separator(folder / "quantized.h5", stacked_int8, {"epochs": 0}, quantize="int8")}


def _norm_stack(rng):
    from npvae.layers import BatchNorm, Conv2d, ConvTranspose2d, GroupNorm, LeakyReLU, ReLU, Sequential
    model = Sequential(Conv2d(1, 4, 3, padding=1, bias=False, rng=rng), BatchNorm(4), ReLU(),
                       Conv2d(4, 4, 3, stride=2, padding=1, rng=rng), GroupNorm(2, 4), LeakyReLU(0.2),
                       ConvTranspose2d(4, 2, 4, stride=2, padding=1, bias=False, rng=rng), BatchNorm(2, momentum=0.5))
    for _ in range(3):
        model.forward(rng.uniform(size=(4, 1, 28, 28)).astype(np.float32))
    return model


def _fields(rng, spec, kind):
    """The spec record a spec damage edits: for the layer stack one of its norm layers."""
    if kind != "norm":
        return spec
    return _pick(rng, [layer for layer in spec["layers"] if "Norm" in layer["type"]])


# -- damages: each (rng, src, dst, kind) writes dst and returns what it did ---------------------
def _tensors(path):
    with h5py.File(path, "r") as f:
        return sorted(f["model/params"])


def _pick(rng, items):
    return items[int(rng.integers(len(items)))]


def _stored(ds) -> tuple[int, int]:
    """(file offset, bytes) of a dataset's stored data (of its first chunk when chunked)."""
    if ds.chunks is None:
        return ds.id.get_offset(), ds.id.get_storage_size()
    info = ds.id.get_chunk_info(0)
    return info.byte_offset, info.size


def flip_stored_bits(rng, src, dst, kind):
    shutil.copyfile(src, dst)
    name = _pick(rng, _tensors(src))
    with h5py.File(src, "r") as f:
        offset, size = _stored(f["model/params/" + name])
    raw = bytearray(dst.read_bytes())
    n = int(rng.integers(1, 17))
    for _ in range(n):
        bit = int(rng.integers(size * 8))
        raw[offset + bit // 8] ^= 1 << (bit % 8)
    dst.write_bytes(bytes(raw))
    return f"{n} bits flipped in {name}"


def _is_int8(src, name) -> bool:
    with h5py.File(src, "r") as f:
        return f["model/params/" + name].dtype == np.int8


def _edit_tensor(src, dst, name, edit, group="model/params/"):
    shutil.copyfile(src, dst)
    with h5py.File(dst, "r+") as f:
        ds = f[group + name]
        a = ds[()]
        edit(a)
        ds[...] = a


def flip_exponents(rng, src, dst, kind):
    name, bit = _pick(rng, _tensors(src)), int(rng.integers(23, 31))
    share = float(rng.uniform(0, 1))

    def edit(a):
        u = a.view(np.uint8) if a.dtype == np.int8 else a.view(np.uint32)   # int8 codes: any bit
        chosen = rng.uniform(size=u.shape) < share
        chosen.flat[0] = True
        u[chosen] ^= u.dtype.type(1 << (bit % (8 * u.itemsize)))
    _edit_tensor(src, dst, name, edit)
    return f"exponent bit {bit} flipped in {share:.0%} of {name}"


def non_finite(rng, src, dst, kind):
    name, value = _pick(rng, _tensors(src)), _pick(rng, [np.nan, np.inf, -np.inf])

    def edit(a):
        a.flat[rng.integers(a.size, size=int(rng.integers(1, 4)))] = value
    if _is_int8(src, name):             # int8 codes hold no NaN: their scales can
        _edit_tensor(src, dst, name, edit, "model/param_scales/")
        return f"{value} in the scales of {name}"
    _edit_tensor(src, dst, name, edit)
    return f"{value} in {name}"


def truncate_file(rng, src, dst, kind):
    raw = src.read_bytes()
    keep = int(len(raw) * rng.uniform(0.02, 0.995))
    dst.write_bytes(raw[:keep])
    return f"file cut to {keep} of {len(raw)} bytes"


def rebuilt(src, dst, name=None, make=None, extra=None, target=None):
    """A copy of ``src`` object by object, tensor ``name`` (or the dataset at ``target``)
    replaced by ``make(group, key, old)`` and ``extra(file)`` run at the end (deleting a
    link from a creation-ordered group would hide the replacement)."""
    target = target or f"/model/params/{name}"

    def copy(s, d):
        for k, v in s.attrs.items():
            d.attrs[k] = v
        for key, obj in s.items():
            if isinstance(obj, h5py.Group):
                copy(obj, d.create_group(key, track_order=True))
            elif obj.name == target:
                new = make(d, key, obj)
                for k, v in obj.attrs.items():
                    new.attrs[k] = v
            else:
                s.copy(obj, d, key)
    with h5py.File(src, "r") as s, h5py.File(dst, "w", track_order=True) as d:
        copy(s, d)
        if extra is not None:
            extra(d)


def truncate_tensor(rng, src, dst, kind):
    name = _pick(rng, _tensors(src))

    def make(group, key, old):
        a = old[()]
        return group.create_dataset(key, data=a[: max(1, a.shape[0] // 2)] if a.shape[0] > 1 else a.ravel()[:1])
    rebuilt(src, dst, name, make)
    return f"{name} cut in half"


def wrong_dtype(rng, src, dst, kind):
    name, dtype = _pick(rng, _tensors(src)), _pick(rng, ["int32", "uint8", "float16", "float64", "complex64", "bool"])
    rebuilt(src, dst, name, lambda g, k, old: g.create_dataset(k, data=old[()].astype(dtype)))
    return f"{name} stored as {dtype}"


def huge_declared(rng, src, dst, kind):
    name = _pick(rng, _tensors(src))
    shape = _pick(rng, [(40000, 20000), (10**6, 10**6), (1000, 1000, 1000)])
    chunks = (1000,) * (len(shape) - 1) + (100,)
    rebuilt(src, dst, name, lambda g, k, old: g.create_dataset(k, shape=shape, dtype=np.float32, chunks=chunks,
                                                               compression="gzip"))
    return f"{name} declares {shape}"


def huge_config(rng, src, dst, kind):
    def extra(f):
        f["config"].create_dataset("junk", shape=(40000, 20000), dtype=np.float64, chunks=(1000, 1000),
                                   compression="gzip")
    rebuilt(src, dst, extra=extra)
    return "a (40000, 20000) float64 dataset in /config"


_TREES = {}


def _tree_edit(src, dst, edit):
    if src not in _TREES:
        _TREES[src] = h5mat.read_tree(src)
    tree = copy.deepcopy(_TREES[src])
    edit(tree)
    h5mat.write_tree(dst, tree, kind="model")


SIZE_KEYS = {"dense": ["hidden", "latent_dim"], "unet": ["channels", "latent_dim", "blocks", "norm_bias"],
             "separator": ["channels", "latent_channels", "n_sources", "kernel_size"],
             "stacked": ["stacks", "channels", "latent_channels", "n_sources", "kernel_size", "norm_bias"],
             "quantized": ["stacks", "channels", "latent_channels", "n_sources", "kernel_size"],
             "norm": ["num_features", "num_groups", "num_channels", "eps", "momentum"],
             "blocks": ["layers.0.out_channels", "layers.1.body.layers.2.p", "layers.2.axis", "layers.3.kernel_size",
                        "layers.2.branches.1.layers.0.kernel_size", "layers.2.branches.1.layers.3.size",
                        "layers.4.scale_factor", "layers.3.padding", "layers.2.branches.1.layers.0.stride",
                        "layers.0.bias"]}


def _field(spec, key):
    """The dict that holds the (dotted) ``key`` of a spec, and the key's last name."""
    *path, last = key.split(".")
    for k in path:
        spec = spec[int(k)] if isinstance(spec, list) else spec[k]
    return spec, last


def _resized(rng, value, huge):
    pick = (lambda: int(_pick(rng, [40000, 10**6, 10**12]))) if huge else (lambda: int(rng.integers(1, 20)))
    if isinstance(value, list):
        return [pick() for _ in range(len(value) + int(rng.integers(-1, 2)))] or [pick()]
    return pick()


def spec_sizes(rng, src, dst, kind, huge=False):
    key = _pick(rng, SIZE_KEYS[kind])

    def edit(tree):
        spec = json.loads(tree["model"]["spec"])
        holder, name = _field(_fields(rng, spec, kind), key)
        holder[name] = _resized(rng, holder.get(name, 1), huge)
        tree["model"]["spec"] = json.dumps(spec)
        edit.did = f"spec {key} = {holder[name]}"
    _tree_edit(src, dst, edit)
    return edit.did


def spec_huge(rng, src, dst, kind):
    return spec_sizes(rng, src, dst, kind, huge=True)


def spec_deep(rng, src, dst, kind):
    depth = int(_pick(rng, [40, 1000, 50_000]))

    def edit(tree):
        spec = tree["model"]["spec"]
        if rng.uniform() < 0.5:
            text = '{"type": "Sequential", "layers": [' * depth + spec + "]}" * depth
        else:
            key = _pick(rng, SIZE_KEYS[kind])
            text = spec[:-1] + f', "{key}": ' + "[" * depth + "1" + "]" * depth + "}"
        tree["model"]["spec"] = text
    _tree_edit(src, dst, edit)
    return f"spec nested {depth} deep"


def spec_types(rng, src, dst, kind):
    def edit(tree):
        spec = json.loads(tree["model"]["spec"])
        key = _pick(rng, [*SIZE_KEYS[kind], "type", "output", "rule", "alpha"])
        holder, name = _field(_fields(rng, spec, kind), key)
        holder[name] = _pick(rng, ["abc", 1.5, None, True, {"a": 1}, [], -3, 0, float("nan"), 1e300, [1.5, "x"]])
        tree["model"]["spec"] = json.dumps(spec)
        edit.did = f"spec {key} = {holder[name]!r}"
    _tree_edit(src, dst, edit)
    return edit.did


def spec_text(rng, src, dst, kind):
    def edit(tree):
        spec = tree["model"]["spec"]
        choice = int(rng.integers(5))
        tree["model"]["spec"] = [spec[: int(rng.integers(len(spec)))], '{"type": "Nope"}', "[1, 2]", "",
                                 spec.replace("{", '{"extra": 1, ', 1)][choice]
        edit.did = f"spec text damage {choice}"
    _tree_edit(src, dst, edit)
    return edit.did


def tensor_set(rng, src, dst, kind):
    def edit(tree):
        params = tree["model"]["params"]
        if rng.uniform() < 0.5:
            name = _pick(rng, sorted(params))
            params.pop(name)
            edit.did = f"{name} removed"
        else:
            params["extra.W"] = np.zeros((3, 3), np.float32)
            edit.did = "a tensor added"
    _tree_edit(src, dst, edit)
    return edit.did


def model_dtype(rng, src, dst, kind):
    value = _pick(rng, ["int8", "float16", "abc", 5, "complex64"])
    _tree_edit(src, dst, lambda t: t["model"].__setitem__("dtype", value))
    return f"model dtype {value!r}"


SEPARATORS = ("separator", "stacked", "quantized")


def normaliser(rng, src, dst, kind):
    if kind not in SEPARATORS:
        return non_finite(rng, src, dst, kind)
    key, value = _pick(rng, [("std", 0.0), ("std", -1.0), ("std", np.nan), ("mean", np.inf), ("mag_scale", 0.0),
                             ("mag_scale", np.nan), ("power", -1.0), ("compression", "cubic")])

    def edit(tree):
        norm = tree["config"]["normalizer"]
        if isinstance(norm[key], np.ndarray):
            norm[key][rng.integers(norm[key].size, size=int(rng.integers(1, 129)))] = value
        else:
            norm[key] = value
    _tree_edit(src, dst, edit)
    return f"normaliser {key} = {value}"


def stft_settings(rng, src, dst, kind):
    if kind not in SEPARATORS:
        return wrong_dtype(rng, src, dst, kind)
    key, value = _pick(rng, [("sample_rate", 0), ("sample_rate", 10**12), ("sample_rate", "abc"), ("n_fft", 3),
                             ("n_fft", 2**40), ("hop", 0), ("hop", 10**6), ("window", "nope"), ("n_fft", 512)])
    _tree_edit(src, dst, lambda t: t["config"].__setitem__(key, value))
    return f"STFT {key} = {value!r}"


def scales(rng, src, dst, kind):
    """The int8 weights' scales damaged (a file without them gets a stray one)."""
    def edit(tree):
        model = tree["model"]
        table = model.get("param_scales")
        if not table:
            name = _pick(rng, sorted(model["params"]))
            model["param_scales"] = {name: np.ones(np.shape(model["params"][name])[:1], np.float32)}
            edit.did = f"a scale for the float tensor {name}"
            return
        name = _pick(rng, sorted(table))
        how = _pick(rng, ["zero", "negative", "huge", "removed", "longer", "text", "stray"])
        s = np.array(table[name], np.float32)
        if how == "removed":
            table.pop(name)
        elif how == "longer":
            table[name] = np.concatenate([s, s[:1]])
        elif how == "text":
            table[name] = "0.5"
        elif how == "stray":
            table["extra.W"] = s
        else:
            s[int(rng.integers(s.size))] = {"zero": 0.0, "negative": -0.01, "huge": 1e30}[how]
            table[name] = s
        edit.did = f"scales of {name}: {how}"
    _tree_edit(src, dst, edit)
    return edit.did


DAMAGES = [flip_stored_bits, flip_exponents, non_finite, truncate_file, truncate_tensor, wrong_dtype, huge_declared,
           huge_config, spec_sizes, spec_huge, spec_deep, spec_types, spec_text, tensor_set, model_dtype, normaliser,
           stft_settings, scales]


KINDS = ("dense", "unet", "separator", "stacked", "quantized", "norm", "blocks")


def make_case(i, rng, folder, bases) -> dict:
    """Damaged file number ``i``: the models take turns, each going through every damage."""
    kind = KINDS[i % len(KINDS)]
    damage = DAMAGES[(i // len(KINDS)) % len(DAMAGES)]
    path = folder / f"damaged_{i:03d}_{kind}.h5"
    did = damage(rng, bases[kind], path, kind)
    return {"path": str(path), "kind": kind, "damage": f"{damage.__name__}: {did}"}


# -- the test ------------------------------------------------------------------------------------
def test_damaged_model_files_load_correctly_or_are_refused_naming_the_file(tmp_path):
    bases = base_files(tmp_path)
    rng, cases, children = np.random.default_rng(2024), [], []
    for k in range(0, N_FILES, PER_CHILD):      # a child starts while the next batch is made
        batch = [make_case(i, rng, tmp_path, bases) for i in range(k, min(N_FILES, k + PER_CHILD))]
        cases += batch
        (tmp_path / f"cases{k}.json").write_text(json.dumps(batch))
        argv = [sys.executable, "-c", CHILD, str(tmp_path / f"cases{k}.json"), str(tmp_path / f"results{k}.jsonl"),
                json.dumps([str(p) for p in bases.values()]), str(EXTRA_BYTES), str(SECONDS)]
        children.append((k, subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    problems, outcomes, started = [], {}, time.monotonic()
    for k, child in children:
        try:
            _, err = child.communicate(timeout=max(1.0, PER_CHILD * SECONDS - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            child.kill()
            _, err = child.communicate()
        lines = [json.loads(line) for line in (tmp_path / f"results{k}.jsonl").read_text().splitlines()
                 if line.endswith("}")] if (tmp_path / f"results{k}.jsonl").exists() else []
        done = {r["path"]: r for r in lines if "outcome" in r}
        outcomes.update(done)
        if child.returncode != 0:
            last = [r["start"] for r in lines if "start" in r and r["start"] not in done]
            problems.append(f"child {k} ended with status {child.returncode} on {last or 'start-up'}: {err[-800:]}")
    damage = {c["path"]: c["damage"] for c in cases}
    for path, r in outcomes.items():
        if r["outcome"] not in ("refused", "finite output", "input refused") or r["seconds"] > SECONDS:
            problems.append(f"{damage[path]} ({path.rsplit('/', 1)[-1]}): {r['outcome']} after {r['seconds']:.1f} s")
    counts = {o: sum(r["outcome"] == o for r in outcomes.values()) for o in ("refused", "finite output")}
    assert len({c["damage"].split(":")[0] for c in cases}) == len(DAMAGES)
    assert not problems, f"{len(problems)} of {N_FILES} damaged files went wrong:\n" + "\n".join(problems[:20])
    assert len(outcomes) == N_FILES, (len(outcomes), counts)
    assert counts["refused"] > N_FILES // 2, counts


# -- declared sizes and checksums, case by case -------------------------------------------------
@pytest.fixture(scope="module")
def separator_file(tmp_path_factory):
    return base_files(tmp_path_factory.mktemp("bases"))["separator"]


def _refused(path, match):
    """Loading ``path`` raises a FileFormatError matching ``match`` (naming the file), cheaply."""
    import tracemalloc

    import npvae
    from npvae.errors import FileFormatError
    tracemalloc.start()
    try:
        with pytest.raises(FileFormatError, match=match) as info:
            npvae.load_model(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(path) in str(info.value) and peak < 100e6, (str(info.value), peak)


REDECLARED = [("/model/params/dec1_W", r"dec1\.W has shape \(2147483648, 1\)"),
              ("/model/params/dec1_b", r"dec1\.b has shape \(2147483648, 1\)"),     # its npvae_shape says (2,)
              ("/config/normalizer/mean", r"normalizer\.mean has shape \(2147483648, 1\)")]


@pytest.mark.parametrize("target, match", REDECLARED, ids=[t for t, _ in REDECLARED])
def test_a_tensor_redeclared_as_8_gb_is_refused_before_it_is_read(tmp_path, separator_file, target, match):
    path = tmp_path / "redeclared.h5"
    rebuilt(separator_file, path, make=lambda g, k, old: g.create_dataset(k, shape=(2**31, 1), dtype=np.float32,
                                                                           chunks=(1 << 20, 1)), target=target)
    assert path.stat().st_size < 1e6
    _refused(path, match)


FLIPPED = [("/model/params/dec1_W", r"tensor model/params/dec1\.W fails its checksum"),
           ("/config/normalizer/mean", r"tensor config/normalizer/mean fails its checksum")]


@pytest.mark.parametrize("target, match", FLIPPED, ids=[t for t, _ in FLIPPED])
def test_one_flipped_mantissa_bit_is_refused_naming_the_tensor(tmp_path, separator_file, target, match):
    with h5py.File(separator_file, "r") as f:
        offset, _ = _stored(f[target])
        assert f[target].dtype == np.float32 and f[target].fletcher32
    raw = bytearray(separator_file.read_bytes())
    raw[offset] ^= 1                    # the lowest mantissa bit of the first value (little-endian)
    path = tmp_path / "flipped.h5"
    path.write_bytes(bytes(raw))
    _refused(path, match)


# -- the recurrent layers' fields ------------------------------------------------------------------
RECURRENT_FIELDS = ["input_size", "hidden_size", "num_layers", "bidirectional"]


def recurrent_spec(rng, src, dst, kind):
    """An LSTM's or GRU's field of a recurrent model's spec set to another size or type."""
    def edit(tree):
        spec = json.loads(tree["model"]["spec"])
        index, key = _pick(rng, [1, 3]), _pick(rng, RECURRENT_FIELDS)
        spec["layers"][index][key] = _pick(rng, [int(rng.integers(1, 9)), 40000, 10**6, 10**12, "abc", 1.5, None,
                                                 not spec["layers"][index].get(key), {"a": 1}, [], -3, 0, 1e300])
        tree["model"]["spec"] = json.dumps(spec)
        edit.did = f"spec layers.{index}.{key} = {spec['layers'][index][key]!r}"
    _tree_edit(src, dst, edit)
    return edit.did


# (no huge_declared: in this process, without the children's memory limit, a huge vector is
# read before it is refused)
RECURRENT_DAMAGES = [recurrent_spec, flip_exponents, non_finite, truncate_tensor, wrong_dtype, tensor_set,
                     flip_stored_bits, recurrent_spec]


def test_damaged_recurrent_model_files_load_correctly_or_are_refused_naming_the_file(tmp_path):
    """40 damaged files of a model with an LSTM and a GRU (their fields and tensors), loaded
    in this process: each gives finite output or a FileFormatError naming the file."""
    import npvae
    from npvae.errors import FileFormatError
    from npvae.layers import GRU, LSTM, Dense, FromSequence, Sequential, ToSequence
    rng = np.random.default_rng(7)
    model = Sequential(ToSequence(), LSTM(6, 4, num_layers=2, bidirectional=True, rng=rng), Dense(8, 6, rng=rng),
                       GRU(6, 3, rng=rng), Dense(3, 6, rng=rng), FromSequence(2, 3))
    base = save_model(tmp_path / "recurrent.h5", model, {"model": "recurrent"})
    x = rng.standard_normal((2, 2, 3, 5)).astype(np.float32)
    problems, outcomes = [], []
    for i in range(40):
        damage = RECURRENT_DAMAGES[i % len(RECURRENT_DAMAGES)]
        path = tmp_path / f"damaged_{i:02d}.h5"
        did = f"{damage.__name__}: {damage(rng, base, path, 'recurrent')}"
        t = time.perf_counter()
        try:
            outcome = "finite output" if np.isfinite(npvae.load_model(path).forward(x)).all() else "NON-FINITE"
        except FileFormatError as e:
            outcome = "refused" if str(path) in str(e) else f"UNNAMED FILE: {e}"
        except Exception as e:
            outcome = f"UNCLEAR {type(e).__name__}: {e}"
        outcomes.append(outcome)
        if outcome not in ("refused", "finite output") or time.perf_counter() - t > SECONDS:
            problems.append(f"{did}: {outcome[:300]} after {time.perf_counter() - t:.1f} s")
    assert not problems, "\n".join(problems)
    assert outcomes.count("refused") > 20, outcomes

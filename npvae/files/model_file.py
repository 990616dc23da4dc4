"""Model and results files: HDF5 that is also a MATLAB v7.3 MAT-file.

The layout is the one documented in ``docs/hdf5_schema.md``:

* a **model file** (kind ``model``) holds ``/model`` (the JSON ``spec`` that rebuilds
  the architecture, a readable ``layers`` list, ``dtype``, ``latent_dim`` and one
  dataset per parameter under ``/model/params``) and ``/config``;
* a **results file** (kinds ``mnist_results``, ``music_results``, ``blind_results``) adds ``/history``,
  ``/metrics`` and ``/examples``, and also carries ``/model``, so it loads as a model.

A music model is stored with its :class:`~npvae.separation.separator.Separator` settings (STFT and
normaliser, :meth:`~npvae.separation.separator.Separator.config`) in ``/config`` and comes back as a
Separator; a blind music model likewise comes back as a
:class:`~npvae.separation.blind_separator.BlindMusicSeparator`. :func:`resolve_model_path` is the one
place that turns a run directory into its file; :func:`read_model_file` also reads a
training checkpoint (``checkpoint.npz``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from . import h5mat, modelcheck
from .quantize import QUANTIZATIONS, check_scales, dequantize, quantize_int8
from .. import models, pretrained   # importing models registers their classes with build_layer
from ..engine.checkpoint import CHECKPOINT_FILE, load_checkpoint, model_state
from ..errors import FileFormatError, ModelNotFoundError
from ..layers.base import Layer, build_layer
from ..models.stacked import MASK_NETWORKS
from ..separation.blind_separator import BlindMusicSeparator, is_blind_music
from ..separation.separator import Separator

MODEL_FILE = "model.h5"
RESULTS_FILE = "results.h5"
MODEL_KINDS = ("model", "mnist_results", "music_results", "blind_results")


def layer_lines(model: Layer) -> list[str]:
    """One line per sub-layer in forward order: ``<path> <Type> key=value ...``."""
    return [f"{path} {type(layer).__name__} " + " ".join(f"{k}={v}" for k, v in layer.hyper().items())
            for path, layer in model.named_layers() if path]


def model_tree(model: Layer, quantize: str | None = None) -> dict:
    """The ``/model`` group of the schema for ``model``; with ``quantize="int8"`` its weights
    as int8 codes and ``param_scales`` (:mod:`npvae.files.quantize`)."""
    tree = {"type": type(model).__name__, "spec": json.dumps(model.spec()), "layers": layer_lines(model),
            "dtype": str(model.dtype), "params": model.state_dict()}
    if quantize is not None:
        check_quantization(quantize)
        tree["params"], tree["param_scales"] = quantize_int8(tree["params"])
    latent = getattr(model, "latent_dim", getattr(model, "latent_channels", None))
    if latent is not None:
        tree["latent_dim"] = int(latent)
    return tree


def config_tree(config: dict | None) -> dict:
    """``config`` with None dropped, paths as text and sequences as arrays (HDF5-ready)."""
    out = {}
    for key, value in (config or {}).items():
        if value is None:
            continue
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, dict):
            value = config_tree(value)
        elif isinstance(value, (list, tuple)):
            value = [str(v) for v in value] if value and all(isinstance(v, str) for v in value) else np.asarray(value)
        out[key] = value
    return out


def history_tree(history: dict) -> dict:
    """Per-epoch lists as 1-D arrays (``epoch`` as int64, the rest float64)."""
    return {k: np.asarray(v, np.int64 if k == "epoch" else np.float64) for k, v in history.items()}


def check_quantization(quantize) -> str:
    """``quantize`` checked: one of :data:`~npvae.files.quantize.QUANTIZATIONS`."""
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS} (or None for float weights), got {quantize!r}")
    return quantize


def save_model(path, model: Layer, config: dict | None = None, quantize: str | None = None) -> Path:
    """Write a model file (kind ``model``) atomically; ``quantize="int8"`` stores its weights
    as int8 with a scale per slice (a quarter of the bytes)."""
    return h5mat.write_tree(path, {"model": model_tree(model, quantize), "config": config_tree(config)},
                            kind="model")


def save_results(path, kind: str, model: Layer, config: dict, history: dict, metrics: dict,
                 examples: dict) -> Path:
    """Write a results file (``mnist_results`` or ``music_results``) atomically."""
    if kind not in MODEL_KINDS[1:]:
        raise ValueError(f"results kind must be one of {MODEL_KINDS[1:]}, got {kind!r}")
    tree = {"model": model_tree(model), "config": config_tree(config), "history": history_tree(history),
            "metrics": metrics, "examples": examples}
    return h5mat.write_tree(path, tree, kind=kind)


def save_separator(path, sep: Separator, config: dict | None = None, quantize: str | None = None) -> Path:
    """Write a music model file (kind ``model``): /model, and /config with ``config`` and the
    separator's STFT settings and normaliser (``quantize`` as for :func:`save_model`)."""
    return save_model(path, sep.model, {**(config or {}), **sep.config()}, quantize)


def save_music_results(path, sep: Separator, config: dict, history: dict, metrics: dict,
                       examples: dict) -> Path:
    """Write a music results file (kind ``music_results``): model, config, history, metrics, examples."""
    return save_results(path, "music_results", sep.model, {**config, **sep.config()}, history, metrics, examples)


def resolve_model_path(path) -> Path:
    """A model file, results file or checkpoint; a run directory gives the first of
    ``model.h5``, ``results.h5``, ``checkpoint.npz`` it holds; a bare name such as
    ``"mnist-unet"`` gives that shipped model's file (:mod:`npvae.pretrained`)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"a model is given as a shipped model's name (npvae.list_models()), a run directory or "
                        f"a model.h5 / results.h5 / checkpoint.npz path (str or pathlib.Path), got "
                        f"{type(path).__name__} {path!r}")
    if isinstance(path, str) and not Path(path).exists() and pretrained.looks_like_name(path):
        return pretrained.path(path)            # a shipped model, or an error listing them
    path = Path(path)
    if path.is_dir():
        for name in (MODEL_FILE, RESULTS_FILE, CHECKPOINT_FILE):
            if (path / name).exists():
                return path / name
        raise FileFormatError(f"{path} holds no {MODEL_FILE}, {RESULTS_FILE} or {CHECKPOINT_FILE}; pass the run "
                              "directory a training script wrote (its --out) or one of those files")
    if not path.exists():
        raise ModelNotFoundError(f"model file {path} does not exist; pass a run directory, its model.h5 "
                                 "or the name of a shipped model (npvae.list_models())")
    return path


parse_spec = modelcheck.parse_spec
CONFIG_MAX_BYTES = 64 << 20     # /config holds settings and a normaliser: kilobytes
SPEC_MAX_BYTES = 1 << 20        # /model/spec, /model/dtype: a few kilobytes of text


def load_parameters(path, model: Layer, params: dict) -> Layer:
    """``model.load_state_dict(params)``; a mismatch names the file and the fix."""
    try:
        model.load_state_dict(params)
    except (ValueError, KeyError, TypeError) as e:
        raise FileFormatError(f"{path}: its parameters do not fit the architecture it describes ({e}); the file "
                              "was edited or damaged: use the model.h5 / results.h5 that training wrote, "
                              "or train again") from None
    model.eval()
    return model


MODEL_DTYPES = ("float32", "float64")


def _model_dtype(dtype) -> np.dtype | None:
    """The ``dtype`` argument of :func:`load_model` checked: None, float32 or float64."""
    if dtype is None:
        return None
    try:
        ok = np.dtype(dtype).name in MODEL_DTYPES
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"dtype must be float32 or float64 (or None for the dtype the file stores), got "
                         f"{dtype!r}")
    return np.dtype(dtype)


def _build(path, spec: dict, dtype) -> Layer:
    """``build_layer(spec)`` in ``dtype``; a spec the constructors refuse names the file."""
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise FileFormatError(f"{path}: /model/dtype {dtype!r} is not a dtype; the file was edited or "
                              "damaged") from None
    try:
        return build_layer(spec, dtype=dtype)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as e:
        raise FileFormatError(f"{path}: its model spec cannot be built ({type(e).__name__}: {e}); the file was "
                              "edited or damaged: use the model.h5 / results.h5 that training wrote, "
                              "or train again") from None


def _read_config(path, tree: h5mat.TreeReader):
    """/config, the normaliser's per-bin arrays checked against its STFT before any is read."""
    declared = tree.describe("config")
    norm = declared.get("normalizer") if isinstance(declared, dict) else None
    if isinstance(norm, dict):
        n_fft = tree.read("config/n_fft", SPEC_MAX_BYTES) if isinstance(declared.get("n_fft"), h5mat.Leaf) else None
        modelcheck.check_normaliser(path, norm, n_fft)
    return tree.read("config", CONFIG_MAX_BYTES)


def _read_h5_model(path) -> tuple[dict, str, dict, dict]:
    """``(spec, dtype, config, params)`` of a model or results file, every size checked
    against the spec (:mod:`npvae.files.modelcheck`) before a tensor is read."""
    with h5mat.TreeReader(path, expected_kind=MODEL_KINDS) as tree:
        if "model/spec" not in tree:
            raise FileFormatError(f"{path} has no /model/spec: it was not written with a model; "
                                  "pass the model.h5 or results.h5 of a training run")
        text = tree.read("model/spec", SPEC_MAX_BYTES)
        if not isinstance(text, str):
            raise FileFormatError(f"{path}: /model/spec is not text; the file was edited or damaged")
        spec = parse_spec(path, text)
        expected = modelcheck.expected_shapes(path, spec)
        declared = tree.describe("model/params") if "model/params" in tree else {}
        if not all(isinstance(leaf, h5mat.Leaf) for leaf in declared.values()):
            raise FileFormatError(f"{path}: /model/params holds groups, not only tensors; the file was "
                                  "edited or damaged")
        shapes = {k: (v.shape, v.dtype) for k, v in declared.items()}
        scales = tree.describe("model/param_scales") if "model/param_scales" in tree else {}
        if not isinstance(scales, dict) or not all(isinstance(leaf, h5mat.Leaf) for leaf in scales.values()):
            raise FileFormatError(f"{path}: /model/param_scales is not a group of tensors; the file was edited or "
                                  "damaged")
        check_scales(path, shapes, {k: (v.shape, v.dtype) for k, v in scales.items()})
        modelcheck.check_declared(path, expected, shapes, quantized=set(scales))
        params = tree.read("model/params") if declared else {}
        if scales:
            params = dequantize(path, params, tree.read("model/param_scales"))
        stored = tree.read("model/dtype", SPEC_MAX_BYTES) if "model/dtype" in tree else "float32"
        config = _read_config(path, tree) if "config" in tree else {}
    if not isinstance(config, dict):
        raise FileFormatError(f"{path}: /config is not a group of settings; the file was edited or damaged")
    return spec, stored, config, params


def read_model_file(path, dtype=None) -> tuple[Layer, dict]:
    """``(model, config)`` from a model file, results file, checkpoint or run directory.

    The model is rebuilt in ``dtype`` (default: the dtype it was stored in), in eval mode.
    Nothing is built before the file is checked (:mod:`npvae.files.modelcheck`): the spec's
    nesting and size, every tensor's declared shape and dtype against the spec, every
    value finite and in range. A damaged file raises :class:`FileFormatError` naming the
    file and the tensor or field.
    """
    dtype = _model_dtype(dtype)
    path = resolve_model_path(path)
    if path.suffix == ".npz":
        try:
            arrays, meta = load_checkpoint(path)
        except RecursionError:
            raise FileFormatError(f"{path}: its metadata nests deeper than Python can parse; the file was "
                                  "edited or damaged") from None
        if "model_spec" not in meta:
            raise FileFormatError(f"{path} is a checkpoint without a model_spec: it was not written by npvae's "
                                  "Trainer; pass the run's model.h5 instead")
        spec, config, state = meta["model_spec"], meta.get("config", {}), model_state(arrays)
        if not isinstance(spec, dict):
            raise FileFormatError(f"{path}: its model_spec is not an architecture record; the file was edited "
                                  "or damaged")
        modelcheck.check_spec_depth(path, spec)
        modelcheck.check_declared(path, modelcheck.expected_shapes(path, spec),
                                  {k: (np.shape(v), np.asarray(v).dtype) for k, v in state.items()})
        stored = next(iter(state.values())).dtype if state else np.float32
    else:
        spec, stored, config, state = _read_h5_model(path)
    modelcheck.check_values(path, state)
    model = load_parameters(path, _build(path, spec, dtype or stored), state)
    return model, config


def load_model(path, dtype=None):
    """Rebuild a trained model exactly from a model file, results file, checkpoint, run
    directory or the name of a shipped model (``npvae.list_models()``).

    image models come back as the model itself (``digit, fashion, mixture_hat =
    model.separate(mixtures)``; a blind images model: ``groups = model.separate(mixtures)``);
    a music spectrogram model comes back as its :class:`npvae.separation.separator.Separator` (STFT
    settings and normalisation included), a blind music model as its
    :class:`npvae.separation.blind_separator.BlindMusicSeparator` (STFT settings and magnitude scale);
    both separate audio with ``sep.separate(audio, sr)``.
    """
    model, config = read_model_file(path, dtype)
    if isinstance(model, MASK_NETWORKS):
        return Separator.from_config(model, config, str(path))
    if is_blind_music(model, config):
        return BlindMusicSeparator.from_config(model, config, str(path))
    return model


def load_separator(path, dtype=None) -> Separator:
    """A music :class:`~npvae.separation.separator.Separator` from any file :func:`load_model` reads;
    a clear error for a file that holds another kind of model."""
    model, config = read_model_file(path, dtype)
    return Separator.from_config(model, config, str(path))

"""Model and results files: HDF5 that is also a MATLAB v7.3 MAT-file.

The layout is the one documented in ``docs/hdf5_schema.md``:

* a **model file** (kind ``model``) holds ``/model`` (the JSON ``spec`` that rebuilds
  the architecture, a readable ``layers`` list, ``dtype``, ``latent_dim`` and one
  dataset per parameter under ``/model/params``) and ``/config``;
* a **results file** (kinds ``mnist_results``, ``music_results``, ``blind_results``) adds ``/history``,
  ``/metrics`` and ``/examples``, and also carries ``/model``, so it loads as a model.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import h5mat
from .errors import FileFormatError
from .layers.base import Layer, build_layer

MODEL_FILE = "model.h5"
RESULTS_FILE = "results.h5"
MODEL_KINDS = ("model", "mnist_results", "music_results", "blind_results")


def layer_lines(model: Layer) -> list[str]:
    """One line per sub-layer in forward order: ``<path> <Type> key=value ...``."""
    return [f"{path} {type(layer).__name__} " + " ".join(f"{k}={v}" for k, v in layer.hyper().items())
            for path, layer in model.named_layers() if path]


def model_tree(model: Layer) -> dict:
    """The ``/model`` group of the schema for ``model``."""
    tree = {"type": type(model).__name__, "spec": json.dumps(model.spec()), "layers": layer_lines(model),
            "dtype": str(model.dtype), "params": model.state_dict()}
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


def save_model(path, model: Layer, config: dict | None = None) -> Path:
    """Write a model file (kind ``model``) atomically."""
    return h5mat.write_tree(path, {"model": model_tree(model), "config": config_tree(config)}, kind="model")


def save_results(path, kind: str, model: Layer, config: dict, history: dict, metrics: dict,
                 examples: dict) -> Path:
    """Write a results file (``mnist_results`` or ``music_results``) atomically."""
    if kind not in MODEL_KINDS[1:]:
        raise ValueError(f"results kind must be one of {MODEL_KINDS[1:]}, got {kind!r}")
    tree = {"model": model_tree(model), "config": config_tree(config), "history": history_tree(history),
            "metrics": metrics, "examples": examples}
    return h5mat.write_tree(path, tree, kind=kind)


def _resolve(path) -> Path:
    from . import pretrained
    if isinstance(path, str) and not Path(path).exists() and pretrained.looks_like_name(path):
        return pretrained.path(path)            # a shipped model, or an error listing them
    path = Path(path)
    if path.is_dir():
        for name in (MODEL_FILE, RESULTS_FILE):
            if (path / name).exists():
                return path / name
        raise FileFormatError(f"{path} holds no {MODEL_FILE} or {RESULTS_FILE}; pass the run directory a "
                              "training script wrote (its --out) or one of those files")
    if not path.exists():
        raise FileNotFoundError(f"model file {path} does not exist; pass a run directory, its model.h5 "
                                "or the name of a shipped model (npvae.list_models())")
    return path


def read_model_file(path) -> tuple[Layer, dict]:
    """``(model, config)`` from a model or results file (or a run directory)."""
    path = _resolve(path)
    tree = h5mat.read_tree(path, expected_kind=MODEL_KINDS)
    if "model" not in tree or "spec" not in tree["model"]:
        raise FileFormatError(f"{path} has no /model/spec: it was not written with a model; "
                              "pass the model.h5 or results.h5 of a training run")
    from . import models  # noqa: F401  (registers the model classes with build_layer)
    spec = parse_spec(path, tree["model"]["spec"])
    dtype = np.dtype(tree["model"].get("dtype", "float32"))
    model = load_parameters(path, build_layer(spec, dtype=dtype), tree["model"]["params"])
    return model, tree.get("config", {})


def parse_spec(path, text) -> dict:
    """The JSON architecture record of a model file; damage names the file."""
    try:
        spec = json.loads(text)
    except (TypeError, ValueError) as e:
        raise FileFormatError(f"{path}: /model/spec is not valid JSON ({e}); the file was edited or damaged: "
                              "use the model.h5 / results.h5 that training wrote") from None
    if not isinstance(spec, dict):
        raise FileFormatError(f"{path}: /model/spec is not an architecture record; the file was edited or damaged")
    return spec


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


def load_model(path):
    """Rebuild a trained model exactly from a model file, results file, run directory or
    the name of a shipped model (``npvae.list_models()``).

    Part I models come back as the model itself (``digit, fashion, mixture_hat =
    model.separate(mixtures)``); a Part II spectrogram model comes back as its
    :class:`npvae.pipelines.music.Separator` (STFT settings and normalisation included).
    """
    model, config = read_model_file(path)
    if type(model).__name__ == "SpectrogramUNetVAE":
        from .pipelines.music import load_separator
        return load_separator(_resolve(path))
    return model

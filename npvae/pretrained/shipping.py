"""Making a finished training run a shipped model (what ``npvae ship`` does).

    from npvae.pretrained.shipping import ship
    ship("runs/best", "mnist-unet", command="npvae train mnist --preset best --out runs/best",
         commit="1a2b3c4", dest="npvae/pretrained")

copies the run's model.h5 to ``<dest>/<name>.h5`` with one more group, ``/provenance``:
the name, the training command, commit and seed, the run's training time, and the
scores measured here on the task's whole test set, on the slice CI re-scores, and on
the whole test set with the latent's posterior mean set to 0 (what the latent adds).

Everything is checked before the (minutes-long) scoring: the run folder is finished
(:func:`check_run_dir`), the name fits the model (:func:`check_name`: ``mnist-...``
names hold image models, ``music-...`` names music separators), and the destination
is a folder where no file of that name exists, unless ``overwrite``.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ..errors import FileFormatError, ModelNotFoundError

PREFIX_TASKS = {"mnist-": "mnist", "music-": "music"}    # name prefix: the task its file must hold
TASK_TEXT = {"mnist": "an image (MNIST + Fashion-MNIST) model", "music": "a music separator"}


def check_run_dir(run_dir) -> Path:
    """The model file of a finished run folder; a clear error for a folder that does not
    exist, is still training, or holds no model.h5 (training writes it when it ends)."""
    from ..files.guard import run_holder
    from ..files.model_file import MODEL_FILE
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise ModelNotFoundError(f"run folder {run_dir} does not exist; pass the --out folder of a finished "
                                 "training run")
    if not run_dir.is_dir():
        raise FileFormatError(f"{run_dir} is a file, not a run folder; pass the folder a training run wrote "
                              "(its --out), which holds model.h5")
    holder = run_holder(run_dir)
    if holder:
        raise FileFormatError(f"run folder {run_dir} is still training ({holder}); ship it when it has ended")
    model = run_dir / MODEL_FILE
    if not model.is_file():
        if (run_dir / "checkpoint.npz").exists():
            raise FileFormatError(f"run folder {run_dir} holds no {MODEL_FILE}: its training has not finished "
                                  "(it holds checkpoint.npz; training writes model.h5 when it ends); finish it "
                                  f"with `npvae train TASK --out {run_dir} --resume`, then ship it")
        raise FileFormatError(f"run folder {run_dir} holds no {MODEL_FILE}: it is not a finished training run's "
                              "folder (its --out)")
    return model


def task_of_file(model_file) -> tuple[str, object, dict]:
    """``(task, model, config)`` of a model file: ``"music"`` for a supervised music
    separator (returned as its Separator), ``"mnist"`` for a supervised image model;
    a clear error for anything else (a blind model)."""
    from ..files.model_file import load_separator, read_model_file
    from ..models.mnist import SeparationVAE
    from ..models.stacked import MASK_NETWORKS
    model, config = read_model_file(model_file)
    if isinstance(model, MASK_NETWORKS):
        return "music", load_separator(model_file), config
    if isinstance(model, SeparationVAE):
        return "mnist", model, config
    raise FileFormatError(f"{model_file} holds a {type(model).__name__}, which cannot be shipped: npvae ships "
                          "supervised image models and music separators")


def check_name(name: str, task: str | None = None) -> str:
    """``name`` as a shipped name (letters, digits, '-'); with ``task``, also that a
    ``mnist-``/``music-`` name holds a model of that task."""
    if not name or not all(c.isalnum() or c == "-" for c in name):
        raise ValueError(f"the shipped name must be letters, digits and '-', got {name!r}")
    for prefix, want in PREFIX_TASKS.items():
        if task is not None and name.startswith(prefix) and task != want:
            raise FileFormatError(f"the name {name} says {TASK_TEXT[want]}, but the run holds "
                                  f"{TASK_TEXT[task]}; name it {name.replace(prefix, task + '-', 1)} "
                                  f"or ship another run")
    return name


def destination(dest, name: str, overwrite: bool = False, inputs=()) -> Path:
    """``<dest>/<name>.h5``, checked: ``dest`` an existing writable folder, not one of the
    files ``inputs`` (the run's model), no file of that name unless ``overwrite``."""
    from ..files.guard import check_existing_dir, check_output_file
    from . import SUFFIX
    check_existing_dir(dest, "--dest")
    return check_output_file(Path(dest) / f"{name}{SUFFIX}", overwrite, "--dest", inputs)


def run_seconds(run_dir: Path) -> float:
    """Training wall time the run recorded (images: metrics.json; music: results.h5)."""
    from ..files import h5mat
    if (run_dir / "metrics.json").exists():
        m = json.loads((run_dir / "metrics.json").read_text())
        return float(m.get("train_seconds_total", m.get("train_seconds_this_session", float("nan"))))
    if (run_dir / "results.h5").exists():
        m = h5mat.read_tree(run_dir / "results.h5", subtree="metrics")
        return float(m.get("train_seconds", float("nan")))
    return float("nan")


PROVENANCE_FILE = "provenance.json"
# the thread settings a run's speed depends on, recorded beside its command
THREAD_VARS = ("NPVAE_NUM_THREADS", "NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
               "MKL_NUM_THREADS", "NPVAE_BACKEND")


def source_commit() -> str:
    """The commit npvae runs from: ``git rev-parse --short HEAD`` of its checkout (with
    "+changes" when the checkout has uncommitted changes), or ``npvae VERSION`` for an
    installed package."""
    import subprocess

    from .._version import __version__
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / ".git").exists():
        try:
            head = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True,
                                  text=True, timeout=10)
            dirty = subprocess.run(["git", "-C", str(checkout), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10)
            if head.returncode == 0 and head.stdout.strip():
                return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")
        except (OSError, subprocess.SubprocessError):
            pass
    return f"npvae {__version__}"


def write_provenance(run_dir, command: str) -> Path:
    """Write ``RUN_DIR/provenance.json``: the command that trained the run, the commit it
    ran from (:func:`source_commit`) and the thread settings of its environment, which
    ``npvae ship`` records in the shipped file."""
    from ..files.atomic import atomic_write_text
    env = " ".join(f"{k}={os.environ[k]}" for k in THREAD_VARS if os.environ.get(k))
    path = Path(run_dir) / PROVENANCE_FILE
    atomic_write_text(path, json.dumps({"command": command, "commit": source_commit(), "env": env}, indent=1))
    return path


def recorded_provenance(run_dir) -> dict:
    """``RUN_DIR/provenance.json`` ({"command": ..., "commit": ..., "env": ...}) or {}."""
    path = Path(run_dir) / PROVENANCE_FILE
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_text())
    except ValueError as e:
        raise FileFormatError(f"{path} is not valid JSON ({e}); fix it or pass --command and --commit") from None
    if not isinstance(record, dict):
        raise FileFormatError(f"{path} must hold a JSON object with command and commit")
    return record


def _network(model):
    """The network of a task model: a Separator's ``model``, an image model itself."""
    return model.model if hasattr(model, "stft_cfg") else model


def as_quantized(model, quantize: str | None):
    """``model`` (or a Separator's network) with its weights replaced by what a file of
    ``quantize`` ("int8") gives back: what the shipped file computes; None: unchanged."""
    if quantize is None:
        return model
    from ..files.model_file import check_quantization
    from ..files.quantize import quantized_round_trip
    check_quantization(quantize)
    net = _network(model)
    net.load_state_dict(quantized_round_trip(net.state_dict(), net.dtype))
    return model


def ship(run_dir, name: str, command: str | None = None, commit: str | None = None, dest=None,
         data_dir=None, overwrite: bool = False, log=print, quantize: str | None = None) -> Path:
    """Score the finished run ``run_dir`` and write it as shipped model ``name`` into
    ``dest`` (default: the user's models folder, :func:`npvae.pretrained.user_dir`, made if
    missing; npvae's own shipped files are never written); returns the file written. ``command`` and
    ``commit`` default to the run's provenance.json. ``quantize="int8"`` stores the weights
    as int8 with a scale per slice (:mod:`npvae.files.quantize`), and the scores are those
    of the weights so stored."""
    from ..files import h5mat
    from ..files.model_file import check_quantization
    from ..files.quantize import quantize_int8
    from . import user_dir
    from .scoring import HEADLINE, SLICE_TEXT, score, zero_latent_mean
    check_name(name)
    if quantize is not None:
        check_quantization(quantize)
    run_dir = Path(run_dir)
    source = check_run_dir(run_dir)
    recorded = recorded_provenance(run_dir)
    command, commit = command or recorded.get("command"), commit or recorded.get("commit")
    if not command or not commit:
        raise FileFormatError(f"the command and commit that trained {run_dir} are not known: give --command and "
                              f"--commit, or write them into {run_dir / 'provenance.json'}")
    task, model, config = task_of_file(source)
    check_name(name, task)
    model = as_quantized(model, quantize)
    if dest is None:
        dest = user_dir()
        dest.mkdir(parents=True, exist_ok=True)
    path = destination(dest, name, overwrite, [source])
    t0 = time.perf_counter()
    scores = score(model, config, data_dir)
    slice_scores = score(model, config, data_dir, slice=True)
    prior_mean = score(zero_latent_mean(as_quantized(task_of_file(source)[1], quantize)), config, data_dir)
    log(f"scored in {time.perf_counter() - t0:.0f} s: {HEADLINE[task]} {scores[HEADLINE[task]]:.3f} "
        f"(slice {slice_scores[HEADLINE[task]]:.3f})")
    tree = h5mat.read_tree(source, expected_kind="model")
    if quantize is not None:
        tree["model"]["params"], tree["model"]["param_scales"] = quantize_int8(tree["model"]["params"])
    tree["provenance"] = {
        "name": name, "task": task, "command": command, "commit": commit,
        "seed": int(config.get("seed", 0)), "train_seconds": run_seconds(run_dir),
        "headline": HEADLINE[task], "scores": scores, "slice": SLICE_TEXT[task], "slice_scores": slice_scores,
        "scores_latent_at_prior_mean": prior_mean,
        "shipped": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "weights": quantize or str(tree["model"].get("dtype", "float32")),
    }
    if recorded.get("env"):                    # e.g. thread settings the run used
        tree["provenance"]["environment"] = str(recorded["env"])
    destination(path.parent, name, overwrite, [source])  # again: scoring took minutes
    try:
        h5mat.write_tree(path, tree, kind="model")
    except OSError as e:
        from ..files.guard import write_failure
        raise write_failure(path, e, flag="--dest") from None
    log(json.dumps(dict(tree["provenance"]), indent=1))
    log(f"wrote {path} ({os.path.getsize(path) / 1e6:.1f} MB)")
    return path


__all__ = ["ship", "write_provenance", "source_commit", "check_run_dir", "check_name", "task_of_file", "destination", "run_seconds"]

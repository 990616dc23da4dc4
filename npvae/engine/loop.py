"""A small, resumable training loop shared by every task (:mod:`npvae.tasks`).

The caller supplies the maths as two callables:

* ``step(batch, epoch_progress) -> {"total": float, term: float, ...}`` runs forward
  and backward for one batch (filling the model's gradients); the trainer then calls
  ``optimizer.step()``. ``epoch_progress`` is the fractional epoch (for KL warm-up).
* ``validate() -> {term: float, ...}`` evaluates without training.

At the end of every epoch the trainer appends ``train_<term>`` and ``val_<term>``
to its history, writes ``checkpoint.npz`` atomically (parameters, optimiser
moments, RNG state, history, epoch), and every ``display_every`` epochs prints the
terms and calls ``on_display(epoch, history)`` (figures). ``resume()`` restores all
of it, so an interrupted run continues exactly as an uninterrupted one would (which
settings a resumed run may change is decided before, in :mod:`npvae.engine.resume`).

Under MPI (``comm``, see :mod:`npvae.distributed`) each rank's ``batches`` yields its
shard of every global batch; after ``step`` the gradients and terms are summed over
the ranks, so every rank takes the same optimiser step. Rank 0 alone validates,
displays, logs, shows the progress bar and writes the checkpoint, then gives its
state to the others at the end of every epoch; ``resume`` reads the checkpoint on
rank 0 and broadcasts it.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from .checkpoint import CHECKPOINT_FILE, load_checkpoint, model_arrays, model_state, restore_rng, rng_state, save_checkpoint
from ..distributed import SingleProcess
from ..errors import DistributedError, TrainingError
from ..files.guard import check_writable_dir, run_space_needed
from ..layers.norm import BatchNorm, batch_sums
from ..progress import progress_bar


def optimizer_lr(optimizer) -> float:
    return float(getattr(optimizer, "lr", 1e-3))


def _format_terms(terms: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4g}" for k, v in terms.items())


class Trainer:
    """Runs epochs of ``step`` over batches, with validation, display and checkpoints."""

    def __init__(self, model, optimizer, rng: np.random.Generator, run_dir: str | Path,
                 config: dict | None = None, display_every: int = 1, progress: bool = True,
                 log: Callable[[str], None] = print, comm=None, resume_command: str | None = None):
        self.model, self.optimizer, self.rng = model, optimizer, rng
        self.run_dir = Path(run_dir)
        self.config = dict(config or {})
        self.display_every = max(1, int(display_every))
        self.comm = comm or SingleProcess()
        self.progress = progress and self.comm.is_root
        self.log = log if self.comm.is_root else (lambda text: None)
        self.history: dict[str, list[float]] = {"epoch": []}
        self.epoch = 0  # epochs completed
        self.checkpoint_epoch = None   # the epoch of the checkpoint on disk (None: none yet)
        # the command that continues this run, for the messages of a stopped run
        self.resume_command = resume_command or "the same command with --resume"
        if self.comm.is_root:    # a full disk found now, not at the first checkpoint an epoch later
            check_writable_dir(self.run_dir, run_space_needed(sum(a.nbytes for a in model.state_arrays().values())))

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT_FILE

    # -- checkpoints -------------------------------------------------------------
    def save(self) -> None:
        if not self.comm.is_root:
            return
        arrays = model_arrays(self.model.state_dict())
        opt = self.optimizer.state_dict()
        for slot, tensors in opt["slots"].items():
            arrays.update({f"opt/{slot}/{k}": v for k, v in tensors.items()})
        meta = {"epoch": self.epoch, "history": self.history, "rng": rng_state(self.rng),
                "opt_t": opt["t"], "opt_hyper": opt["hyper"], "config": self.config,
                "model_spec": self.model.spec()}
        save_checkpoint(self.checkpoint_path, arrays, meta)
        self.checkpoint_epoch = self.epoch

    def resume(self, checkpoint: tuple[dict, dict] | None = None) -> bool:
        """Restore the state of ``checkpoint`` (``(arrays, meta)`` as
        :func:`~npvae.engine.checkpoint.load_checkpoint` gives, already read on rank 0;
        default: read ``checkpoint.npz`` from the run directory); False when there is none.
        Whether the run may resume with its settings is decided before
        (:mod:`npvae.engine.resume`); this restores what the checkpoint holds."""
        found = checkpoint if self.comm.is_root else None
        if found is None and self.comm.is_root and self.checkpoint_path.exists():
            found = load_checkpoint(self.checkpoint_path)
        if self.comm.parallel:
            found = self.comm.bcast_object(found)
        if found is None:
            return False
        arrays, meta = found
        self.model.load_state_dict(model_state(arrays))
        slots: dict[str, dict] = {}
        for key, value in arrays.items():
            if key.startswith("opt/"):
                _, slot, path = key.split("/", 2)
                slots.setdefault(slot, {})[path] = value
        self.optimizer.load_state_dict({"t": meta["opt_t"], "hyper": meta["opt_hyper"], "slots": slots})
        restored = restore_rng(meta["rng"])
        self.rng.bit_generator.state = restored.bit_generator.state
        self.history = {k: list(v) for k, v in meta["history"].items()}
        self.epoch = self.checkpoint_epoch = int(meta["epoch"])
        return True

    # -- the loop ----------------------------------------------------------------
    def fit(self, epochs: int, batches: Callable[[np.random.Generator], Iterable], n_batches: int,
            step: Callable[[object, float], dict], validate: Callable[[], dict] | None = None,
            on_display: Callable[[int, dict], None] | None = None) -> dict:
        """Train until ``epochs`` epochs are complete (counting resumed ones). With an
        optimiser that averages its weights, validation and display see the average, and
        the model holds it when this returns (the checkpoint keeps the weights trained)."""
        try:
            return self._fit(epochs, batches, n_batches, step, validate, on_display)
        except DistributedError as exc:
            where = (f"the last checkpoint, after epoch {self.epoch}, is intact in {self.checkpoint_path}"
                     if self.epoch else f"no epoch was complete, so {self.run_dir} holds no new checkpoint")
            raise DistributedError(f"{exc}; {where}: continue with {self.resume_command} "
                                   "(under mpirun with any number of ranks, or in one process)") from exc

    def _fit(self, epochs, batches, n_batches, step, validate, on_display) -> dict:
        # BatchNorm's statistics are over the global batch: every rank sums them with the others
        synced = self.comm.parallel and any(isinstance(layer, BatchNorm) for _, layer in self.model.named_layers())
        with batch_sums(self.comm.allreduce_sum if synced else None):
            return self._epochs(epochs, batches, n_batches, step, validate, on_display, synced)

    def _epochs(self, epochs, batches, n_batches, step, validate, on_display, synced) -> dict:
        comm = self.comm
        if comm.parallel:
            self._sync_from_root()
        while self.epoch < epochs:
            start = time.perf_counter()
            comm_start = comm.comm_seconds
            self.model.train()
            sums: dict[str, float] = {}
            bar = progress_bar(n_batches, f"epoch {self.epoch + 1}/{epochs}", self.progress)
            count = 0
            for i, batch in enumerate(batches(self.rng)):
                if comm.local_count == 0:   # this rank holds none of a small last batch
                    if synced:
                        raise TrainingError(
                            f"a batch of fewer samples than the {comm.size} MPI ranks left rank {comm.rank} none, "
                            "but BatchNorm sums its statistics over every rank; use a batch size and data size "
                            "whose last batch holds at least one sample per rank, fewer ranks, or GroupNorm")
                    terms = None
                else:
                    terms = step(batch, self.epoch + i / max(1, n_batches))
                terms = comm.allreduce_step(self.optimizer.params, terms)
                total = terms["total"]
                if not math.isfinite(total):
                    bar.close()
                    where = (f"the checkpoint after epoch {self.epoch} is intact" if self.epoch
                             else "no epoch was complete, so there is no checkpoint to resume")
                    raise TrainingError(
                        f"the loss became {total} at epoch {self.epoch + 1}, batch {i + 1} ({_format_terms(terms)}); "
                        f"{where}; lower the learning rate or clip the gradients: "
                        + (f"{self.resume_command} --lr {optimizer_lr(self.optimizer) / 2:g} --clip-norm 5"
                           if self.epoch else "start again with a lower --lr or with --clip-norm 5"))
                self.optimizer.step()
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                count += 1
                bar.update()
                bar.set_postfix(loss=f"{sums['total'] / count:.4g}", refresh=False)
            bar.close()
            self.epoch += 1
            train_terms = {k: v / max(1, count) for k, v in sums.items()}
            self.model.eval()
            with self.optimizer.averaged_weights():
                val_terms = validate() if validate and comm.is_root else {}
            self.model.train()
            if comm.parallel or "comm_seconds" in self.history:   # gradient exchange time, once under MPI
                self.history.setdefault("comm_seconds", [0.0] * len(self.history["epoch"])).append(
                    comm.comm_seconds - comm_start)
            self._record(train_terms, val_terms, time.perf_counter() - start)
            self.save()
            if self.epoch % self.display_every == 0 or self.epoch == epochs:
                self.log(f"epoch {self.epoch:3d}  train: {_format_terms(train_terms)}")
                if val_terms:
                    self.log(f"           valid: {_format_terms(val_terms)}")
                if on_display and comm.is_root:
                    # in eval mode, as validation: rank 0 alone must not run a BatchNorm that
                    # sums over the ranks, nor move the running statistics
                    self.model.eval()
                    with self.optimizer.averaged_weights():
                        on_display(self.epoch, self.history)
                    self.model.train()
            if comm.parallel:
                self._sync_from_root()
        self.optimizer.use_averaged_weights()   # the model that is scored and shipped
        return self.history

    def _sync_from_root(self) -> None:
        """Give every rank rank 0's state (parameters, optimiser, RNG, history, epoch):
        the state of the checkpoint it has just written."""
        opt = self.optimizer
        meta = self.comm.bcast_object({"epoch": self.epoch, "history": self.history, "rng": rng_state(self.rng),
                                       "opt_t": opt.t, "opt_hyper": opt._hyper()})
        arrays = [p for _, p, _ in self.optimizer.params] + [b for _, b in self.model.named_buffers()]
        arrays += [a for slot in self.optimizer._slots().values() for a in slot.values()]
        self.comm.bcast_arrays(arrays)
        if not self.comm.is_root:
            self.optimizer.load_state_dict({"t": meta["opt_t"], "hyper": meta["opt_hyper"],
                                            "slots": self.optimizer._slots()})
            self.rng.bit_generator.state = meta["rng"]
            self.history = {k: list(v) for k, v in meta["history"].items()}
            self.epoch = int(meta["epoch"])

    def _record(self, train_terms, val_terms, seconds):
        self.history["epoch"].append(self.epoch)
        self.history.setdefault("seconds", []).append(seconds)
        for prefix, terms in (("train_", train_terms), ("val_", val_terms)):
            for k, v in terms.items():
                self.history.setdefault(prefix + k, []).append(float(v))

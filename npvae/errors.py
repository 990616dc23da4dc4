"""Exceptions that npvae raises on bad input. Each message names the problem and the fix."""


class NpvaeError(Exception):
    """Base class of npvae's own errors."""


class DatasetError(NpvaeError, FileNotFoundError):
    """A dataset is missing, incomplete or corrupt."""


class FileFormatError(NpvaeError, ValueError):
    """A file is not what npvae expected (wrong kind, version, truncated or corrupt)."""


class TrainingError(NpvaeError, RuntimeError):
    """Training cannot go on (a NaN loss, say)."""


class OutputError(NpvaeError, ValueError):
    """An output cannot be written safely (it exists, the folder is not writable, no space)."""


class DistributedError(NpvaeError, RuntimeError):
    """A data-parallel (MPI) run cannot go on: a rank died, hangs or was misconfigured."""


class ModelNotFoundError(FileFormatError, FileNotFoundError):
    """A model file or run directory that does not exist (both a FileFormatError, as for
    any unusable model path, and a FileNotFoundError)."""


class MissingExtraError(NpvaeError, ImportError):
    """A feature asked for needs an optional extra that is not installed (the message
    names the ``pip install`` command)."""

"""Checks the fault cases share: what a clear error is, and that no file was lost.

    from _faults import cheap, expect_error, lib_error, must_survive, no_temporaries
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
import tracemalloc
from pathlib import Path

import pytest

from npvae.files.atomic import TMP_TAG
from npvae.errors import NpvaeError

# What a library function may raise for a user's mistake; anything else is a traceback.
LIB_ERRORS = (NpvaeError, ValueError, FileNotFoundError)


def expect_error(result, match: str) -> str:
    """A command-line case's clear error: exit status non-zero, a message on stderr that
    matches ``match`` (a regular expression, any case, may span lines) and no traceback.
    Returns the message."""
    text = result.err.strip()
    first = " ".join(text.split())[:300]
    assert result.code != 0, f"accepted (exit 0): {' '.join(result.out.split())[-300:]}"
    assert "Traceback" not in result.err, f"traceback: {first}"
    assert re.search(match, text, re.I | re.S), f"unclear error (wanted /{match}/): {first or '(no message)'}"
    return text


@contextlib.contextmanager
def lib_error(match: str):
    """A library case's clear error: the block raises one of :data:`LIB_ERRORS` whose
    ``"<type>: <message>"`` matches ``match`` (any case). Another exception is a traceback
    and fails the test as it stands; no exception fails it as a silent wrong result."""
    try:
        yield
    except LIB_ERRORS as exc:
        text = f"{type(exc).__name__}: {exc}"
        assert re.search(match, text, re.I | re.S), \
            f"unclear error (wanted /{match}/): {' '.join(text.split())[:300]}"
        return
    pytest.fail("silent wrong result: the bad input was accepted", pytrace=False)


@contextlib.contextmanager
def cheap(seconds=5.0, megabytes=200):
    """The block (a refused load) takes less than ``seconds`` and ``megabytes`` of NumPy memory."""
    tracemalloc.start()
    t = time.perf_counter()
    try:
        yield
    finally:
        took, peak = time.perf_counter() - t, tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert took < seconds and peak < megabytes * 1e6, f"refused, but after {took:.1f} s and {peak / 1e6:.0f} MB"


def digest(path) -> bytes:
    return Path(path).read_bytes()


def must_survive(path, before: bytes) -> None:
    """``path`` still holds exactly ``before``."""
    if not Path(path).exists() or Path(path).read_bytes() != before:
        pytest.fail(f"data lost: {Path(path).name} was changed or removed", pytrace=False)


def no_temporaries(folder) -> None:
    """No temporary file of an atomic write is left under ``folder``."""
    stray = [p for p in Path(folder).rglob("*") if TMP_TAG in p.name or p.name.endswith(".tmp")]
    assert not stray, f"temporary files left: {[p.name for p in stray[:3]]}"


def umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def edited_model(source, edit, folder) -> Path:
    """A copy of the model file ``source`` in ``folder`` with ``edit(tree)`` applied to its
    contents (the tree of :func:`npvae.files.h5mat.read_tree`)."""
    from npvae.files import h5mat
    tree = h5mat.read_tree(source)
    edit(tree)
    p = Path(folder) / "model.h5"
    h5mat.write_tree(p, tree, kind="model")
    return p


def shape_changed(tree) -> None:
    """Edit for :func:`edited_model`: one parameter a column wider than the network wants."""
    import numpy as np
    k = sorted(tree["model"]["params"])[0]
    a = tree["model"]["params"][k]
    tree["model"]["params"][k] = np.zeros(a.shape[:-1] + (a.shape[-1] + 1,), a.dtype)


def resume_changed(cli, task, run, args_of, folder, *change, **kw):
    """Resume a copy of ``run`` (a finished tiny run of ``npvae train TASK``) with ``change``
    (flag, value, ...) applied to its flags: the result, after checking that the checkpoint
    survived untouched."""
    d = folder / "run"
    shutil.copytree(run, d)
    before = (d / "checkpoint.npz").read_bytes()
    args = args_of(d, 2, **kw)
    for i in range(0, len(change), 2):
        if change[i] in args:
            args[args.index(change[i]) + 1] = change[i + 1]
        else:
            args += [change[i], change[i + 1]]
    r = cli("train", task, *args, "--resume")
    must_survive(d / "checkpoint.npz", before)
    return r

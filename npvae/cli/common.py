"""What every subcommand shares: the help layout, the exit statuses, and the one place
where an error becomes a message instead of a traceback."""
from __future__ import annotations

import argparse
import contextlib
import signal
import sys

from ..errors import NpvaeError
from ..inputs import MAX_COUNT

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_TERMINATED = 128 + signal.SIGTERM      # 143, as a shell reports a process SIGTERM ended

# What a user's mistake or a damaged input raises: shown as "error: <message>", exit 1.
USER_ERRORS = (NpvaeError, ValueError, FileNotFoundError, PermissionError, IsADirectoryError,
               NotADirectoryError, OSError)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written, and each flag's default in its help (unless the help
    already speaks of it, or there is none)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "default" not in text:
            text += " (default: %(default)s)"
        return text


class UsageError(NpvaeError):
    """A bad combination of flags found after parsing: reported as a usage error (exit 2)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a batch system's time limit), raised where the command is, as
    Ctrl-C raises KeyboardInterrupt: the same clean-up runs on the way out."""


def _terminate(signum, frame):
    raise Terminated


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within the block SIGTERM raises :class:`Terminated`; the previous handler comes back
    after it. Under MPI the communicator installs its own handler inside the block (a
    rank's SIGTERM means another rank died), which then takes precedence."""
    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:          # not the main thread: signals go elsewhere
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_command(args: argparse.Namespace) -> int:
    """Call ``args.run(args)`` (set by the subcommand's parser) and turn what it raises into
    an exit status: a usage error 2, a failure 1 (``error: <message>``), Ctrl-C 130 and
    SIGTERM 143, both with ``args.on_interrupt(args)``'s hint when the subcommand gives
    one. Under MPI a failure ends every rank (:func:`npvae.distributed.fail`)."""
    from ..distributed import fail
    try:
        with sigterm_as_interrupt():
            status = args.run(args)
    except UsageError as exc:
        print(f"npvae {getattr(args, 'command', '')}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        hint = getattr(args, "on_interrupt", None)
        text = hint(args) if hint else ""
        how = " (SIGTERM)" if isinstance(exc, Terminated) else ""
        print(f"\ninterrupted{how}" + (f"; {text}" if text else ""), file=sys.stderr, flush=True)
        return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
    except USER_ERRORS as exc:
        return fail(f"error: {describe(exc)}", EXIT_FAILURE)
    return EXIT_OK if status is None else int(status)


def describe(exc: BaseException) -> str:
    """A one-line message for ``exc``: its own text, or for a bare OSError the system's
    words and the file it concerns."""
    if isinstance(exc, OSError) and not isinstance(exc, NpvaeError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return str(exc) or type(exc).__name__


# ----------------------------------------------------------------------------- argument types

def _whole_number(text: str, least: int, most: int | None = None) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, not {value}")
    if most is not None and value > most:
        raise argparse.ArgumentTypeError(f"must be at most {most:,} (a larger count is a typo, or work for "
                                         f"years), not {value}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a count, a whole number from 1 to :data:`~npvae.inputs.MAX_COUNT`."""
    return _whole_number(text, 1, MAX_COUNT)


def nonneg_int(text: str) -> int:
    """An argparse type: a whole number of at least 0."""
    return _whole_number(text, 0)


def positive_float(text: str) -> float:
    """An argparse type: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def positive_multiple(step: int):
    """An argparse type: a whole number above 0 that is a multiple of ``step``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value <= 0 or value % step:
            raise argparse.ArgumentTypeError(f"must be a positive multiple of {step}, got {text}")
        return value
    return parse

"""What the command-line entry points share: one-line errors, exit codes, a quiet start-up.

Every command reports a problem a user can cause as one line on stderr,
``PROG: error: MESSAGE``, where the message names the flag or file at fault,
and exits with

* 2: bad usage or input (`UsageError`: a missing or wrong flag, a file that
  does not exist or is not what the flag wants, a folder that would be
  overwritten);
* 1: the run itself failed (`RunError`: nothing could be decoded, an export
  does not reproduce its model, ...).

`entry_point` turns those exceptions into that line and code, and ends quietly
when the reader of stdout goes away (``... | head``). `quiet_tensorflow`
imports TensorFlow with its C++ start-up banner muted (oneDNN, CUDA probing on
a CPU machine), which no environment variable can silence because it is
written before TensorFlow reads one. Set ``TF_CPP_MIN_LOG_LEVEL=0`` (or 1) to
see those lines again.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Sequence

from absl import app, flags, logging

HELP_FLAGS = ("-h", "-?", "--help", "--helpshort", "--helpfull", "--helpxml")


class UsageError(Exception):
    """Bad usage or input: the message names the flag or file (exit status 2)."""

    exit_code = 2


class RunError(Exception):
    """The run itself failed although its input was acceptable (exit status 1)."""

    exit_code = 1


def error_line(prog: str, message: object) -> str:
    """``PROG: error: MESSAGE`` on one line (newlines in the message become spaces)."""
    text = " ".join(str(message).split())
    return f"{prog}: error: {text}"


def fail(prog: str, message: object, code: int = 2) -> int:
    """Prints the error line to stderr and returns ``code``."""
    print(error_line(prog, message), file=sys.stderr)
    return code


def entry_point(prog: str, tensorflow: bool = False, quiet_info: bool = False,
                usage: Callable[[Sequence[str]], None] | None = None) -> Callable:
    """Decorates an absl ``main(argv) -> int | None`` with the shared error handling.

    Args:
      prog: the program's name used in error lines, e.g. ``"sst_tf.export"``.
      tensorflow: import TensorFlow quietly (see `quiet_tensorflow`) before
        ``main`` runs, i.e. after absl has answered ``--help``.
      quiet_info: log warnings and errors only (TensorFlow's and Keras'
        informational lines included) unless ``--verbosity`` is given.
      usage: checks the flags (raising `UsageError`) before TensorFlow is
        imported, so a usage error is answered at once.

    The decorated function returns the exit code: ``main``'s result (``None``
    is 0), the code of a `UsageError` / `RunError` (after printing its line),
    1 when stdout was closed by its reader, 130 after Ctrl-C.
    """

    def decorate(main: Callable[[Sequence[str]], int | None]) -> Callable[[Sequence[str]], int]:
        @functools.wraps(main)
        def wrapped(argv: Sequence[str]) -> int:
            verbosity = logging.get_verbosity()
            try:
                if quiet_info and not flags.FLAGS["verbosity"].present:
                    logging.set_verbosity(logging.WARNING)
                if usage is not None:
                    usage(argv)
                if tensorflow:
                    quiet_tensorflow()
                code = main(argv)
                sys.stdout.flush()
                return int(code or 0)
            except (UsageError, RunError) as e:
                return fail(prog, e, e.exit_code)
            except BrokenPipeError:
                _silence_stdout()
                return 1
            except KeyboardInterrupt:
                print(f"{prog}: interrupted", file=sys.stderr)
                return 130
            finally:
                logging.set_verbosity(verbosity)

        wrapped.prog = prog
        return wrapped

    return decorate


def _silence_stdout() -> None:
    """After a closed pipe: point stdout at /dev/null so the exit flush stays silent."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    finally:
        os.close(devnull)


def run(main: Callable[[Sequence[str]], int | None], prog: str | None = None) -> None:
    """``absl.app.run(main)``, with a bad flag reported as one error line and exit status 2.

    Args:
      main: the entry point; its return value is the exit status.
      prog: the name in error lines (default: the one given to `entry_point`).
    """
    name = prog or getattr(main, "prog", None) or os.path.basename(sys.argv[0])
    app.run(main, flags_parser=lambda argv: parse_flags(argv, name))


def parse_flags(
    argv: Sequence[str], prog: str, flag_values: flags.FlagValues = flags.FLAGS
) -> list[str]:
    """Parses ``argv`` into ``flag_values``; a bad flag exits with one error line and status 2.

    Returns:
      The arguments that are not flags (``argv[0]`` first), as absl returns them.
    """
    try:
        return flag_values(list(argv))
    except flags.Error as e:
        sys.exit(fail(prog, f"{e} (see --help)", 2))


def check_usage(
    argv: Sequence[str],
    flag_values: flags.FlagValues,
    required: Sequence[str] = (),
    folders: Sequence[str] = (),
) -> None:
    """The checks an entry point's ``main`` starts with; a `UsageError` names the flag.

    Args:
      argv: what absl left after parsing the flags (``argv[0]`` first): any
        more is a word without ``--``.
      flag_values: the entry point's flags.
      required: flags that must be given (``--NAME is required``).
      folders: flags that must name an existing folder
        (``--NAME=VALUE is not a folder``).
    """
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments {' '.join(argv[1:])!r} (flags need --)")
    for name in required:
        if not getattr(flag_values, name):
            raise UsageError(f"--{name} is required")
    for name in folders:
        if not os.path.isdir(getattr(flag_values, name)):
            raise UsageError(f"--{name}={getattr(flag_values, name)} is not a folder")


def _wants_startup_logs() -> bool:
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2") in ("0", "1")


def quiet_tensorflow() -> None:
    """Imports TensorFlow (and finds its devices) with the C++ start-up lines muted.

    Sets ``TF_CPP_MIN_LOG_LEVEL=2`` unless set (later C++ info and warning
    lines are hidden; errors stay). The lines TensorFlow writes while loading,
    before it reads that variable, go to /dev/null unless the variable asks
    for them (0 or 1). Python errors are unaffected. Calling it again, or after
    TensorFlow was imported, costs nothing.
    """
    if "tensorflow" in sys.modules:
        return
    if _wants_startup_logs():
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf  # noqa: PLC0415 - imported here to mute its start-up

        tf.config.list_physical_devices()  # CUDA probing logs here, not at the first op
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def answer_help_early() -> None:
    """For modules that import TensorFlow at the top: ``--help`` before that import.

    Call it in an ``if __name__ == "__main__":`` block placed before the heavy
    imports, after the flags are defined: with a help flag on the command line
    absl prints the help and exits without loading TensorFlow; otherwise
    TensorFlow is imported quietly (`quiet_tensorflow`).
    """
    if any(a in HELP_FLAGS for a in sys.argv[1:]):
        app.run(lambda argv: 0)
    quiet_tensorflow()

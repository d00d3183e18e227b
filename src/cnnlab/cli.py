"""The ``cnnlab`` command: the entry point registers the commands (one module each, in
cnnlab/commands/) and turns errors into one line with exit code 2."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from .commands import COMMANDS, os_error_line
from .commands.plot import PLOTS  # noqa: F401  (the figure kinds; tests and scripts read them here)
from .errors import CnnlabError


class UsageError(CnnlabError, ValueError):
    """A command line argparse cannot read (an unknown option, a missing value, a choice it lacks)."""


class Parser(argparse.ArgumentParser):
    """argparse with its errors as cnnlab's one line (``error: <what> (<command>): <fix>``, exit 2)
    instead of the usage text and a line of its own form."""

    def error(self, message: str):
        raise UsageError(message, self.prog, f"see {self.prog} --help")


def build_parser() -> argparse.ArgumentParser:
    from .version import __version__

    p = Parser(prog="cnnlab", description="Train, evaluate and explain convolutional "
                                "image classifiers (Keras vocabulary, PyTorch engine).")
    p.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors (default: off)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f".commands.{name}", __package__).add_parser(sub)
    return p


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """cnnlab's warnings as one line on stderr; other libraries' warnings as Python prints them."""
    from .errors import CnnlabWarning

    stream = file or sys.stderr
    if issubclass(category, CnnlabWarning):
        stream.write(f"warning: {message}\n")
    else:
        stream.write(warnings.formatwarning(message, category, filename, lineno, line))


def _repeats_rank0(e: CnnlabError) -> bool:
    """A data-parallel process other than rank 0 meets the same bad input as rank 0, which says it
    once; only a failure of its own (another process vanished) is its to report."""
    from .engine.distributed import DistributedError

    return os.environ.get("RANK", "0") != "0" and int(os.environ.get("WORLD_SIZE", "1")) > 1 and \
        not isinstance(e, DistributedError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser.parse_args(argv)
    except UsageError as e:
        if "--debug" in argv:
            raise
        print(f"error: {e.line()}", file=sys.stderr)
        return 2
    args.argv = argv  # the command as typed: --nproc starts processes of it
    if args.command is None:
        parser.print_help()
        return 0
    previous_show = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        if getattr(args, "_options", None) is not None:  # the command's declared options, read and checked
            from .options import read_options

            read_options(args, args._options)
        return args.func(args)
    except CnnlabError as e:
        if args.debug:
            raise
        if not _repeats_rank0(e) and not getattr(e, "reported", False):  # reported: a process printed it
            print(f"error: {e.line()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (cnnlab ... | head): stop quietly, as command-line tools do.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 141
    except OSError as e:  # disk full, read-only or missing folder, permissions: not a bug
        if args.debug:
            raise
        print(f"error: {os_error_line(e)}", file=sys.stderr)
        return 2
    except MemoryError:
        if args.debug:
            raise
        print("error: out of memory: use a smaller --batch-size, --image-size or model", file=sys.stderr)
        return 2
    except Exception as e:  # a bug: say so in one line unless --debug
        if args.debug:
            raise
        print(f"error: internal error {type(e).__name__}: {e} (rerun with --debug for the traceback "
              "and report it)", file=sys.stderr)
        return 1
    finally:
        warnings.showwarning = previous_show


if __name__ == "__main__":
    sys.exit(main())

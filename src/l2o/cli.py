"""The ``l2o`` command. Each command group lives in ``l2o.commands.<group>`` and registers
its own sub-parser, so that heavy imports happen only when a command runs."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMAND_MODULES = ("l2o.commands.reproduce", "l2o.commands.meta", "l2o.commands.bench",
                   "l2o.commands.noise", "l2o.commands.continual")


def build_parser() -> argparse.ArgumentParser:
    from l2o import __version__

    parser = argparse.ArgumentParser(prog="l2o", description="Meta-train, deploy and benchmark optimizers.")
    parser.add_argument("--version", action="version", version=f"l2o {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        if argv is None and getattr(args, "end_at_once", False):
            # the program itself (not a call from Python), stopped with its results stored: skip
            # the interpreter's exit-time joins of helper threads (see commands/bench.py)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        return code
    except KeyboardInterrupt:
        # (l2o bench run says itself how to resume; commands with --resume continue with it)
        hint = "; to resume, run the same command again with --resume" if hasattr(args, "resume") else ""
        print(f"l2o: interrupted{hint}", file=sys.stderr)
        return 130
    except (ValueError, KeyError, FileNotFoundError) as exc:
        # User errors (bad names, bad grids, missing files) get one clear line, not a traceback.
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"l2o: error: {message}", file=sys.stderr)
        return 2
    except (IsADirectoryError, NotADirectoryError, FileExistsError, PermissionError) as exc:
        # An output path that is a file where a directory is expected (or the reverse), or that
        # may not be written: one line naming the path, not a traceback.
        print(f"l2o: error: {_path_error(exc)}", file=sys.stderr)
        return 2


def _path_error(exc: OSError) -> str:
    # os.replace (atomic writes) names the temporary file first and the target second
    path = exc.filename2 or exc.filename or "?"
    if isinstance(exc, IsADirectoryError):
        return f"{path} is a directory; a file was expected there"
    if isinstance(exc, NotADirectoryError):
        return f"{path}: part of this path is a file; a directory was expected there"
    if isinstance(exc, FileExistsError):
        return f"{path} already exists (as a file?); a directory was expected there"
    return f"{path}: permission denied ({exc.strerror or exc})"


if __name__ == "__main__":
    sys.exit(main())

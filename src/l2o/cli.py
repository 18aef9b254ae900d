"""The ``l2o`` command. Each command group lives in ``l2o.commands.<group>`` and registers
its own sub-parser, so that heavy imports happen only when a command runs."""

from __future__ import annotations

import argparse
import importlib
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
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, KeyError, FileNotFoundError) as exc:
        # User errors (bad names, bad grids, missing files) get one clear line, not a traceback.
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"l2o: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

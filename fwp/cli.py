"""The ``fwp`` command line: ``fwp <workflow> <command> [options]``.

Each workflow package (``fwp.fewshot``, ``fwp.formal``, ...) owns a ``cli`` module with a
``register(subparsers)`` function that adds its commands; every command sets ``func`` to a
callable taking the parsed arguments and returning an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from fwp.allocator import keep_freed_memory
from fwp.errors import RunStopped, UserError

WORKFLOWS = {
    "fewshot": ("fwp.fewshot.cli", "sequential N-way K-shot learning"),
    "formal": ("fwp.formal.cli", "formal-language tests of expressivity"),
    "lm": ("fwp.lm.cli", "language modelling with any layer list: train, eval, generate"),
    "rl": ("fwp.rl.cli", "reinforcement learning with FWP cores, and RTRL"),
    "series": ("fwp.series.cli", "time-series classification with continuous-time FWPs"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fwp", description="Fast weight programmers.")
    workflows = parser.add_subparsers(dest="workflow", metavar="WORKFLOW")
    for name, (module_name, help_text) in WORKFLOWS.items():
        if importlib.util.find_spec(module_name) is None:
            continue
        sub = workflows.add_parser(name, help=help_text)
        commands = sub.add_subparsers(dest="command", metavar="COMMAND")
        importlib.import_module(module_name).register(commands)
        sub.set_defaults(_parser=sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        (getattr(args, "_parser", None) or parser).print_help()
        return 2
    keep_freed_memory()  # the same numbers, fewer page faults (fwp/allocator.py)
    try:
        return int(args.func(args) or 0)
    except UserError as error:
        print(f"fwp: error: {error}", file=sys.stderr)
        return 2
    except RunStopped as stop:  # SIGINT / SIGTERM: the run saved its checkpoint first
        print(f"fwp: {stop}", file=sys.stderr)
        return stop.exit_code
    except KeyboardInterrupt:
        # A Ctrl-C that the command did not turn into a clean stop (during the CPU kernels'
        # build, or a second one while training saves): one line and the shell's 128 + SIGINT.
        print("fwp: interrupted (Ctrl-C); a run resumes from its last checkpoint with --resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""Entry point: `python -m experiments.run [COMMAND] [options]`.

Global option: --debug shows the full traceback of an error (by default a known error -- bad data, a damaged
potential file or checkpoint, a bad storage URL, a missing file -- is one line on stderr, exit status 2).

Commands (training is the default when no command is given):
  train            train and evaluate a model on a dataset
  compare          allegro, allegro-mlp, allegro-qdi under identical data and budget: errors, size, speed
  analyze-circuit  analyses of the QDI circuit (Fourier, Fisher information, ZX, QASM)
  hpo              multi-objective hyperparameter search (forces MAE vs inference time) on Optuna
  md               molecular dynamics with a trained potential (jax-md, NVE / NVT)
  study            the seed paper's whole study, resumable: searches, comparisons, transfer, report
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional, Tuple

# command -> module with add_arguments(parser) and main(args) -> int
COMMANDS = {
    "train": ("experiments.train", "train and evaluate a model on a dataset (default command)"),
    "compare": ("experiments.compare", "train allegro and its variants under one budget and compare them"),
    "analyze-circuit": ("experiments.analyze_circuit", "analyse the QDI circuit: Fourier, Fisher, ZX, QASM"),
    "hpo": ("experiments.hpo", "multi-objective hyperparameter search: forces MAE vs inference time"),
    "md": ("experiments.md", "molecular dynamics with a trained potential (jax-md; NVE or Langevin NVT)"),
    "study": ("experiments.study", "the seed paper's whole study, resumable: hpo, compare, transfer, report"),
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Adds "(default: X)" to an option's help unless the help already states its default, the option is a flag
    or a required option (marked "(required)"), or its default is None (the help says what happens without it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            return text
        if action.required:
            return f"{text} (required)"
        if "default" in text.lower() or any(action.default is v for v in (None, False, argparse.SUPPRESS)):
            return text
        return f"{text} (default: %(default)s)"


DESCRIPTION = """Train, compare and search qallegro potentials, analyse the QDI circuit, run MD.

Training is the default command: `python -m experiments.run --dataset D --model M` is `... train --dataset D
--model M`. `python -m experiments.run COMMAND --help` lists every option of a command with its units and
default.

Errors: bad input (data, a potential file, a checkpoint, a study plan or storage, a missing file, a bad option)
is reported in one line on stderr, exit status 2; `--debug` (before or after the command) shows the traceback.
An unexpected exception (a bug) always shows its traceback."""

#: exit status of a run stopped by a known error (as argparse's for a bad option)
ERROR_STATUS = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.run", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error instead of its one-line message (any command)")
    sub = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:  # a real missing dependency, not a command still to come
                raise
            continue
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_main=mod.main)
    return parser


def split_debug(argv: List[str]) -> Tuple[List[str], bool]:
    """`argv` without the global ``--debug`` flag (wherever it stands before a ``--``), and whether it was there."""
    end = argv.index("--") if "--" in argv else len(argv)
    head = [a for a in argv[:end] if a != "--debug"]
    return head + argv[end:], len(head) < end


def report_error(err: BaseException, debug: bool) -> Optional[int]:
    """Print the one-line message of a known error to stderr and return the exit status; None when `err` must
    propagate: with `debug`, or an unexpected exception (a bug, whose traceback is shown)."""
    from qallegro.errors import user_message

    message = None if debug else user_message(err)
    if message is None:
        return None
    print(f"error: {message} (--debug shows the traceback)", file=sys.stderr)
    return ERROR_STATUS


def main(argv: Optional[List[str]] = None) -> int:
    """Run a command; returns its exit status (`ERROR_STATUS` after a known error, see `report_error`)."""
    argv, debug = split_debug(list(sys.argv[1:] if argv is None else argv))
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv = ["train"] + argv
    if argv[0] == "train":  # multi-process training joins jax.distributed before the parser's imports start JAX
        from experiments.train import start_processes_from_argv

        start_processes_from_argv(argv[1:])
    args = build_parser().parse_args(argv)
    from experiments.config import enable_compilation_cache

    try:
        enable_compilation_cache()  # a program compiled by an earlier run is read from disk, not compiled again
        return args._main(args)
    except Exception as err:
        status = report_error(err, debug)
        if status is None:
            raise
        return status


if __name__ == "__main__":
    sys.exit(main())

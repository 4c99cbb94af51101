"""Entry point: `python -m experiments.run [COMMAND] [options]`.

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
from typing import List, Optional

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
default."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.run", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv = ["train"] + argv
    args = build_parser().parse_args(argv)
    from experiments.config import enable_compilation_cache

    enable_compilation_cache()  # a program compiled by an earlier run is read from disk, not compiled again
    return args._main(args)


if __name__ == "__main__":
    sys.exit(main())

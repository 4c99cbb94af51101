"""The project's named errors, in one place.

Bad input (a data file, a potential file, a checkpoint, a plan, a study storage, an option) is reported with
these classes, in a message that names the file, frame, atom, key or URL at fault; some configuration checks
still raise a plain ``ValueError`` with such a message. The classes are defined beside the code that raises them
and re-exported here (lazily: importing this module imports neither JAX nor Optuna):

===================  ===============================  ============================================================
class                defined in                       raised for
===================  ===============================  ============================================================
``DataError``        ``qallegro.data.structure``      malformed data: file, frame and atom named
``ArtifactError``    ``qallegro.potential.artifact``  a potential file that cannot be loaded
``CheckpointError``  ``qallegro.train.checkpoint``    a damaged, missing or mismatched checkpoint
``PlanError``        ``qallegro.study.plan``          a study plan that cannot be run
``SelectionError``   ``qallegro.study.select``        no trial of a study can be selected
``StorageError``     here                             a storage URL or study database that cannot be used
``ConfigError``      here                             a bad option or hyperparameter (``qallegro.quantum.config``)
===================  ===============================  ============================================================

``python -m experiments.run`` prints one line for each of them (and for an unreadable file, see
`user_message`) and exits with status 2; ``--debug`` shows the traceback instead.

Not bad input, and so not in the table: ``MDWatchdogError`` (``qallegro.md.dynamics``), a simulation stopped by
its watchdog (forces, temperature, energy drift or an isolated atom out of bounds). ``experiments.run md``
catches it, keeps the trajectory up to the last good frame, writes the error into summary.json and exits with
status 1 (``experiments.md.WATCHDOG_STATUS``), so a script can tell "the input was wrong" (2) from "the dynamics
blew up" (1).
"""

from __future__ import annotations

import importlib
import linecache
import os
import sys
from typing import Optional, Tuple, Type

#: class name -> module that defines it
DEFINED_IN = {
    "DataError": "qallegro.data.structure",
    "ArtifactError": "qallegro.potential.artifact",
    "CheckpointError": "qallegro.train.checkpoint",
    "PlanError": "qallegro.study.plan",
    "SelectionError": "qallegro.study.select",
    "StorageError": __name__,
    "ConfigError": __name__,
}

__all__ = sorted(DEFINED_IN) + ["known_errors", "user_message"]

_PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class StorageError(ValueError):
    """An Optuna storage that cannot be opened: an unknown or malformed URL (no SQLAlchemy dialect for its
    scheme), an unreachable database server, or a file that is not an intact study database. The message
    names the URL or the file."""


class ConfigError(ValueError):
    """An invalid option or hyperparameter value: out of range, of the wrong type, or an unknown choice. The
    message names the option and the accepted values."""


def __getattr__(name: str) -> Type[Exception]:
    if name in DEFINED_IN:
        return getattr(importlib.import_module(DEFINED_IN[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def known_errors(loaded_only: bool = False) -> Tuple[Type[Exception], ...]:
    """The named error classes of `DEFINED_IN`.

    Args:
        loaded_only: only those whose module is imported already (an exception can only be an instance of a
            class that exists, so a handler can test against these without importing JAX or Optuna).
    """
    classes = []
    for name, module in DEFINED_IN.items():
        if module in sys.modules or not loaded_only:
            try:
                classes.append(getattr(importlib.import_module(module), name))
            except (ImportError, AttributeError):  # a module without the class (an older checkout): skip it
                continue
    return tuple(classes)


def _raised_by_project(err: BaseException) -> bool:
    """Whether `err` comes from a ``raise`` statement in this project's own code (qallegro/, experiments/): a
    message written for the user, as opposed to an exception that surfaced from a library or a bug."""
    tb = err.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    filename = os.path.abspath(tb.tb_frame.f_code.co_filename)
    if not filename.startswith(_PROJECT_ROOT + os.sep) or os.sep + ".venv" + os.sep in filename:
        return False
    return linecache.getline(filename, tb.tb_lineno).strip().startswith("raise")


def _storage_library_error(err: BaseException) -> bool:
    module = type(err).__module__ or ""
    return module.startswith("sqlalchemy.") or type(err).__name__ == "StorageInternalError"


def user_message(err: BaseException) -> Optional[str]:
    """The one-line message for an error caused by the user's input, or None for an unexpected exception (a
    bug: its traceback must be shown).

    Known: the classes of `known_errors`; `OSError` (a missing or unreadable file, named with its path);
    a storage error of SQLAlchemy or Optuna that escaped the library's checks; and a ``ValueError`` or
    ``FloatingPointError`` raised by a ``raise`` statement in qallegro's or the experiments' own code (a bad
    option or config key, a diverged training), whose message is written for the user.
    """
    if isinstance(err, known_errors(loaded_only=True)):
        text = str(err)
    elif isinstance(err, OSError):
        if err.filename is not None:
            target = f"{err.filename}" + (f" -> {err.filename2}" if err.filename2 is not None else "")
            text = f"{err.strerror or type(err).__name__}: {target}"
        else:
            text = str(err) or type(err).__name__
    elif _storage_library_error(err):
        text = f"the study storage cannot be used: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
    elif type(err) in (ValueError, FloatingPointError) and _raised_by_project(err):
        text = str(err)
    else:
        return None
    return " ".join(text.split()) or type(err).__name__

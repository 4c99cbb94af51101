"""Picking each family's configuration from its search, by one stated rule.

Rule ``lowest_error``: the completed trial with the lowest validation error (forces MAE; energy MAE for QM9),
ties broken by the lower inference time, then the lower trial number. That trial is always on the Pareto front
(nothing has a lower error), and the paper's claims are about accuracy at each family's best, so the comparison
is between each family's most accurate configuration, with its inference time reported beside it. An optional
``max_inference_ms`` restricts the choice to trials at most that fast, for a comparison at an inference budget.

The choice is written once to selected.json and then frozen: the final runs of a later session use the same
configuration even if the search grew meanwhile (delete the file to choose again).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Sequence

from optuna.trial import FrozenTrial, TrialState

from qallegro.study.plan import SelectionRule


class SelectionError(ValueError):
    """No trial satisfies the selection rule."""


def select_trial(trials: Sequence[FrozenTrial], rule: SelectionRule) -> FrozenTrial:
    """The trial that `rule` picks among the completed `trials` of a two-objective (error, ms) study.

    Raises:
        SelectionError: no completed trial, or none within `rule.max_inference_ms`.
    """
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.values is not None]
    if not done:
        raise SelectionError("the search has no completed trial")
    if rule.max_inference_ms is not None:
        done = [t for t in done if t.values[1] <= rule.max_inference_ms]
        if not done:
            raise SelectionError(f"no completed trial within {rule.max_inference_ms} ms/structure")
    return min(done, key=lambda t: (t.values[0], t.values[1], t.number))


def selection_record(trial: FrozenTrial, rule: SelectionRule, n_complete: int, study_name: str) -> Dict[str, Any]:
    """The JSON record of a selected trial: rule, trial number, parameters, objectives and its details."""
    attrs = trial.user_attrs
    return {"rule": rule.rule, "max_inference_ms": rule.max_inference_ms, "study": study_name,
            "trial": trial.number, "params": dict(trial.params), "values": list(trial.values),
            "error_metric": attrs.get("error_metric"), "n_parameters": attrs.get("n_parameters"),
            "epochs": attrs.get("epochs"), "timing": attrs.get("timing"), "n_complete": n_complete}


def load_selection(path: str) -> Optional[Dict[str, Any]]:
    """The frozen selection at `path`, or None when there is none yet."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def select_from_storage(url: str, study_name: str, rule: SelectionRule, n_trials: int,
                        path: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """The selection of a study: frozen at `path` if written before; else chosen now when the study holds
    `n_trials` completed trials (then written to `path`); else None (the search is not finished).

    Raises:
        SelectionError: as `select_trial`.
        qallegro.errors.StorageError: the storage cannot be used (a damaged study database, named).
    """
    import optuna

    from qallegro.train.run import write_json

    if path is not None and (frozen := load_selection(path)) is not None:
        return frozen
    if url.startswith("sqlite:///") and not os.path.exists(url[len("sqlite:///"):]):
        return None  # no storage yet (load_study would create an empty one)
    from qallegro.hpo.study import storage_errors

    try:
        with storage_errors(url):  # a damaged database: a StorageError naming the file
            study = optuna.load_study(study_name=study_name, storage=url)
    except KeyError:
        return None  # no such study yet
    trials = study.get_trials(deepcopy=False)
    n_complete = sum(t.state == TrialState.COMPLETE for t in trials)
    if n_complete < n_trials:
        return None
    record = selection_record(select_trial(trials, rule), rule, n_complete, study_name)
    if path is not None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_json(path, record)
    return record

"""Reading the committed results of a study: final runs (results.json), searches (study.json, selected.json)
and the finite-shot evaluation. The report and its tests read only these files."""

from __future__ import annotations

import glob
import json
import os
from typing import Any, Dict, List, Optional, Tuple

from qallegro.study.layout import STAGE_DIRS, StudyLayout

RunKey = Tuple[str, str, str]  # (stage, dataset, family)


def load_runs(layout: StudyLayout) -> Dict[RunKey, List[Dict[str, Any]]]:
    """Every committed final run, {(stage, dataset, family): [results, sorted by seed]}.

    Raises:
        ValueError: a results.json that is not valid JSON or lacks its identity keys (names the file).
    """
    runs: Dict[RunKey, List[Dict[str, Any]]] = {}
    for stage in STAGE_DIRS:
        for path in sorted(glob.glob(os.path.join(layout.results, stage, "*", "*", "seed*", "results.json"))):
            try:
                with open(path) as f:
                    run = json.load(f)
                key = (run["stage"], run["dataset"], run["family"])
                int(run["seed"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                raise ValueError(f"{path}: not a study results file ({err})") from err
            runs.setdefault(key, []).append(run)
    for value in runs.values():
        value.sort(key=lambda r: int(r["seed"]))
    return runs


def family_runs(runs: Dict[RunKey, List[Dict[str, Any]]], dataset: str, family: str) -> List[Dict[str, Any]]:
    """The final runs of `family` on `dataset`: the compare stage's, else the transfer stage's (the hybrid on the
    datasets it was transferred to); [] when none."""
    return runs.get(("compare", dataset, family)) or runs.get(("transfer", dataset, family)) or []


def load_search(layout: StudyLayout, dataset: str, family: str) -> Optional[Dict[str, Any]]:
    """A search's committed summary (study.json of `qallegro.hpo.report.write_report`) with its frozen selection
    under "selected" (None when not selected yet); None when the search has not reported yet."""
    path = os.path.join(layout.hpo_dir(dataset, family), "study.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        summary = json.load(f)
    selected = layout.selection(dataset, family)
    summary["selected"] = json.load(open(selected)) if os.path.exists(selected) else None
    return summary


def load_shots(layout: StudyLayout, dataset: str, family: str) -> Optional[Dict[str, Any]]:
    """The finite-shot evaluation's results, or None when not run."""
    path = os.path.join(layout.shots_dir(dataset, family), "results.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)

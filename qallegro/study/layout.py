"""Where the study keeps its files.

Committed (RESULTS, default experiments/results/study), everything a later session or another machine needs and
every number of the report comes from::

    hpo/DATASET/FAMILY/study.db          the Optuna study (SQLite): trials, parameters, objectives
    hpo/DATASET/FAMILY/study.json        its summary, pareto.md/png, hypervolume.png
    hpo/DATASET/FAMILY/selected.json     the configuration picked for the final runs (frozen once written)
    hpo/DATASET/timing.json              exact inference timings per architecture (all families of DATASET)
    STAGE/DATASET/FAMILY/seedS/results.json   a finished final run (STAGE: compare or transfer)
    STAGE/DATASET/FAMILY/seed0/potential.qallegro
    compare/DATASET/speed.json           the selected configurations of DATASET timed together (speed claims)
    shots/DATASET/FAMILY/results.json    the finite-shot evaluation
    figures/*.png                        the report's figures

Scratch (SCRATCH, default runs/study; not committed): the trial runs of every search
(hpo/DATASET/FAMILY/trials/HASH) and the final runs' working directories (STAGE/DATASET/FAMILY/seedS) with their
checkpoints, from which an interrupted run resumes.
"""

from __future__ import annotations

import dataclasses
import os

STAGE_DIRS = ("compare", "transfer")


@dataclasses.dataclass(frozen=True)
class StudyLayout:
    """The study's folders (absolute paths) and the report file."""

    results: str
    scratch: str
    report: str

    @classmethod
    def create(cls, results: str, scratch: str, report: str) -> "StudyLayout":
        """A layout of absolute paths; creates nothing."""
        return cls(os.path.abspath(results), os.path.abspath(scratch), os.path.abspath(report))

    def hpo_dir(self, dataset: str, family: str) -> str:
        return os.path.join(self.results, "hpo", dataset, family)

    def hpo_storage(self, dataset: str, family: str) -> str:
        return os.path.join(self.hpo_dir(dataset, family), "study.db")

    def selection(self, dataset: str, family: str) -> str:
        return os.path.join(self.hpo_dir(dataset, family), "selected.json")

    def timing_cache(self, dataset: str) -> str:
        return os.path.join(self.results, "hpo", dataset, "timing.json")

    def trials_dir(self, dataset: str, family: str) -> str:
        return os.path.join(self.scratch, "hpo", dataset, family, "trials")

    def run_dir(self, stage: str, dataset: str, family: str, seed: int) -> str:
        """The committed folder of a final run (results.json, and potential.qallegro for seed 0)."""
        if stage not in STAGE_DIRS:
            raise ValueError(f"stage must be one of {STAGE_DIRS}, got {stage!r}")
        return os.path.join(self.results, stage, dataset, family, f"seed{seed}")

    def work_dir(self, stage: str, dataset: str, family: str, seed: int) -> str:
        """The scratch folder where that run trains (checkpoints)."""
        return os.path.join(self.scratch, stage, dataset, family, f"seed{seed}")

    def shots_dir(self, dataset: str, family: str) -> str:
        return os.path.join(self.results, "shots", dataset, family)

    @property
    def figures(self) -> str:
        return os.path.join(self.results, "figures")

    def relative(self, path: str) -> str:
        """`path` relative to the report's folder (for links in the report)."""
        return os.path.relpath(path, os.path.dirname(self.report))

"""The seed paper's study, reproduced as one resumable workflow: searches per dataset and family (SAMO-COBRA of
the validation error against the exact inference time), final runs of each family's selected configuration over
seeds, the transfer of the Cu–Li hybrid configuration, a finite-shot evaluation, and the report that tests the
paper's claims (Laskaris et al., arXiv:2602.16908).

Modules: `plan` (the typed plan from YAML), `layout` (folders), `stages` (hpo, compare, transfer), `runs` (one
final run), `select` (the selection rule), `convergence` (the criterion), `statistics` (bootstraps), `claims`,
`report`, `figures`, `results` (reading committed results), `finite_shots`, `cost` (the compute estimate) and
`workflow` (`run_study`). The command line is ``python -m experiments.run study``.
"""

from qallegro.study.plan import StudyPlan, load_plan
from qallegro.study.workflow import STAGES, run_study

__all__ = ["STAGES", "StudyPlan", "load_plan", "run_study"]

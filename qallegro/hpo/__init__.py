"""Multi-objective hyperparameter optimisation on Optuna: SAMO-COBRA as a sampler, search spaces, the study
driver (storage, resume, several workers) and the objectives of a potential (forces MAE, inference time)."""

from qallegro.hpo.samo_cobra import SamoCobraSampler
from qallegro.hpo.space import from_unit, space_from_yaml, to_unit

__all__ = ["SamoCobraSampler", "from_unit", "space_from_yaml", "to_unit"]

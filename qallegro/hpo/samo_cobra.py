"""SAMO-COBRA as an Optuna sampler.

SAMO-COBRA (de Winter, van Stein, Bäck: "SAMO-COBRA: A fast surrogate assisted constrained multi-objective
optimization algorithm", EMO 2021, LNCS 12654) for expensive, few-evaluation problems:

1. an initial space-filling design (Latin hypercube or scrambled Halton, d + 1 points by default);
2. every iteration: one RBF surrogate per objective and per constraint, fitted on all evaluated points in the
   unit box, each with the kernel (and output transform: none or plog) that predicts best in k-fold
   cross-validation;
3. infill: the point that maximises the predicted hypervolume improvement of the current Pareto front (PHV;
   or SMS, the same with an additive epsilon margin), subject to predicted feasibility and to a distance
   requirement to every evaluated point that cycles through a shrinking list (global steps, then local ones);
   candidates dominated by the front are ranked by how far they are from it (so the search always has a
   direction); the best of many candidates is refined with COBYLA;
4. one evaluation per iteration.

Inexpensive objectives and constraints (IOC-SAMO-COBRA; de Winter et al., Memetic Computing 2022): an objective or
constraint that is a cheap, exact function of the configuration (inference time depends only on the architecture)
is not modelled. A candidate x is scored with the objective vector y(x), y_j = f_j(params(x)) for a cheap
objective j and y_j = RBF_j(x) otherwise, both normalised by the ideal and reference points of the evaluated
feasible values: PHV(x) = HV(front + {y(x)}) - HV(front) when y(x) is not dominated. A candidate that violates a
cheap constraint, g(params(x)) > 0, is rejected outright (also in the initial design and in the random fallback),
never through a surrogate.

Integer and categorical parameters live in the continuous box and are rounded (see qallegro.hpo.space); the
surrogates are evaluated at the rounded point, and a configuration that was already evaluated, is running, or
failed is never proposed again. Everything is a deterministic function of (seed, trial number, study history),
so a study is reproducible and several workers can share one Optuna storage (running trials of other workers
count as evaluated for the distance requirement).

Hypervolumes come from Optuna (via qallegro.hpo.optuna_compat), the RBFs from scipy.interpolate.RBFInterpolator, the
design from scipy.stats.qmc, the local optimiser from scipy.optimize.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.search_space import IntersectionSearchSpace
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState
from scipy.interpolate import RBFInterpolator
from scipy.optimize import minimize
from scipy.stats import qmc

from qallegro.hpo.optuna_compat import compute_hypervolume, pareto_front_mask, process_constraints_after_trial
from qallegro.hpo.space import from_unit, snap, snap_array, to_unit

# Polyharmonic kernels: free of a shape parameter, so no length scale has to be tuned per problem.
DEFAULT_KERNELS = ("cubic", "thin_plate_spline", "quintic", "linear")
# COBRA's cycle of distance requirements (fractions of the unit box side): global, then ever more local.
DEFAULT_DISTANCES = (0.3, 0.05, 0.001, 0.0005, 0.0)


def plog(y: np.ndarray) -> np.ndarray:
    """SAMO-COBRA's output transform ``plog(y) = sign(y) ln(1 + |y|)``: tames objectives spanning decades."""
    return np.sign(y) * np.log1p(np.abs(y))


def plog_inverse(z: np.ndarray) -> np.ndarray:
    return np.sign(z) * np.expm1(np.abs(z))


class SpanRBF:
    """``RBFInterpolator(X, z, kernel, degree=1)`` fitted in the affine span of its nodes.

    The linear tail needs nodes that span their space: with a parameter that the nodes do not vary (a cheap
    objective that ignores the learning rate, a search whose trials all share one value) or that varies in step
    with another, scipy raises LinAlgError ("matrix of monomials ... does not have full column rank"). The nodes
    are expressed in an orthonormal basis of their own affine span instead (pairwise distances are unchanged), and
    a query point by its projection onto that span: the model is then constant along the directions no node has
    explored, which is all the nodes can say about them.

    Args:
        X: (n, d) unique nodes; z: (n,) values; kernel: a scipy RBF kernel name.
    """

    def __init__(self, X: np.ndarray, z: np.ndarray, kernel: str):
        self._centre = X.mean(axis=0)
        _, sv, vt = np.linalg.svd(X - self._centre, full_matrices=False)
        rank = int(np.sum(sv > 1e-9 * max(float(sv.max(initial=0.0)), 1.0)))
        self._basis = vt[:rank].T  # (d, rank)
        self._constant = float(np.mean(z)) if rank == 0 else None  # one distinct node
        if rank:
            self._rbf = RBFInterpolator((X - self._centre) @ self._basis, z, kernel=kernel, degree=1)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """Values at (q, d) points, shape (q,)."""
        X = np.atleast_2d(X)
        if self._constant is not None:
            return np.full(len(X), self._constant)
        return self._rbf((X - self._centre) @ self._basis)


class Surrogate:
    """An RBF model of one output over the unit box, with kernel and transform chosen by k-fold validation.

    Args:
        X: (n, d) points in [0, 1]^d, unique rows.
        y: (n,) values.
        kernels: candidate RBF kernels (scipy names).
        folds: number of cross-validation folds (<= n).
    """

    def __init__(self, X: np.ndarray, y: np.ndarray, kernels: Sequence[str] = DEFAULT_KERNELS, folds: int = 5):
        self.kernel, self.transform = self._select(X, y, kernels, folds)
        z = plog(y) if self.transform == "plog" else y
        self._rbf = SpanRBF(X, z, self.kernel)

    @staticmethod
    def _fit_predict(X, y, Xq, kernel, transform):
        z = plog(y) if transform == "plog" else y
        out = SpanRBF(X, z, kernel)(Xq)
        return plog_inverse(out) if transform == "plog" else out

    def _select(self, X, y, kernels, folds) -> Tuple[str, str]:
        n = len(X)
        k = min(folds, n)
        fold = np.arange(n) % k
        best, best_err = (kernels[0], "none"), np.inf
        for kernel in kernels:
            for transform in ("none", "plog"):
                err = 0.0
                try:
                    for f in range(k):
                        test = fold == f
                        if (~test).sum() < X.shape[1] + 2:  # too few points left for the linear tail
                            raise np.linalg.LinAlgError
                        pred = self._fit_predict(X[~test], y[~test], X[test], kernel, transform)
                        err += float(np.sum((pred - y[test]) ** 2))
                except (np.linalg.LinAlgError, ValueError):
                    continue
                if np.isfinite(err) and err < best_err:
                    best, best_err = (kernel, transform), err
        return best

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """Predictions at (q, d) points, shape (q,)."""
        out = self._rbf(np.atleast_2d(X))
        return plog_inverse(out) if self.transform == "plog" else out


def _dedupe(X: np.ndarray, Y: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Average the outputs of repeated points (noisy objectives such as timings): RBFs need unique nodes."""
    keys, inverse = np.unique(np.round(X, 12), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    sums = np.zeros((len(keys), Y.shape[1]))
    np.add.at(sums, inverse, Y)
    counts = np.bincount(inverse, minlength=len(keys))[:, None]
    return keys, sums / counts


class SamoCobraSampler(BaseSampler):
    """SAMO-COBRA (de Winter et al., EMO 2021) for single- and multi-objective, optionally constrained studies,
    with exact inexpensive objectives and constraints (IOC-SAMO-COBRA, de Winter et al. 2022) where given.

    Args:
        search_space: the parameters to optimise jointly, {name: optuna distribution}. If None, the intersection
            of the completed trials' spaces is used (the first trials are then sampled at random).
        n_initial: size of the initial design (default d + 1).
        initial_design: "lhs" (Latin hypercube) or "halton" (scrambled Halton).
        infill: "phv" (predicted hypervolume improvement) or "sms" (the same with an additive epsilon margin
            that keeps proposals off the current front).
        reference_point: reference point of the hypervolume in the objectives' units, oriented for
            minimisation (maximised objectives enter negated). Default: the worst observed feasible values plus
            10 % of their range.
        kernels: RBF kernels that cross-validation chooses from.
        distance_requirements: cycle of minimum distances (unit box) between a proposal and evaluated points.
        constraints_func: optional, as Optuna's NSGA-II: trial -> constraint values, feasible when all <= 0.
            Constraints set in the objective with `trial.set_constraint` (Optuna >= 5) are used without it.
        n_candidates: random candidates screened per iteration (default max(2000, 200 d)).
        seed: makes the sampler deterministic.
        cheap_objectives: {objective index: f(params) -> float}, objectives that are exact, inexpensive functions
            of the parameters dict (as in ``trial.params``), in the objective's own units and direction (the
            value the objective itself returns, e.g. inference time in ms, minimised). They are not modelled:
            the infill criterion takes f(params) of each candidate, and only the other objectives get RBF
            surrogates. The evaluated points still enter with the values their trials returned. A candidate whose
            cheap value is not finite ranks below every other. IOC-SAMO-COBRA (de Winter et al. 2022).
        cheap_constraints: {name: g(params) -> float}, exact inexpensive constraints, feasible when g <= 0 (for
            an inference-time ceiling T: ``g = t(params) - T``). Every proposal satisfies them, the initial design
            included (an infeasible design point is replaced by the feasible point of a scrambled Halton pool
            farthest from the rest of the design); NaN counts as violated. A trial constraint of the same name
            (``trial.set_constraint(name, ...)``, which Optuna's ``best_trials`` then also respects) is not
            modelled. If no feasible candidate is found, the least violating one is proposed with a warning.
        cheap_budget: None (default) for cheap functions that cost next to nothing (analytic ones): every
            screened candidate (a few thousand per proposal) and every COBYLA step is valued exactly. An int k
            for functions that cost seconds, such as timing a compiled model: per proposal at most k new
            configurations are valued (plus, once each, the evaluated trials and the initial design's
            replacements); the candidates are screened with the exact values known so far, interpolated by a
            cubic RBF between them, only to decide which k to value, and the proposal is the best of the
            exactly valued candidates. Exact values are kept for the sampler's life, so the screen also depends
            on what this sampler object valued before: one process is deterministic per seed, but two workers
            on one storage may propose differently from the same history.

    Without a budget the exact values are reused only within one proposal. Either way a function that costs
    seconds should memoise on the parameters it depends on (the architecture, not the learning rate).

    Raises:
        ValueError: unknown `initial_design` or `infill`; a negative cheap objective index; `cheap_budget`
            below 1; at the first proposal, a cheap objective index beyond the study's objectives.
        TypeError: a cheap objective or constraint that is not callable.
    """

    def __init__(self, search_space: Optional[Dict[str, BaseDistribution]] = None, n_initial: Optional[int] = None,
                 initial_design: str = "lhs", infill: str = "phv", reference_point: Optional[Sequence[float]] = None,
                 kernels: Sequence[str] = DEFAULT_KERNELS,
                 distance_requirements: Sequence[float] = DEFAULT_DISTANCES,
                 constraints_func: Optional[Callable[[FrozenTrial], Sequence[float]]] = None,
                 n_candidates: Optional[int] = None, seed: Optional[int] = None,
                 cheap_objectives: Optional[Mapping[int, Callable[[Dict[str, Any]], float]]] = None,
                 cheap_constraints: Optional[Mapping[str, Callable[[Dict[str, Any]], float]]] = None,
                 cheap_budget: Optional[int] = None):
        if initial_design not in ("lhs", "halton"):
            raise ValueError(f"initial_design must be 'lhs' or 'halton', got {initial_design!r}")
        if infill not in ("phv", "sms"):
            raise ValueError(f"infill must be 'phv' or 'sms', got {infill!r}")
        self._search_space = dict(search_space) if search_space else None
        self._n_initial = n_initial
        self._initial_design = initial_design
        self._infill = infill
        self._reference_point = None if reference_point is None else np.asarray(reference_point, float)
        self._kernels = tuple(kernels)
        self._distances = tuple(distance_requirements)
        self._constraints_func = constraints_func
        self._n_candidates = n_candidates
        self._seed = 0 if seed is None else int(seed)
        self._intersection = IntersectionSearchSpace()
        self._random = RandomSampler(seed=seed)
        self._cheap_objectives = {int(k): f for k, f in sorted((cheap_objectives or {}).items())}
        self._cheap_constraints = dict(cheap_constraints or {})
        for k, f in self._cheap_objectives.items():
            if k < 0:
                raise ValueError(f"cheap objective index must be >= 0, got {k}")
            if not callable(f):
                raise TypeError(f"cheap objective {k} is not callable: {f!r}")
        for name, g in self._cheap_constraints.items():
            if not callable(g):
                raise TypeError(f"cheap constraint {name!r} is not callable: {g!r}")
        if cheap_budget is not None and int(cheap_budget) < 1:
            raise ValueError(f"cheap_budget must be >= 1 or None, got {cheap_budget}")
        self._cheap_budget = None if cheap_budget is None else int(cheap_budget)
        self._cheap_cache: Dict[Tuple, Tuple[np.ndarray, np.ndarray]] = {}  # kept across proposals with a budget
        self._design_cache: Dict[Tuple, np.ndarray] = {}

    # -- Optuna's sampler interface ---------------------------------------------------------------------------
    def reseed_rng(self) -> None:
        self._random.reseed_rng()

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> Dict[str, BaseDistribution]:
        if self._search_space is not None:
            return self._search_space
        space = self._intersection.calculate(study)
        return {k: v for k, v in space.items() if not v.single()}

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: Dict[str, BaseDistribution]) -> Dict[str, Any]:
        if not search_space or "fixed_params" in trial.system_attrs:  # an enqueued (e.g. retried) trial
            return {}
        if self._cheap_objectives and max(self._cheap_objectives) >= len(study.directions):
            raise ValueError(f"cheap objective index {max(self._cheap_objectives)} is out of range for a study "
                             f"with {len(study.directions)} objectives")
        d = len(search_space)
        n_initial = self._n_initial or d + 1
        if trial.number < n_initial:
            return from_unit(search_space, self._design(d, n_initial, search_space)[trial.number])
        rng = np.random.default_rng([self._seed, trial.number])
        x = self._infill_point(study, search_space, trial.number, rng)
        return from_unit(search_space, x)

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState,
                    values: Optional[Sequence[float]]) -> None:
        if self._constraints_func is not None:
            process_constraints_after_trial(self._constraints_func, study, trial, state)

    # -- the algorithm ----------------------------------------------------------------------------------------
    def _design(self, d: int, n: int, space: Optional[Dict[str, BaseDistribution]] = None) -> np.ndarray:
        """The initial design, (n, d) points in [0, 1]^d; the same for every worker with this seed.

        With cheap constraints (and `space`), every infeasible point is replaced, in order, by the feasible point
        of a scrambled Halton pool (max(256, 64 n) points) that lies farthest from the design's other points."""
        if self._initial_design == "lhs":
            design = qmc.LatinHypercube(d=d, seed=self._seed).random(n)
        else:
            design = qmc.Halton(d=d, scramble=True, seed=self._seed).random(n)
        if not self._cheap_constraints or space is None:
            return design
        key = (d, n, tuple(space.items()))
        if key in self._design_cache:
            return self._design_cache[key]
        cache = self._new_cache()
        bad = self._cheap_violation(space, design, cache) > 0
        if bad.any():
            pool = qmc.Halton(d=d, scramble=True, seed=self._seed + 1).random(max(256, 64 * n))
            fallback = None
            for i in np.flatnonzero(bad):
                others = np.delete(design, i, axis=0)
                gap = np.min(np.linalg.norm(pool[:, None, :] - others[None, :, :], axis=-1), axis=1)
                for j in np.argsort(-gap, kind="stable"):  # farthest first; evaluated lazily
                    if self._cheap_violation(space, pool[j][None], cache)[0] <= 0:
                        design[i] = pool[j]
                        break
                else:
                    if fallback is None:
                        warnings.warn("no configuration of the initial design's pool satisfies the cheap "
                                      "constraints; keeping the least violating ones", stacklevel=2)
                        fallback = list(np.argsort(self._cheap_violation(space, pool, cache), kind="stable"))
                    design[i] = pool[fallback.pop(0)]
        self._design_cache[key] = design
        return design

    # -- exact inexpensive objectives and constraints (IOC-SAMO-COBRA) ----------------------------------------
    def _cheap_values(self, space: Dict[str, BaseDistribution], P: np.ndarray,
                      cache: Dict[Tuple, Tuple[np.ndarray, np.ndarray]]) -> Tuple[np.ndarray, np.ndarray]:
        """Exact cheap objective values (q, k) and cheap constraint values (q, c) at (q, d) box points.

        Values are those of the configurations the points round to; `cache` reuses them for repeats."""
        objs = np.empty((len(P), len(self._cheap_objectives)))
        cons = np.empty((len(P), len(self._cheap_constraints)))
        for i, x in enumerate(P):
            params = from_unit(space, x)
            key = tuple(params.items())
            if key not in cache:
                cache[key] = (np.array([float(f(dict(params))) for f in self._cheap_objectives.values()]),
                              np.array([float(g(dict(params))) for g in self._cheap_constraints.values()]))
            objs[i], cons[i] = cache[key]
        return objs, cons

    def _new_cache(self) -> Dict[Tuple, Tuple[np.ndarray, np.ndarray]]:
        """Where exact cheap values are kept: for one proposal, or for the sampler's life under a budget."""
        return self._cheap_cache if self._cheap_budget is not None else {}

    def _cheap_estimate(self, space: Dict[str, BaseDistribution]):
        """P -> (objs, cons) as `_cheap_values`, without calling the cheap functions: exact where the
        configuration is in the cache, elsewhere RBF interpolation of the cached exact values (a screen only)."""
        cache = self._cheap_cache
        keys = list(cache)
        Xc = np.array([to_unit(space, dict(k)) for k in keys]).reshape(len(keys), len(space))
        k_obj = len(self._cheap_objectives)
        # (0, k) when nothing is cached yet: a sampler created for a resumed study starts with an empty cache
        Vc = np.array([np.concatenate(cache[k]) for k in keys]).reshape(len(keys), k_obj + len(self._cheap_constraints))
        ok = np.all(np.isfinite(Vc), axis=1)
        models = None
        if ok.sum() >= len(space) + 2:
            Xu, Vu = _dedupe(Xc[ok], Vc[ok])
            if len(Xu) >= len(space) + 2:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    models = [SpanRBF(Xu, Vu[:, j], "cubic") for j in range(Vu.shape[1])]
        fill = np.nanmedian(np.where(np.isfinite(Vc), Vc, np.nan), axis=0) if len(Vc) else np.zeros(Vc.shape[1])

        def estimate(P):
            V = np.tile(np.nan_to_num(fill), (len(P), 1))
            if models is not None:
                V = np.stack([model(P) for model in models], axis=1)
            for i, x in enumerate(P):
                key = tuple(from_unit(space, x).items())
                if key in cache:
                    V[i] = np.concatenate(cache[key])
            return V[:, :k_obj], V[:, k_obj:]

        return estimate

    def _cheap_violation(self, space, P, cache) -> np.ndarray:
        """Summed violation of the cheap constraints at (q, d) points, shape (q,): 0 where feasible, inf for NaN."""
        if not self._cheap_constraints:
            return np.zeros(len(P))
        _, cons = self._cheap_values(space, P, cache)
        return np.where(np.isnan(cons), np.inf, np.maximum(cons, 0.0)).sum(axis=1)

    def _history(self, study: Study, space: Dict[str, BaseDistribution]):
        """Evaluated points (X, minimisation-oriented Y, constraints C or None, the constraints' names) and every
        point already taken (evaluated, running, waiting or failed) as parameter dicts.

        Constraints are read from the trials (Optuna's `trial.set_constraint`, or `constraints_func`); a study
        is constrained when any completed trial has them."""
        signs = np.array([1.0 if d == StudyDirection.MINIMIZE else -1.0 for d in study.directions])
        X, Y, C, taken, names = [], [], [], [], []
        for t in study.get_trials(deepcopy=False):
            if not all(name in t.params for name in space):
                continue
            params = {name: t.params[name] for name in space}
            taken.append(params)
            if t.state != TrialState.COMPLETE or t.values is None or not np.all(np.isfinite(t.values)):
                continue
            X.append(to_unit(space, params))
            Y.append(signs * np.asarray(t.values, float))
            C.append([t.constraints[k] for k in sorted(t.constraints)])
            names = names or sorted(t.constraints)
        widths = {len(c) for c in C}
        if widths - {0} and len(widths) > 1:
            raise ValueError("completed trials report different numbers of constraints; "
                             "every trial of a constrained study must set all of them")
        C_arr = np.asarray(C, float) if C and len(C[0]) else None
        return np.asarray(X), np.asarray(Y), C_arr, names, taken

    def _infill_point(self, study: Study, space: Dict[str, BaseDistribution], number: int,
                      rng: np.random.Generator) -> np.ndarray:
        d = len(space)
        X, Y, C, cnames, taken = self._history(study, space)
        if len(X) == 0 or len(np.unique(np.round(X, 12), axis=0)) < d + 2:
            return self._fresh_random(space, taken, rng)  # too few evaluations for a linear-tailed RBF
        m = Y.shape[1]
        # Surrogates only for what is expensive: cheap objectives and trial constraints named like a cheap
        # constraint take their exact values instead (IOC-SAMO-COBRA).
        modelled_y = [j for j in range(m) if j not in self._cheap_objectives]
        modelled_c = [] if C is None else [j for j, n in enumerate(cnames) if n not in self._cheap_constraints]
        C_model = C[:, modelled_c] if C is not None and modelled_c else None
        outputs = Y[:, modelled_y] if C_model is None else np.hstack([Y[:, modelled_y], C_model])
        Xu, Ou = _dedupe(X, outputs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            models = [Surrogate(Xu, Ou[:, j], self._kernels) for j in range(Ou.shape[1])]
        n_y = len(modelled_y)

        cache = self._new_cache()  # exact cheap values

        def exact_cheap(P):
            return self._cheap_values(space, P, cache)
        feasible_model = np.ones(len(Y), bool) if C_model is None else np.all(C_model <= 0, axis=1)
        feasible = np.ones(len(Y), bool) if C is None else np.all(C <= 0, axis=1)
        if self._cheap_constraints:
            feasible &= self._cheap_violation(space, X, cache) <= 0
        ref = self._reference(Y, feasible)
        ideal = Y[feasible].min(axis=0) if feasible.any() else Y.min(axis=0)
        scale = np.where(ref - ideal > 0, ref - ideal, 1.0)
        front = (Y[feasible] - ideal) / scale
        front = front[np.all(front < 1.0, axis=1)]
        if len(front):
            front = front[pareto_front_mask(front)]
        hv_front = compute_hypervolume(front, np.ones(m)) if len(front) else 0.0
        epsilon = 0.0
        if self._infill == "sms" and len(front) > 1:
            epsilon = 1.0 / (len(front) * 10.0)

        margin = 0.0
        if C_model is not None:
            # COBRA's adaptive margin: predicted constraints must hold with a safety margin that doubles with
            # every infeasible proposal in a row (surrogates are least accurate right at the boundary).
            streak = 0
            for ok in feasible_model[::-1]:
                if ok:
                    break
                streak += 1
            margin = 0.005 * 2.0 ** min(streak, 6) * np.maximum(np.ptp(C_model, axis=0), 1e-12)
        cheap_idx = list(self._cheap_objectives)
        signs = np.array([1.0 if d == StudyDirection.MINIMIZE else -1.0 for d in study.directions])

        def score(P: np.ndarray, cheap: Callable = exact_cheap) -> np.ndarray:
            """Criterion for (q, d) snapped points: higher is better; infeasible predictions get -inf-like.
            `cheap`: P -> (cheap objective values, cheap constraint values), exact unless screening."""
            preds = np.stack([model(P) for model in models], axis=1) if models else np.empty((len(P), 0))
            if cheap_idx:
                values = np.empty((len(P), m))
                values[:, modelled_y] = preds[:, :n_y]
                exact = signs[cheap_idx] * cheap(P)[0]
                unusable = ~np.isfinite(exact).all(axis=1)
                values[:, cheap_idx] = np.where(np.isfinite(exact), exact, np.inf)
            else:
                values, unusable = preds[:, :m], None
            y = (values - ideal) / scale + epsilon
            beyond = np.max(y - 1.0, axis=1)
            if len(front) == 0:
                out = np.where(beyond >= 0, -beyond, np.prod(1.0 - y, axis=1))
            else:
                # Dominated (or beyond the reference) candidates score minus the additive epsilon that would
                # make them non-dominated, so the criterion still points towards the front.
                gap = np.max(np.min(y[:, None, :] - front[None, :, :], axis=2), axis=1)  # < 0: non-dominated
                out = np.where(beyond >= 0, -np.maximum(beyond, 0.0), -np.maximum(gap, 0.0)) - 1e-12
                for i in np.flatnonzero((gap < 0) & (beyond < 0)):
                    out[i] = compute_hypervolume(np.vstack([front, y[i]]), np.ones(m)) - hv_front
            if C_model is not None:
                violation = np.sum(np.maximum(preds[:, n_y:] + margin, 0.0), axis=1)
                out = np.where(violation > 0, -1e6 - violation, out)
            if self._cheap_constraints:
                cons = cheap(P)[1]
                violation = np.where(np.isnan(cons), np.inf, np.maximum(cons, 0.0)).sum(axis=1)
                out = np.where(violation > 0, -1e9 - np.minimum(violation, 1e9), out)
            if unusable is not None:
                out = np.where(unusable, -1e12, out)
            return out

        # The step in the distance cycle follows the trial number, so that workers proposing at the same moment
        # (before either proposal is stored) search at different scales.
        n_initial = self._n_initial or d + 1
        rho = self._distances[max(number - n_initial, 0) % len(self._distances)] if self._distances else 0.0
        taken_X = np.array([to_unit(space, p) for p in taken]) if taken else np.empty((0, d))

        def min_distance(P):
            if len(taken_X) == 0:
                return np.full(len(P), np.inf)
            return np.min(np.linalg.norm(P[:, None, :] - taken_X[None, :, :], axis=-1), axis=1)

        # Candidates: global random points, plus local perturbations of the current Pareto-optimal points.
        n_cand = self._n_candidates or max(2000, 200 * d)
        candidates = [rng.random((n_cand, d))]
        pareto_X = X[feasible][pareto_front_mask(Y[feasible])] if feasible.any() else X
        for sigma in (0.1, 0.02):
            reps = max(1, n_cand // (4 * max(len(pareto_X), 1)))
            local = np.repeat(pareto_X, reps, axis=0) + sigma * rng.standard_normal((len(pareto_X) * reps, d))
            candidates.append(np.clip(local, 0.0, 1.0))
        raw = np.vstack(candidates)
        snapped = snap_array(space, raw)
        far = min_distance(snapped) >= max(rho, 1e-9)  # never propose a configuration already taken
        if not far.any():
            return self._fresh_random(space, taken, rng)
        raw, snapped = raw[far], snapped[far]
        if self._cheap_budget is not None and (self._cheap_objectives or self._cheap_constraints):
            return self._budgeted_choice(space, snapped, score, exact_cheap, cache)
        if self._cheap_constraints:  # exact rejection, before any surrogate is asked
            violation = self._cheap_violation(space, snapped, cache)
            if not (violation <= 0).any():
                warnings.warn("no candidate satisfies the cheap constraints; proposing the least violating one",
                              stacklevel=2)
                return snapped[int(np.argmin(violation))]
            raw, snapped = raw[violation <= 0], snapped[violation <= 0]
        scores = score(snapped)
        order = np.argsort(-scores, kind="stable")

        # COBYLA refinement of the best few candidates (on the continuous relaxation, scored where they round).
        best_x, best_s = snapped[order[0]], scores[order[0]]
        for start in raw[order[:2]]:
            def neg(x):
                return -float(score(snap(space, x)[None])[0])

            cons = [{"type": "ineq", "fun": lambda x: min_distance(snap(space, x)[None])[0] - max(rho, 1e-9)}]
            res = minimize(neg, start, method="COBYLA", constraints=cons, bounds=[(0.0, 1.0)] * d,
                           options={"maxiter": 20 * d, "rhobeg": 0.05})
            x = snap(space, np.clip(res.x, 0.0, 1.0))
            if min_distance(x[None])[0] >= max(rho, 1e-9) and self._cheap_violation(space, x[None], cache)[0] <= 0:
                s = -neg(x)
                if s > best_s:
                    best_x, best_s = x, s
        return best_x

    def _budgeted_choice(self, space, snapped: np.ndarray, score: Callable, exact_cheap: Callable,
                         cache) -> np.ndarray:
        """Choice among (q, d) candidates when the cheap functions may be called at most `cheap_budget` times
        per proposal: a screen ranks all candidates with the cached exact values (interpolated between them),
        the best `cheap_budget` unknown ones get exact values, and the best exactly scored candidate wins
        (no COBYLA step, which would call the functions at arbitrary points). Up to three rounds if every
        exactly known candidate violates a cheap constraint; then the least violating, with a warning."""
        screen = score(snapped, self._cheap_estimate(space))
        keys = [tuple(from_unit(space, x).items()) for x in snapped]
        order = np.argsort(-screen, kind="stable")
        pending = [i for i in order if keys[i] not in cache]
        for _ in range(3):
            batch, pending = pending[: self._cheap_budget], pending[self._cheap_budget:]
            exact_cheap(snapped[batch])  # the only calls of this proposal
            known = np.array([k in cache for k in keys])
            scores = score(snapped[known])
            if (self._cheap_violation(space, snapped[known], cache) <= 0).any() or not pending:
                break
        violation = self._cheap_violation(space, snapped[known], cache)
        if not (violation <= 0).any():
            warnings.warn("no candidate satisfies the cheap constraints; proposing the least violating one",
                          stacklevel=2)
            return snapped[known][int(np.argmin(violation))]
        return snapped[known][int(np.argmax(scores))]

    def _reference(self, Y: np.ndarray, feasible: np.ndarray) -> np.ndarray:
        if self._reference_point is not None:
            if len(self._reference_point) != Y.shape[1]:
                raise ValueError(f"reference_point has {len(self._reference_point)} values for "
                                 f"{Y.shape[1]} objectives")
            return self._reference_point
        pool = Y[feasible] if feasible.any() else Y
        lo, hi = pool.min(axis=0), pool.max(axis=0)
        return hi + 0.1 * np.where(hi > lo, hi - lo, np.abs(hi) + 1.0)

    def _fresh_random(self, space, taken: List[Dict[str, Any]], rng: np.random.Generator) -> np.ndarray:
        """A random box point whose rounded configuration was not taken yet and satisfies the cheap constraints
        (best effort: 100 draws; then the least violating draw, with a warning)."""
        x = rng.random(len(space))
        if not self._cheap_constraints:
            for _ in range(100):
                if from_unit(space, x) not in taken:
                    break
                x = rng.random(len(space))
            return x
        cache = self._new_cache()
        best, best_violation = x, np.inf
        for _ in range(100):
            violation = self._cheap_violation(space, x[None], cache)[0]
            if from_unit(space, x) not in taken:
                if violation <= 0:
                    return x
                if violation < best_violation:
                    best, best_violation = x, violation
            x = rng.random(len(space))
        warnings.warn("no random configuration satisfies the cheap constraints; proposing the least violating one",
                      stacklevel=2)
        return best

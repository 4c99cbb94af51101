"""The seed paper's claims as testable comparisons, their numbers from the committed results, and a verdict.

Claims (Laskaris et al., arXiv:2602.16908, as far as public; DESIGN.md):

1. both variants beat Allegro on force MAE (energy MAE on QM9, which has no forces): ``allegro-mlp - allegro``
   on every dataset, ``allegro-qdi - allegro`` on Cu–Li, where the hybrid was searched;
2. the MLP variant is more accurate but slower on rMD17, the reverse on QM9. Read here as MLP against the hybrid
   (the two variants the paper contrasts): ``allegro-mlp - allegro-qdi`` in error and their inference-time ratio;
3. the hybrid is best on Cu–Li, about 13 % below the MLP variant: ``allegro-qdi / allegro-mlp - 1``;
4. hyperparameter transfer: the Cu–Li hybrid configuration, unchanged, against the dataset's own searched
   Allegro on QM9, aspirin and benzene: ``allegro-qdi (transferred) - allegro``.

Verdict of an error claim ``A < B``: *supported* when the whole 95 % interval of ``A - B`` is below 0, *not
supported* when it is wholly above 0, else *inconclusive at this scale*; mirrored for ``A > B``. A speed claim
uses the ratio of median inference times against 1, with the interval of the per-round ratios of the families
timed together (`qallegro.study.speed`), or, before that measurement, of each run's repeated timings
(`qallegro.study.statistics.timing_ratio`). A claim without its runs is *not run*.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Sequence

from qallegro.study.plan import BootstrapPlan
from qallegro.study.speed import speed_ratio
from qallegro.study.statistics import bootstrap_difference, timing_ratio

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE, NOT_RUN = ("supported", "not supported", "inconclusive at this scale",
                                                    "not run")
RMD17 = ("rmd17-aspirin", "rmd17-benzene")
QM9, CULI = "qm9", "culi"
LABELS = {"forces_mae": ("force MAE", "meV/Å"), "energy_mae": ("energy MAE", "meV")}


@dataclasses.dataclass(frozen=True)
class Claim:
    """One comparison: family `a` against `b` on `dataset`.

    Attributes:
        number: the claim's number in the table (claims with several datasets share it).
        text: the claim in words.
        paper: what the paper states.
        dataset: the dataset.
        kind: "error" (``a - b``), "relative" (``a / b - 1``) or "speed" (inference-time ratio ``a / b``).
        a, b: the families.
        lower: the claim is ``a < b`` (error, relative) or ``a`` faster than ``b`` (speed); False: the reverse.
    """

    number: int
    text: str
    paper: str
    dataset: str
    kind: str
    a: str
    b: str
    lower: bool = True


def paper_claims(datasets: Sequence[str]) -> List[Claim]:
    """The claims that concern the given datasets, in table order."""
    claims = []
    for d in datasets:
        claims.append(Claim(1, "allegro-mlp beats allegro", "both variants beat Allegro on force MAE", d, "error",
                            "allegro-mlp", "allegro"))
    if CULI in datasets:
        claims.append(Claim(1, "allegro-qdi beats allegro", "both variants beat Allegro on force MAE", CULI, "error",
                            "allegro-qdi", "allegro"))
    for d in (x for x in RMD17 if x in datasets):
        claims.append(Claim(2, "allegro-mlp more accurate than allegro-qdi", "MLP variant more accurate on rMD17",
                            d, "error", "allegro-mlp", "allegro-qdi"))
        claims.append(Claim(2, "allegro-mlp slower than allegro-qdi", "... but slower on rMD17", d, "speed",
                            "allegro-mlp", "allegro-qdi", lower=False))
    if QM9 in datasets:
        claims.append(Claim(2, "allegro-mlp less accurate than allegro-qdi", "the reverse on QM9: MLP less accurate",
                            QM9, "error", "allegro-mlp", "allegro-qdi", lower=False))
        claims.append(Claim(2, "allegro-mlp faster than allegro-qdi", "... and faster on QM9", QM9, "speed",
                            "allegro-mlp", "allegro-qdi"))
    if CULI in datasets:
        claims.append(Claim(3, "allegro-qdi below allegro-mlp", "hybrid best on Cu–Li, about 13 % below MLP", CULI,
                            "relative", "allegro-qdi", "allegro-mlp"))
    for d in (x for x in (QM9,) + RMD17 if x in datasets):
        claims.append(Claim(4, "Cu–Li allegro-qdi configuration, transferred, beats allegro",
                            "QDI hyperparameters optimised on Cu–Li transfer unchanged", d, "error", "allegro-qdi",
                            "allegro"))
    return claims


def verdict(low: float, high: float, lower: bool, pivot: float = 0.0) -> str:
    """The verdict of a claim from its interval [low, high] around `pivot` (0 for differences, 1 for ratios)."""
    if lower:
        return SUPPORTED if high < pivot else NOT_SUPPORTED if low > pivot else INCONCLUSIVE
    return SUPPORTED if low > pivot else NOT_SUPPORTED if high < pivot else INCONCLUSIVE


def evaluate_claim(claim: Claim, runs_a: Sequence[Dict[str, Any]], runs_b: Sequence[Dict[str, Any]], metric: str,
                   bootstrap: BootstrapPlan = BootstrapPlan(), speed: Optional[Dict[str, Any]] = None
                   ) -> Dict[str, Any]:
    """A claim's row: {"claim", "number", "estimate", "low", "high", "ours" (formatted), "verdict", "unconverged"
    (runs of either family that did not meet the convergence criterion), "seeds"}.

    A speed claim uses `speed` (the families timed together, `qallegro.study.speed`) when it has both families,
    else the runs' own timings (`qallegro.study.statistics.timing_ratio`)."""
    row = {"claim": claim, "number": claim.number, "estimate": None, "low": None, "high": None, "ours": NOT_RUN,
           "verdict": NOT_RUN, "unconverged": 0, "seeds": []}
    if not runs_a or not runs_b:
        return row
    row["unconverged"] = sum(not r.get("convergence", {}).get("met", False) for r in list(runs_a) + list(runs_b))
    name, unit = LABELS[metric]
    if claim.kind == "speed":
        together = speed is not None and {claim.a, claim.b} <= set(speed.get("ms_per_structure", {}))
        t = speed_ratio(speed, claim.a, claim.b) if together else timing_ratio(runs_a[0], runs_b[0])
        row.update(estimate=t["estimate"], low=t["low"], high=t["high"],
                   ours=f"time ×{t['estimate']:.2f} [{t['low']:.2f}, {t['high']:.2f}]",
                   verdict=verdict(t["low"], t["high"], claim.lower, pivot=1.0))
        return row
    d = bootstrap_difference(runs_a, runs_b, metric, bootstrap, relative=claim.kind == "relative")
    row.update(estimate=d["estimate"], low=d["low"], high=d["high"], seeds=d["seeds"],
               verdict=verdict(d["low"], d["high"], claim.lower))
    seeds = f", {len(d['seeds'])} seed{'s' if len(d['seeds']) > 1 else ''}"
    if claim.kind == "relative":
        row["ours"] = f"{name} {100 * d['estimate']:+.1f} % [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]{seeds}"
    else:
        row["ours"] = f"{name} {d['estimate']:+.2f} {unit} [{d['low']:+.2f}, {d['high']:+.2f}]{seeds}"
    return row


def claim_rows(datasets: Dict[str, str], runs_of, bootstrap: BootstrapPlan = BootstrapPlan(),
               speed_of=None) -> List[Dict]:
    """Every claim's row.

    Args:
        datasets: dataset -> its error metric ("forces_mae" or "energy_mae"), in plan order.
        runs_of: (dataset, family) -> the final runs (`qallegro.study.results.family_runs`).
        bootstrap: resamples, seed, confidence.
        speed_of: dataset -> its joint speed measurement or None (`qallegro.study.speed.load_speed`).
    """
    return [evaluate_claim(c, runs_of(c.dataset, c.a), runs_of(c.dataset, c.b), datasets[c.dataset], bootstrap,
                           speed_of(c.dataset) if speed_of else None)
            for c in paper_claims(list(datasets))]


def claims_markdown(rows: Sequence[Dict[str, Any]], confidence: Optional[float] = 0.95) -> str:
    """The claims table (markdown): number, claim, dataset, the paper's statement, our number with its interval,
    the verdict (with the count of unconverged runs behind it)."""
    pct = f"{100 * (confidence or 0.95):g} %"
    lines = [f"| # | claim | dataset | paper | ours ({pct} CI) | verdict |", "|---|---|---|---|---|---|"]
    for row in rows:
        c = row["claim"]
        n = row["unconverged"]
        flag = f" ({n} run{'s' if n > 1 else ''} unconverged)" if n else ""
        lines.append(f"| {c.number} | {c.text} | {c.dataset} | {c.paper} | {row['ours']} | {row['verdict']}{flag} |")
    return "\n".join(lines) + "\n"

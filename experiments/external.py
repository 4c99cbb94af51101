"""Evaluate a trained potential on external labelled frames (e.g. real DFT data it was not trained on):

    python -m experiments.external --run runs/culi-allegro-cpu-seed0 --data NAME=PATH [NAME=PATH ...]

The computation is `qallegro.train.evaluation.evaluate_external`, which training also runs for the
`dataset.external` entries of a config (the Cu–Li set lists the real VASP PBE frames of ../shared/data).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.external", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a finished run directory (its potential.qallegro)")
    parser.add_argument("--data", nargs="+", required=True, metavar="NAME=PATH", help="external extxyz files")
    parser.add_argument("--out", default=None, help="JSON file of the results (default: RUN/external.json)")
    args = parser.parse_args(argv)
    from qallegro.potential import load
    from qallegro.train.config import TrainConfig
    from qallegro.train.evaluation import evaluate_external
    from qallegro.train.step import make_steps

    potential = load(os.path.join(args.run, "potential.qallegro"))
    # the loss weights and batch size it was trained with (options of older qallegro versions are ignored)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    tcfg = TrainConfig.from_dict({k: v for k, v in potential.metadata.get("training", {}).items() if k in known})
    eval_step = make_steps(potential.model, tcfg, compute_stress=True).eval_step
    sets = dict(item.split("=", 1) for item in args.data)
    results = evaluate_external(sets, eval_step, potential.params, potential.r_max, potential.species, tcfg)
    with open(args.out or os.path.join(args.run, "external.json"), "w") as f:
        json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

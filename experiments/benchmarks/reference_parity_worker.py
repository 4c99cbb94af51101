"""Runs in the peer's environment (.venv-peer: torch, nequip, nequip-allegro 0.8), never imported by qallegro.

Builds nequip-allegro's `AllegroModel` in float64 from the hyperparameters of a JSON spec, evaluates energies and
forces of the spec's structures, and writes its trainable weights, the tensor-product path labels and the outputs
to an .npz file (see reference_parity.py). Usage: python reference_parity_worker.py SPEC.json OUT.npz
"""

from __future__ import annotations

import json
import sys


def main(spec_path: str, out_path: str) -> int:
    import numpy as np
    import torch
    from allegro.model import AllegroModel
    from ase import Atoms
    from nequip.data import AtomicDataDict, from_ase
    from nequip.data.transforms import NeighborListTransform
    from nequip.utils.global_state import set_global_state

    set_global_state()
    spec = json.load(open(spec_path))
    type_names = spec["type_names"]
    model = AllegroModel(seed=spec["seed"], model_dtype="float64", type_names=type_names, **spec["hparams"])
    model.eval()
    out = {}
    for key, value in model.state_dict().items():
        if key.endswith((".weight", ".weights")):
            out["param/" + key] = value.detach().numpy()
    for k, tp in enumerate(model.model.func.allegro.tps):
        # Contracter's instruction order: for each output irrep, each irrep of input 1, each of input 2.
        labels = [f"{ir1},{ir2},{iro}" for _, iro in tp.irreps_out for _, ir1 in tp.irreps_in1
                  for _, ir2 in tp.irreps_in2 if iro in ir1 * ir2]
        out[f"paths/{k}"] = np.array(labels)
    transform = NeighborListTransform(r_max=spec["hparams"]["r_max"])
    for n, s in enumerate(spec["structures"]):
        atoms = Atoms(symbols=[type_names[t] for t in s["types"]], positions=s["positions"])
        data = transform(from_ase(atoms))
        data[AtomicDataDict.ATOM_TYPE_KEY] = torch.tensor(s["types"], dtype=torch.long)
        result = model(data)
        out[f"energy/{n}"] = result[AtomicDataDict.TOTAL_ENERGY_KEY].detach().numpy().reshape(())
        out[f"forces/{n}"] = result[AtomicDataDict.FORCE_KEY].detach().numpy()
    np.savez(out_path, **out)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))

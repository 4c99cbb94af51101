"""Runs in the peer's environment (.venv-peer: torch, nequip, nequip-allegro 0.8), never imported by qallegro.

Trains nequip-allegro's `AllegroModel` (the spec's model_dtype, default float64) on the spec's batches exactly as
`nequip-train` does inside its Lightning module: the model in training mode, nequip's `EnergyForceLoss`
(coefficients normalised to sum to 1), the gradient norm clipped with `torch.nn.utils.clip_grad_norm_`
(Lightning's gradient_clip_algorithm "norm"), `torch.optim.Adam`, then nequip's `EMAWeights` update. Writes the
initial weights (with the tensor-product path labels, as reference_parity_worker.py), the loss and pre-clip
gradient norm of every step, and the final weights and EMA weights to an .npz file (see optimizer_parity.py).

Usage: python optimizer_parity_worker.py SPEC.json OUT.npz
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
    from nequip.train import EnergyForceLoss
    from nequip.train.ema import EMAWeights
    from nequip.utils.global_state import set_global_state

    set_global_state()
    torch.set_num_threads(int(__import__("os").environ.get("PEER_THREADS", "1")))
    spec = json.load(open(spec_path))
    type_names = spec["type_names"]
    model = AllegroModel(seed=spec["seed"], model_dtype=spec.get("model_dtype", "float64"), type_names=type_names,
                         **spec["hparams"])
    model.train()
    out = {}

    def weights(prefix, tensors):
        for key, value in tensors:
            if key.endswith((".weight", ".weights")):
                out[prefix + key] = value.detach().numpy().copy()

    weights("param/", model.state_dict().items())
    for k, tp in enumerate(model.model.func.allegro.tps):
        labels = [f"{ir1},{ir2},{iro}" for _, iro in tp.irreps_out for _, ir1 in tp.irreps_in1
                  for _, ir2 in tp.irreps_in2 if iro in ir1 * ir2]
        out[f"paths/{k}"] = np.array(labels)

    tr = spec["training"]
    scale = float(tr["energy_weight"] + tr["forces_weight"])
    loss_fn = EnergyForceLoss(coeffs={"total_energy": tr["energy_weight"], "forces": tr["forces_weight"]},
                              per_atom_energy=True, type_names=type_names)
    optimizer = torch.optim.Adam(model.parameters(), lr=tr["learning_rate"], eps=1e-8 / scale)
    ema = EMAWeights(model, decay=tr["ema_decay"])
    ema.update_parameters(model)  # the initial copy, as EMALightningModule.__init__
    transform = NeighborListTransform(r_max=spec["hparams"]["r_max"])

    def frame(f):
        atoms = Atoms(symbols=[type_names[t] for t in f["types"]], positions=f["positions"])
        data = transform(from_ase(atoms))
        data[AtomicDataDict.ATOM_TYPE_KEY] = torch.tensor(f["types"], dtype=torch.long)
        data[AtomicDataDict.TOTAL_ENERGY_KEY] = torch.tensor([[f["energy"]]], dtype=torch.float64)
        data[AtomicDataDict.FORCE_KEY] = torch.tensor(f["forces"], dtype=torch.float64)
        return data

    losses, grad_norms = [], []
    for batch_frames in spec["batches"]:
        batch = AtomicDataDict.batched_from_list([frame(f) for f in batch_frames])
        optimizer.zero_grad()
        prediction = model(batch.copy())
        loss = loss_fn(prediction, batch)["weighted_sum"]
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tr["clip_norm"] / scale)
        optimizer.step()
        ema.update_parameters(model)
        losses.append(float(loss.detach()) * scale)  # in qallegro's loss units
        grad_norms.append(float(norm) * scale)
    out["loss"] = np.array(losses)
    out["grad_norm"] = np.array(grad_norms)
    weights("final/", model.state_dict().items())
    names = [k for k, _ in model.named_parameters()]
    weights("ema/", zip(names, ema.ema_weights))
    np.savez(out_path, **out)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
